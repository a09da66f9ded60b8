import { spawn } from "node:child_process";
import { accessSync, constants as fsConstants, statSync } from "node:fs";
import { constants } from "node:os";
import { delimiter, join } from "node:path";
import { CommandError, EXIT_FAILURE } from "./arguments.js";
import { note } from "./output.js";
import { type SidecarOptions, type StartedSidecar, startFromOptions } from "./run-sidecar.js";

/** Exit status when the command cannot be found (as shells say it). */
export const EXIT_NOT_FOUND = 127;
/** Exit status when the command is found but cannot be run (as shells say it). */
export const EXIT_NOT_EXECUTABLE = 126;

/**
 * Signals passed on to the command. SIGINT and SIGTERM also mean "stop" when they come
 * before the command started. Job control (SIGTSTP, SIGCONT) is not passed on.
 */
const FORWARDED: readonly NodeJS.Signals[] = ["SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGWINCH"];

/** How long the command has to exit after SIGTERM when its sidecar died, ms; then SIGKILL. */
const SIDECAR_DEATH_GRACE_MS = 10_000;

/**
 * `weft run [sidecar flags] -- COMMAND [ARGS...]`: a sidecar for the lifetime of one
 * service process.
 *
 * - The sidecar starts in this process, from the same flags, config file and environment as
 *   `weft sidecar`, and is ready (log open, listeners bound) before the command starts. If
 *   it cannot start, the command is not started.
 * - The command gets the sidecar's service address in WEFT_ADDRESS ("host:port", or
 *   "unix:/path" for a socket; a wildcard listen address becomes loopback), and this
 *   process's stdin, stdout and stderr.
 * - It runs in its own session and process group, so each signal reaches it once: the ones
 *   in FORWARDED are passed on by this process to the whole group, so that what the command
 *   started hears them too (SIGHUP also reloads the sidecar's TLS files). Those signals never
 *   end this process by their default action, before or after the command runs either.
 * - When it exits, the sidecar stops gracefully, and the exit status is the command's
 *   (128 + the signal's number when a signal ended it).
 * - If the sidecar dies (this process hits an error it cannot handle) while the command
 *   runs, that is said on stderr, the command gets SIGTERM (SIGKILL after
 *   SIDECAR_DEATH_GRACE_MS) and the exit status is 1: a service without its sidecar cannot
 *   publish nor receive, and what the sidecar acked is in its log on disk.
 *
 * @returns the exit status.
 * @throws CommandError when the sidecar cannot start (1, 2 for a bad flag), or the command
 *   cannot be found (127) or run (126).
 */
export async function runCommand(argv: string[], o: SidecarOptions): Promise<number> {
  // Outside the command's run, the forwarded signals other than SIGINT and SIGTERM (which
  // stop) are ignored rather than left to their defaults, which end this process (SIGHUP)
  // or open an inspector (SIGUSR1).
  const ignore = (): void => {};
  const quiet = FORWARDED.filter((s) => s !== "SIGINT" && s !== "SIGTERM");
  for (const s of quiet) process.on(s, ignore);
  try {
    return await runWithSidecar(argv, o);
  } finally {
    for (const s of quiet) process.off(s, ignore);
  }
}

async function runWithSidecar(argv: string[], o: SidecarOptions): Promise<number> {
  const [file, ...args] = argv;
  if (file === undefined) throw new Error("runCommand needs a command"); // the caller checks

  // Checked before anything starts: a command that cannot run changes nothing.
  const problem = commandProblem(file);
  if (problem) throw problem;

  // Stop requests that come while the sidecar starts: the command is then not started.
  let stopBefore: NodeJS.Signals | undefined;
  const early = (s: NodeJS.Signals): void => void (stopBefore ??= s);
  process.on("SIGINT", early);
  process.on("SIGTERM", early);
  let started: StartedSidecar;
  try {
    started = await startFromOptions(o, "weft run");
  } finally {
    process.off("SIGINT", early);
    process.off("SIGTERM", early);
  }
  const { sidecar, logger } = started;
  const address = clientAddress(sidecar.address);
  logger.info({ address: sidecar.address, peerAddress: sidecar.peerAddress, http: sidecar.httpAddress }, `weft run: sidecar listening on ${sidecar.address}; starting ${file} with WEFT_ADDRESS=${address}`);

  const stopSidecar = async (): Promise<boolean> => {
    try {
      await sidecar.stop();
      logger.info({}, "weft run: sidecar stopped");
      return true;
    } catch (err) {
      logger.error({ err }, `weft run: the sidecar did not stop cleanly: ${(err as Error).message}`);
      return false;
    }
  };

  if (stopBefore) {
    logger.info({ signal: stopBefore }, `weft run: ${stopBefore} before ${file} started; not starting it`);
    await stopSidecar();
    return 128 + constants.signals[stopBefore];
  }

  const child = spawn(file, args, { stdio: "inherit", env: { ...process.env, WEFT_ADDRESS: address }, detached: true });
  /** Sends `s` to the command's process group while the command runs. */
  const signal = (s: NodeJS.Signals): void => {
    if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
    try {
      process.kill(-child.pid, s);
    } catch {
      // The group is gone: the command exited and its exit is on its way.
    }
  };
  const forward = (s: NodeJS.Signals): void => {
    if (s === "SIGHUP") void sidecar.reloadTls("SIGHUP");
    signal(s);
  };
  for (const s of FORWARDED) process.on(s, forward);

  // The sidecar runs in this process: an error nothing handles means it cannot be trusted
  // to go on. The command is told to stop; nothing acked is lost (it is in the log on disk).
  let sidecarDied = false;
  const died = (err: unknown): void => {
    if (sidecarDied) return;
    sidecarDied = true;
    note(`weft run: error: the sidecar died while ${file} was running: ${(err as Error)?.stack ?? String(err)}`);
    note(`weft run: stopping ${file} (SIGTERM): it cannot publish or receive without its sidecar`);
    signal("SIGTERM");
    setTimeout(() => signal("SIGKILL"), SIDECAR_DEATH_GRACE_MS).unref();
  };
  process.on("uncaughtException", died);
  process.on("unhandledRejection", died);

  let outcome: { code: number | null; signal: NodeJS.Signals | null } | { error: NodeJS.ErrnoException };
  try {
    outcome = await new Promise((resolve) => {
      // After a spawn that worked, an error is about a signal that could not be sent.
      child.on("error", (error: NodeJS.ErrnoException) => child.pid === undefined && resolve({ error }));
      child.once("exit", (code, signal) => resolve({ code, signal }));
    });
  } finally {
    for (const s of FORWARDED) process.off(s, forward);
  }

  if (!("error" in outcome)) {
    const { code, signal } = outcome;
    logger.info({ code, signal }, `weft run: ${file} exited with ${signal ? `${signal}` : `status ${code}`}; stopping the sidecar`);
  }
  // Stopping: a second SIGINT or SIGTERM exits at once, as `weft sidecar` does.
  const force = (s: NodeJS.Signals): void => {
    logger.warn({ signal: s }, `weft run: ${s} while the sidecar stops, exiting without finishing the stop`);
    process.exit(EXIT_FAILURE);
  };
  process.on("SIGINT", force);
  process.on("SIGTERM", force);
  const stopped = await stopSidecar();
  process.off("SIGINT", force);
  process.off("SIGTERM", force);
  process.off("uncaughtException", died);
  process.off("unhandledRejection", died);

  if ("error" in outcome) throw notStarted(file, outcome.error);
  const status = outcome.signal ? 128 + constants.signals[outcome.signal] : (outcome.code ?? EXIT_FAILURE);
  if (sidecarDied) return status === 0 ? EXIT_FAILURE : status;
  return status === 0 && !stopped ? EXIT_FAILURE : status;
}

/** The address a client on this host dials for the sidecar's bound service address. */
export function clientAddress(bound: string): string {
  if (bound.startsWith("unix:")) return bound;
  if (bound.startsWith("/")) return `unix:${bound}`;
  const colon = bound.lastIndexOf(":");
  const host = bound.slice(0, colon);
  const port = bound.slice(colon + 1);
  if (host === "0.0.0.0") return `127.0.0.1:${port}`;
  if (host === "[::]" || host === "::") return `[::1]:${port}`;
  return bound;
}

/**
 * Why `file` cannot be run, found as a shell finds it (a name on PATH, a path as it is),
 * with the exit status shells use; undefined when it can be run.
 */
export function commandProblem(file: string): CommandError | undefined {
  const runnable = (path: string): "yes" | "no" | "missing" => {
    try {
      if (!statSync(path).isFile()) return "no";
      accessSync(path, fsConstants.X_OK);
      return "yes";
    } catch (e) {
      return (e as NodeJS.ErrnoException).code === "ENOENT" || (e as NodeJS.ErrnoException).code === "ENOTDIR" ? "missing" : "no";
    }
  };
  if (file === "") return new CommandError("the command is empty", EXIT_NOT_FOUND);
  if (file.includes("/")) {
    const found = runnable(file);
    if (found === "missing") return notStarted(file, Object.assign(new Error("missing"), { code: "ENOENT" }));
    if (found === "no") return notStarted(file, Object.assign(new Error("not runnable"), { code: "EACCES" }));
    return undefined;
  }
  // An empty PATH entry is the working directory, as in a shell; without PATH, spawn
  // searches the C library's default path, and so does this.
  const results = (process.env.PATH ?? "/usr/bin:/bin").split(delimiter).map((dir) => runnable(join(dir || ".", file)));
  if (results.includes("yes")) return undefined;
  if (results.includes("no")) return notStarted(file, Object.assign(new Error("not runnable"), { code: "EACCES" }));
  return notStarted(file, Object.assign(new Error("missing"), { code: "ENOENT" }));
}

/** Why the command did not start, with the exit status shells use. */
function notStarted(file: string, error: NodeJS.ErrnoException): CommandError {
  if (error.code === "ENOENT") {
    const where = file.includes("/") ? "no such file" : "not found on PATH";
    return new CommandError(`cannot run ${JSON.stringify(file)}: ${where}`, EXIT_NOT_FOUND);
  }
  if (error.code === "EACCES" || error.code === "EISDIR" || error.code === "ENOEXEC") {
    return new CommandError(`cannot run ${JSON.stringify(file)}: permission denied (is it an executable file?)`, EXIT_NOT_EXECUTABLE);
  }
  return new CommandError(`cannot run ${JSON.stringify(file)}: ${error.message}`, EXIT_FAILURE);
}
