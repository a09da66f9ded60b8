import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

/** The `weft` command, run the way `npx weft` runs it. */
const WEFT_BIN = fileURLToPath(new URL("../../sidecar/bin/weft.js", import.meta.url));

/** How long a sidecar may take to say it is listening. */
const START_TIMEOUT_MS = 30_000;
/** How long a sidecar may take to stop after SIGTERM before it is killed. */
const STOP_TIMEOUT_MS = 10_000;
/** Lines of a sidecar's stderr kept for error messages. */
const TAIL_LINES = 20;

/**
 * The message of one line of a sidecar's stderr: a log record's `msg` (the sidecar logs JSON
 * lines, docs/observability.md), or the line itself when it is not a record.
 */
function messageOf(line: string): string {
  if (!line.startsWith("{")) return line;
  try {
    const msg = (JSON.parse(line) as { msg?: unknown }).msg;
    return typeof msg === "string" ? msg : line;
  } catch {
    return line;
  }
}

/** One `weft sidecar` process of the demo. */
export interface DemoSidecar {
  /** Its node id. */
  readonly name: string;
  /** The service API, where its services connect. */
  readonly address: string;
  /** The peer API, where the other sidecars link. */
  readonly peerAddress: string;
  /** The signal it said it is stopping on (a Ctrl-C in the terminal reaches it too), if any. */
  readonly stoppingOn: string | undefined;
  /** Its last lines on stderr, for error messages. */
  stderrTail(): string;
}

/** What the mesh tells the demo about its processes. */
export interface MeshListener {
  /** Every line a sidecar writes to stderr. */
  line(sidecar: DemoSidecar, line: string): void;
  /** A sidecar says it got a signal (not from the demo) and is stopping. */
  stopping(sidecar: DemoSidecar, signal: string): void;
  /** A sidecar exited without being asked to stop. */
  crashed(sidecar: DemoSidecar, how: string): void;
}

/** A sidecar that did not start; the message names it and says what it printed. */
export class SidecarStartError extends Error {}

class SidecarProcess implements DemoSidecar {
  readonly dataDir: string;
  readonly child: ChildProcess;
  /** Resolves with how it exited: "exit code 0", "signal SIGKILL". */
  readonly exit: Promise<string>;
  stoppingOn: string | undefined;
  /** Set when the demo sent it SIGTERM. */
  asked = false;
  private readonly tail: string[] = [];
  private partial = "";
  private readonly lines: ((line: string) => void)[] = [];

  constructor(
    readonly name: string,
    readonly address: string,
    readonly peerAddress: string,
    peers: string[],
    listener: MeshListener,
    /** Its config file: TLS files and the policy (demo-security.ts). */
    config: string,
  ) {
    this.dataDir = mkdtempSync(join(tmpdir(), `weft-demo-${name}-`));
    // Same process group as the demo: a Ctrl-C in the terminal stops the sidecars as well,
    // even if the demo itself is killed before it can stop them.
    this.child = spawn(
      process.execPath,
      [
        WEFT_BIN,
        "sidecar",
        "--node-id", name,
        "--listen", address,
        "--peer-listen", peerAddress,
        "--http", "127.0.0.1:0",
        "--peers", peers.join(","),
        "--data-dir", this.dataDir,
        "--peer-timeout", "5s",
        "--config", config,
      ],
      { stdio: ["ignore", "ignore", "pipe"] },
    );
    this.exit = once(this.child, "exit").then(([code, signal]) => (signal ? `signal ${signal}` : `exit code ${code}`));
    this.child.stderr!.setEncoding("utf8");
    this.child.stderr!.on("data", (text: string) => {
      const lines = (this.partial + text).split("\n");
      this.partial = lines.pop()!;
      for (const record of lines) {
        const line = messageOf(record);
        this.tail.push(line);
        if (this.tail.length > TAIL_LINES) this.tail.shift();
        const signal = /^weft sidecar: (SIG[A-Z]+), stopping/.exec(line)?.[1];
        if (signal && !this.asked && !this.stoppingOn) {
          this.stoppingOn = signal;
          listener.stopping(this, signal);
        }
        listener.line(this, line);
        for (const l of this.lines) l(line);
      }
    });
  }

  get exited(): boolean {
    return this.child.exitCode !== null || this.child.signalCode !== null;
  }

  stderrTail(): string {
    return [...this.tail, this.partial].filter((l) => l.trim() !== "").join("\n");
  }

  /** Resolves once it says it is listening; rejects when it exits or takes too long. */
  async started(): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    let listening!: () => void;
    const ready = new Promise<void>((resolve) => (listening = resolve));
    const check = (line: string): void => {
      if (line.startsWith("weft sidecar listening")) listening();
    };
    this.lines.push(check);
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new SidecarStartError(`the ${this.name} sidecar did not say it was listening within ${START_TIMEOUT_MS / 1000} s`)), START_TIMEOUT_MS);
    });
    const early = this.exit.then((how) => {
      throw new SidecarStartError(`the ${this.name} sidecar exited (${how}) before it was listening`);
    });
    early.catch(() => {}); // an exit after it was listening is reported as a crash instead
    try {
      await Promise.race([ready, timeout, early]);
    } finally {
      clearTimeout(timer);
      this.lines.splice(this.lines.indexOf(check), 1);
    }
  }

  /**
   * Stops it and resolves with how it exited. A sidecar already stopping on its own signal
   * is only waited for: a second signal would make it exit without finishing its stop. One
   * that does not exit within STOP_TIMEOUT_MS is killed.
   */
  async stop(): Promise<string> {
    if (!this.exited && !this.stoppingOn) {
      this.asked = true;
      this.child.kill("SIGTERM");
    }
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<void>((resolve) => (timer = setTimeout(resolve, STOP_TIMEOUT_MS)));
    await Promise.race([this.exit, late]);
    clearTimeout(timer);
    if (!this.exited) this.child.kill("SIGKILL");
    return this.exit;
  }

  /** Last resort when the demo exits at once: no waiting possible. */
  killNow(): void {
    if (!this.exited) this.child.kill("SIGKILL");
  }
}

/**
 * Sidecar processes on loopback, one per name, each with its own temporary data directory
 * and the same `--peers` list (every sidecar's peer address, its own included), which makes
 * them one mesh. `stop()` is idempotent: it stops every process (SIGTERM, then waits for the
 * exit) and removes the data directories. If the demo exits without calling it, the
 * processes are killed and the directories removed anyway.
 */
export class LoopbackMesh {
  private stopping: Promise<{ name: string; how: string }[]> | undefined;
  private readonly cleanupAtExit = (): void => {
    for (const s of this.processes) s.killNow();
    this.removeDataDirs();
  };

  private constructor(private readonly processes: SidecarProcess[]) {
    process.once("exit", this.cleanupAtExit);
  }

  get sidecars(): readonly DemoSidecar[] {
    return this.processes;
  }

  /**
   * Starts a sidecar per name on free loopback ports and waits until each one is listening.
   * @throws SidecarStartError when one does not start; all of them are stopped first.
   */
  static async start(names: string[], listener: MeshListener, configFile: (name: string) => string): Promise<LoopbackMesh> {
    const ports = await freePorts(names.length * 2);
    const peerAddresses = names.map((_, i) => `127.0.0.1:${ports[2 * i + 1]}`);
    const processes = names.map((name, i) => new SidecarProcess(name, `127.0.0.1:${ports[2 * i]}`, peerAddresses[i]!, peerAddresses, listener, configFile(name)));
    const mesh = new LoopbackMesh(processes);
    try {
      await Promise.all(processes.map((p) => p.started()));
    } catch (e) {
      await mesh.stop();
      const failed = processes.find((p) => (e as Error).message.includes(`the ${p.name} sidecar`));
      const said = failed?.stderrTail();
      throw new SidecarStartError(said ? `${(e as Error).message}; it said:\n${indent(said)}` : (e as Error).message);
    }
    for (const p of processes) {
      void p.exit.then((how) => {
        if (!mesh.stopping && !p.stoppingOn) listener.crashed(p, how);
      });
    }
    return mesh;
  }

  /** Stops every sidecar, waits for the exits and removes the data directories. */
  stop(): Promise<{ name: string; how: string }[]> {
    this.stopping ??= (async () => {
      const results = await Promise.all(this.processes.map(async (p) => ({ name: p.name, how: await p.stop() })));
      this.removeDataDirs();
      process.off("exit", this.cleanupAtExit);
      return results;
    })();
    return this.stopping;
  }

  /** Kills every sidecar and removes the data directories, without waiting. */
  killNow(): void {
    this.cleanupAtExit();
  }

  private removeDataDirs(): void {
    for (const p of this.processes) rmSync(p.dataDir, { recursive: true, force: true });
  }
}

/** `count` distinct loopback ports that were free a moment ago. */
async function freePorts(count: number): Promise<number[]> {
  const ports = new Set<number>();
  while (ports.size < count) {
    const server = createServer();
    server.listen(0, "127.0.0.1");
    await once(server, "listening");
    ports.add((server.address() as { port: number }).port);
    server.close();
    await once(server, "close");
  }
  return [...ports];
}

export function indent(text: string): string {
  return text
    .split("\n")
    .map((l) => `    ${l}`)
    .join("\n");
}
