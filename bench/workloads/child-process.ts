import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { readFileSync } from "node:fs";
import { connect as netConnect } from "node:net";
import { fileURLToPath } from "node:url";
import { freePort } from "../../test/support/free-port.js";

/**
 * The processes a workload measures: a `weft sidecar` (or a ceiling's server) in its own
 * process, so its CPU and memory are not the bench's, and its resident memory read from
 * /proc.
 */

export { freePort };

/**
 * The compiled sidecar (dist/, which bench/run.ts builds first), started directly: the
 * `weft` command would run the TypeScript through tsx once a source file is newer than
 * dist/, and measure a heavier process than the one users run.
 */
export const WEFT_BIN = fileURLToPath(new URL("../../dist/sidecar/main.js", import.meta.url));

/** A child process listening on a loopback port. */
export interface BenchProcess {
  readonly address: string;
  readonly pid: number;
  /** Peak resident memory so far (VmHWM), MiB; undefined where /proc is missing. */
  peakRssMiB(): number | undefined;
  /** Resident memory now (VmRSS), MiB. */
  rssMiB(): number | undefined;
  /** SIGTERM, then SIGKILL after 5 s; resolves on exit. Idempotent. */
  stop(): Promise<void>;
}

/** Starts `weft sidecar` with a free service port; peer and HTTP ports are left to the OS. */
export async function startSidecar(dataDir: string, extra: string[] = []): Promise<BenchProcess> {
  const port = await freePort();
  const args = [WEFT_BIN, "sidecar", "--data-dir", dataDir, "--listen", `127.0.0.1:${port}`, "--peer-listen", "127.0.0.1:0", "--http", "127.0.0.1:0", "--log-level", "warn", ...extra];
  return startListening(args, port);
}

/** Starts a TypeScript file (through tsx) that listens on the port given as its first argument. */
export async function startScript(script: string, args: string[] = []): Promise<BenchProcess> {
  const port = await freePort();
  return startListening(["--import", "tsx", script, String(port), ...args], port);
}

async function startListening(args: string[], port: number): Promise<BenchProcess> {
  const child = spawn(process.execPath, args, { stdio: ["ignore", "ignore", "pipe"] });
  let stderr = "";
  child.stderr!.on("data", (b: Buffer) => (stderr += b.toString()));
  const exited = once(child, "exit");
  // With --log-level warn the sidecar says nothing when ready: wait until the port accepts.
  const deadline = Date.now() + 30_000;
  while (!(await accepts(port))) {
    if (child.exitCode !== null) throw new Error(`${args.join(" ")} exited with ${child.exitCode}: ${stderr}`);
    if (Date.now() > deadline) {
      kill(child);
      throw new Error(`${args.join(" ")} did not listen within 30 s: ${stderr}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  const pid = child.pid!;
  return {
    address: `127.0.0.1:${port}`,
    pid,
    peakRssMiB: () => procStatusMiB(pid, "VmHWM"),
    rssMiB: () => procStatusMiB(pid, "VmRSS"),
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill("SIGTERM");
      const timer = setTimeout(() => kill(child), 5000);
      await exited;
      clearTimeout(timer);
    },
  };
}

function kill(child: ChildProcess): void {
  if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
}

function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = netConnect(port, "127.0.0.1");
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
  });
}

/** A `VmXxx:   1234 kB` line of /proc/PID/status, in MiB. */
export function procStatusMiB(pid: number, field: "VmHWM" | "VmRSS"): number | undefined {
  try {
    const match = new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return match ? Number(match[1]) / 1024 : undefined;
  } catch {
    return undefined;
  }
}
