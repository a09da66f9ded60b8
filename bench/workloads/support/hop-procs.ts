/**
 * Helpers for the W3, W6 and W7 workloads: `weft sidecar` processes (one or a linked pair),
 * their memory from /proc, a small latency histogram, and a timestamp carried in a payload.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { readFileSync } from "node:fs";
import { mkdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import type { WeftClient } from "../../../src/client/index.js";
import { freePorts } from "../../../test/support/free-port.js";
import { WEFT_BIN } from "../child-process.js";

export { freePorts };

export interface WeftProcess {
  child: ChildProcess;
  pid: number;
  /** The service API, host:port. */
  address: string;
  peerAddress: string;
  dataDir: string;
  /** performance.now() when spawned and when it said "listening". */
  spawnedAt: number;
  listeningAt: number;
  stderr(): string;
  kill9(): Promise<void>;
  terminate(): Promise<void>;
  /** The same node again on the same ports and data dir (after kill9/terminate). */
  restart(): Promise<WeftProcess>;
}

export interface WeftSpec {
  nodeId: string;
  dataDir: string;
  port: number;
  peerPort: number;
  /** Peer addresses (host:port) for --peers. */
  peers?: string[];
  extra?: string[];
  /** Environment added to the bench's own (settings the CLI has no flag for). */
  env?: Record<string, string>;
}

/** Starts `weft sidecar` as a child process; resolves once it logs "listening". */
export async function startWeft(spec: WeftSpec): Promise<WeftProcess> {
  await mkdir(spec.dataDir, { recursive: true });
  const address = `127.0.0.1:${spec.port}`;
  const peerAddress = `127.0.0.1:${spec.peerPort}`;
  const args = [
    WEFT_BIN, "sidecar",
    "--node-id", spec.nodeId,
    "--listen", address,
    "--peer-listen", peerAddress,
    ...(spec.peers && spec.peers.length > 0 ? ["--peers", spec.peers.join(",")] : []),
    "--http", "127.0.0.1:0",
    // Not "warn": the "listening on" line is an info record, and it is what we wait for.
    // Info records are per link and per start, not per event.
    "--log-level", "info",
    "--data-dir", spec.dataDir,
    ...(spec.extra ?? []),
  ];
  const spawnedAt = performance.now();
  const child = spawn(process.execPath, args, { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, ...spec.env } });
  let err = "";
  child.stderr!.on("data", (b: Buffer) => {
    err += b.toString();
    if (err.length > 1_000_000) err = err.slice(-100_000);
  });
  child.stdout!.resume();
  const exited = once(child, "exit");
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL"); // never leave a half-started sidecar behind
      reject(new Error(`sidecar ${spec.nodeId} did not start within 60 s: ${err}`));
    }, 60_000);
    const check = (): void => {
      if (/listening on/.test(err)) {
        clearTimeout(timer);
        child.stderr!.off("data", check);
        resolve();
      }
    };
    child.stderr!.on("data", check);
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`sidecar ${spec.nodeId} exited with ${code} before listening: ${err}`));
    });
  });
  const listeningAt = performance.now();
  const alive = (): boolean => child.exitCode === null && child.signalCode === null;
  const p: WeftProcess = {
    child,
    pid: child.pid!,
    address,
    peerAddress,
    dataDir: spec.dataDir,
    spawnedAt,
    listeningAt,
    stderr: () => err,
    async kill9() {
      if (alive()) child.kill("SIGKILL");
      await exited;
    },
    async terminate() {
      if (alive()) child.kill("SIGTERM");
      const t = setTimeout(() => alive() && child.kill("SIGKILL"), 10_000);
      await exited;
      clearTimeout(t);
    },
    restart: () => startWeft(spec),
  };
  return p;
}

/** Two linked sidecars a and b (each lists the other as its peer). */
export async function startPair(scratch: string, tag: string, env?: Record<string, string>, extra: (nodeId: string) => string[] = () => []): Promise<{ a: WeftProcess; b: WeftProcess }> {
  const [portA, peerA, portB, peerB] = (await freePorts(4)) as [number, number, number, number];
  const [a, b] = await Promise.allSettled([
    startWeft({ nodeId: "a", dataDir: join(scratch, `${tag}-a`), port: portA, peerPort: peerA, peers: [`127.0.0.1:${peerB}`], env, extra: extra("a") }),
    startWeft({ nodeId: "b", dataDir: join(scratch, `${tag}-b`), port: portB, peerPort: peerB, peers: [`127.0.0.1:${peerA}`], env, extra: extra("b") }),
  ]);
  if (a.status === "fulfilled" && b.status === "fulfilled") return { a: a.value, b: b.value };
  // One failed: stop the other before reporting.
  if (a.status === "fulfilled") await a.value.kill9();
  if (b.status === "fulfilled") await b.value.kill9();
  throw a.status === "rejected" ? a.reason : (b as PromiseRejectedResult).reason;
}

export async function startOne(scratch: string, tag: string, extra: string[] = []): Promise<WeftProcess> {
  const [port, peer] = (await freePorts(2)) as [number, number];
  return startWeft({ nodeId: "solo", dataDir: join(scratch, tag), port, peerPort: peer, extra });
}

/**
 * VmRSS and VmHWM (peak) of a process, MiB, from /proc/PID/status, and VmRSS split into
 * anonymous memory (heaps: V8, malloc) and mapped files (Node's code; LevelDB's tables, which
 * it reads through mmap, so a compaction under way shows here).
 */
export async function procMemory(pid: number): Promise<{ rssMiB: number; hwmMiB: number; anonMiB: number; fileMiB: number }> {
  const text = await readFile(`/proc/${pid}/status`, "utf8");
  const kb = (name: string): number => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, "m").exec(text)?.[1] ?? NaN);
  const mib = (name: string): number => round1(kb(name) / 1024);
  return { rssMiB: mib("VmRSS"), hwmMiB: mib("VmHWM"), anonMiB: mib("RssAnon"), fileMiB: mib("RssFile") };
}

/** The sidecar's HTTP address, from its "listening on" line ("... http http://HOST:PORT, ..."). */
export function httpAddressOf(p: WeftProcess): string | undefined {
  return /http (http:\/\/[0-9.]+:\d+)/.exec(p.stderr())?.[1];
}

/**
 * The sidecar's V8 heap (used and total) and external memory, MiB, from its /metrics
 * (prom-client's default process metrics): tells the JS heap from native memory (LevelDB).
 */
export async function heapOf(p: WeftProcess): Promise<Record<string, number>> {
  const base = httpAddressOf(p);
  if (!base) return {};
  try {
    const text = await (await fetch(`${base}/metrics`)).text();
    const mib = (name: string): number => round1(Number(new RegExp(`^${name}(?:\\{[^}]*\\})? ([0-9.e+]+)`, "m").exec(text)?.[1] ?? NaN) / 2 ** 20);
    return {
      heapUsedMiB: mib("nodejs_heap_size_used_bytes"),
      heapTotalMiB: mib("nodejs_heap_size_total_bytes"),
      externalMiB: mib("nodejs_external_memory_bytes"),
    };
  } catch {
    return {};
  }
}

export const round1 = (x: number): number => Math.round(x * 10) / 10;
export const round3 = (x: number): number => Math.round(x * 1000) / 1000;

/**
 * The machine's CPU time so far from /proc/stat, in clock ticks: all of it, and the part
 * "stolen" (a virtual CPU ready to run while the host ran something else). Undefined where
 * /proc is missing.
 */
export function cpuTicks(): { total: number; steal: number } | undefined {
  try {
    const fields = readFileSync("/proc/stat", "utf8").split("\n", 1)[0]!.trim().split(/\s+/).slice(1, 9).map(Number);
    return { total: fields.reduce((a, b) => a + b, 0), steal: fields[7] ?? 0 };
  } catch {
    return undefined;
  }
}

/** The share of the machine's CPU time stolen by its host between two `cpuTicks()`, in %. */
export function stealPercent(from: ReturnType<typeof cpuTicks>, to: ReturnType<typeof cpuTicks>): number | undefined {
  if (!from || !to || to.total <= from.total) return undefined;
  return Math.round((1000 * (to.steal - from.steal)) / (to.total - from.total)) / 10;
}

/**
 * Latency samples in ms. Sorted array: exact quantiles, fine for a few hundred thousand
 * samples (Float64Array, grown by doubling).
 */
export class Histogram {
  private values = new Float64Array(1024);
  private n = 0;
  private sorted = true;
  record(ms: number): void {
    if (this.n === this.values.length) {
      const grown = new Float64Array(this.values.length * 2);
      grown.set(this.values);
      this.values = grown;
    }
    this.values[this.n++] = ms;
    this.sorted = false;
  }
  get count(): number {
    return this.n;
  }
  /** The q-quantile (0..1), nearest rank. */
  quantile(q: number): number {
    if (this.n === 0) return NaN;
    if (!this.sorted) {
      this.values.subarray(0, this.n).sort();
      this.sorted = true;
    }
    const rank = Math.min(this.n - 1, Math.max(0, Math.ceil(q * this.n) - 1));
    return this.values[rank]!;
  }
  max(): number {
    return this.quantile(1);
  }
}

/** A payload of `bytes` bytes whose first 8 hold `stampMs` (performance.now() of this process). */
export function stamped(bytes: number, stampMs: number): Buffer {
  const b = Buffer.alloc(Math.max(bytes, 8), 120);
  b.writeDoubleLE(stampMs, 0);
  return b;
}
export function stampOf(data: Uint8Array): number {
  return Buffer.from(data.buffer, data.byteOffset, data.byteLength).readDoubleLE(0);
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * Publishes a warm-up event every 100 ms on `channel` until `received()` says the subscriber
 * saw one: then the mesh is linked and the subscriber's interest reached the publishing side.
 */
export async function warmUp(pub: WeftClient, channel: string, received: () => boolean, timeoutMs = 60_000): Promise<number> {
  const start = performance.now();
  while (!received()) {
    if (performance.now() - start > timeoutMs) throw new Error(`no warm-up event delivered on ${channel} within ${timeoutMs} ms`);
    void pub.publish({ channel, data: stamped(256, -1), attributes: { warmup: "1" } }).catch(() => {});
    await sleep(100);
  }
  return performance.now() - start;
}
