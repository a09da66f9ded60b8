import { type Logger, createLogger } from "../../src/ops/logger.js";
import { ConfigError, type ConfigFlags, resolveConfig } from "../settings/index.js";
import { Sidecar, type SidecarConfig } from "../sidecar.js";
import { CommandError, EXIT_FAILURE, EXIT_USAGE } from "./arguments.js";
import { note } from "./output.js";

/**
 * The options of `weft sidecar` and `weft run`, as commander parses them: the config file,
 * and a value for each setting's flag (settings/flags.ts).
 */
export type SidecarOptions = ConfigFlags & { config?: string };

/** A sidecar started from command line options, with the logger it logs to. */
export interface StartedSidecar {
  sidecar: Sidecar;
  config: SidecarConfig;
  /** The sidecar's logger, with its node id. */
  logger: Logger;
}

/**
 * Resolves the configuration from the options (with the config file and the environment),
 * and starts a sidecar. Resolves once it is ready: the log is open and every listener is
 * bound. `command` names the command in messages ("weft sidecar", "weft run").
 * @throws CommandError when the configuration is unusable (exit 2 for a bad flag, 1
 *   otherwise) or the sidecar cannot start (exit 1).
 */
export async function startFromOptions(o: SidecarOptions, command: string): Promise<StartedSidecar> {
  let config: SidecarConfig;
  const { config: file, ...flags } = o;
  // Told once the log's level and format are known.
  const warnings: string[] = [];
  try {
    config = await resolveConfig({
      file,
      env: process.env,
      flags,
      warn: (message) => warnings.push(`${command}: warning: ${message}`),
    });
  } catch (e) {
    for (const w of warnings) note(w);
    if (!(e instanceof ConfigError)) throw e;
    // A bad flag is a usage error; a bad file or environment is a failed start.
    throw new CommandError(`invalid configuration: ${e.message}`, e.source.kind === "flag" ? EXIT_USAGE : EXIT_FAILURE);
  }

  const base = createLogger({ level: config.logLevel, format: config.logFormat });
  const logger = base.child({ node: config.nodeId });
  for (const w of warnings) logger.warn({}, w);

  try {
    return { sidecar: await Sidecar.start(config, { logger: base }), config, logger };
  } catch (e) {
    throw new CommandError(`cannot start the sidecar: ${startProblem(e, config)}`);
  }
}

/**
 * `weft sidecar`: resolves the configuration, starts the sidecar, logs one record with the
 * bound address, and runs until SIGINT or SIGTERM, then stops gracefully. A second signal
 * exits at once. From the start on, what it says goes to the log (docs/observability.md);
 * a configuration it cannot use or a start that fails is a plain `error:` line.
 * @returns the exit status: 0 after a graceful stop.
 * @throws CommandError when the configuration is unusable or the sidecar cannot start.
 */
export async function sidecarCommand(o: SidecarOptions): Promise<number> {
  const { sidecar, config, logger } = await startFromOptions(o, "weft sidecar");
  // Listening for signals before saying so: whoever waits for the line may signal at once.
  const signalled = new Promise<NodeJS.Signals>((resolve) => {
    const once = (s: NodeJS.Signals): void => {
      process.off("SIGINT", once);
      process.off("SIGTERM", once);
      resolve(s);
    };
    process.on("SIGINT", once);
    process.on("SIGTERM", once);
  });
  // SIGHUP reads the TLS files again (a change on disk does too); without TLS it does nothing.
  const onHangup = (): void => void sidecar.reloadTls("SIGHUP");
  process.on("SIGHUP", onHangup);
  const http = sidecar.httpAddress ? `${config.tls ? "https" : "http"}://${sidecar.httpAddress}` : "off";
  logger.info(
    { address: sidecar.address, peerAddress: sidecar.peerAddress, http: sidecar.httpAddress, dataDir: config.dataDir },
    `weft sidecar listening on ${sidecar.address} (node ${config.nodeId}, peers on ${sidecar.peerAddress}, http ${http}, data ${config.dataDir})`,
  );

  const signal = await signalled;
  process.off("SIGHUP", onHangup);
  logger.info({ signal }, `weft sidecar: ${signal}, stopping (again to exit at once)`);
  const force = (s: NodeJS.Signals): void => {
    logger.warn({ signal: s }, `weft sidecar: ${s} again, exiting without finishing the stop`);
    process.exit(EXIT_FAILURE);
  };
  process.on("SIGINT", force);
  process.on("SIGTERM", force);
  try {
    await sidecar.stop();
  } catch (err) {
    logger.error({ err }, `the sidecar did not stop cleanly: ${(err as Error).message}`);
    return EXIT_FAILURE;
  }
  logger.info({}, "weft sidecar stopped");
  return 0;
}

/** Says in one line why `Sidecar.start` failed, in the operator's terms. */
function startProblem(e: unknown, config: SidecarConfig): string {
  const error = e as NodeJS.ErrnoException & { cause?: NodeJS.ErrnoException };
  const message = error?.message ?? String(e);
  const cause = error?.cause;
  if (cause?.code === "LEVEL_LOCKED") {
    return `the data directory ${config.dataDir} is locked by another process (is another weft sidecar using it?)`;
  }
  if (error?.syscall === "mkdir" || error?.code === "LEVEL_DATABASE_NOT_OPEN") {
    const why = cause?.message ?? message;
    return `cannot use the data directory ${config.dataDir}: ${why}`;
  }
  const listener = (e as { listener?: string })?.listener;
  const where =
    listener === "peer" ? `${config.peerListen} (the peer listener, --peer-listen)` : listener === "http" ? `${config.http} (the HTTP listener, --http)` : config.listen;
  const listen = `cannot listen on ${where}`;
  if (message.includes("EADDRINUSE")) return `${listen}: the address is already in use (by another sidecar or program)`;
  if (message.includes("EADDRNOTAVAIL")) return `${listen}: the address is not one of this machine's`;
  if (message.includes("EACCES")) return `${listen}: permission denied (a privileged port, or a socket directory that is missing or not writable)`;
  if (message.includes("Name resolution failed") || message.includes("ENOTFOUND")) return `${listen}: the host name does not resolve`;
  if (message.includes("No address added")) return `${listen}: ${message}`;
  return message;
}
