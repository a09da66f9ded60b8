import { ConfigError, resolveConfig } from "../config.js";
import { Sidecar, type SidecarConfig } from "../sidecar.js";
import { CommandError, EXIT_FAILURE, EXIT_USAGE } from "./arguments.js";
import { note } from "./output.js";

/** The options of `weft sidecar`, as commander parses them. */
export interface SidecarOptions {
  config?: string;
  dataDir?: string;
  listen?: string;
  fsync?: boolean;
  maxEventBytes?: string;
  nodeId?: string;
  peerListen?: string;
  http?: string;
  peers?: string;
  peersDns?: string;
  peersDnsInterval?: string;
  peerTimeout?: string;
  peerWindow?: string;
}

/**
 * `weft sidecar`: resolves the configuration, starts the sidecar, prints one line with the
 * bound address, and runs until SIGINT or SIGTERM, then stops gracefully. A second signal
 * exits at once.
 * @returns the exit status: 0 after a graceful stop.
 * @throws CommandError when the configuration is unusable or the sidecar cannot start.
 */
export async function sidecarCommand(o: SidecarOptions): Promise<number> {
  let config: SidecarConfig;
  try {
    config = await resolveConfig({
      file: o.config,
      env: process.env,
      flags: {
        dataDir: o.dataDir,
        listen: o.listen,
        fsync: o.fsync,
        maxEventBytes: o.maxEventBytes,
        nodeId: o.nodeId,
        peerListen: o.peerListen,
        http: o.http,
        peers: o.peers,
        peersDns: o.peersDns,
        peersDnsInterval: o.peersDnsInterval,
        peerTimeout: o.peerTimeout,
        peerWindow: o.peerWindow,
      },
      warn: (message) => note(`weft sidecar: warning: ${message}`),
    });
  } catch (e) {
    if (!(e instanceof ConfigError)) throw e;
    // A bad flag is a usage error; a bad file or environment is a failed start.
    throw new CommandError(`invalid configuration: ${e.message}`, e.source.kind === "flag" ? EXIT_USAGE : EXIT_FAILURE);
  }

  let sidecar: Sidecar;
  try {
    sidecar = await Sidecar.start(config);
  } catch (e) {
    throw new CommandError(`cannot start the sidecar: ${startProblem(e, config)}`);
  }
  const http = sidecar.httpAddress ? `http://${sidecar.httpAddress}` : "off";
  note(`weft sidecar listening on ${sidecar.address} (node ${config.nodeId}, peers on ${sidecar.peerAddress}, http ${http}, data ${config.dataDir})`);

  const signal = await new Promise<NodeJS.Signals>((resolve) => {
    const once = (s: NodeJS.Signals): void => {
      process.off("SIGINT", once);
      process.off("SIGTERM", once);
      resolve(s);
    };
    process.on("SIGINT", once);
    process.on("SIGTERM", once);
  });
  note(`weft sidecar: ${signal}, stopping (again to exit at once)`);
  const force = (s: NodeJS.Signals): void => {
    note(`weft sidecar: ${s} again, exiting without finishing the stop`);
    process.exit(EXIT_FAILURE);
  };
  process.on("SIGINT", force);
  process.on("SIGTERM", force);
  try {
    await sidecar.stop();
  } catch (e) {
    throw new CommandError(`the sidecar did not stop cleanly: ${(e as Error).message}`);
  }
  note("weft sidecar stopped");
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
