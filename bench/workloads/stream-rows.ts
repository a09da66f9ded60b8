import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { ConnectOptions } from "../../src/client/index.js";
import type { BenchRow } from "./types.js";
import { startScript, startSidecar } from "./child-process.js";
import type { StreamResult, StreamShape } from "./stream-shape.js";
import { runWeftStream } from "./weft-stream.js";

const RAW_SERVER = fileURLToPath(new URL("./raw-grpc-server.ts", import.meta.url));

/** A measured stream as a table row; `runs`, when it was measured more than once, the events/s of each. */
export function streamRow(id: string, title: string, r: StreamResult, rssMiB: number | undefined, ceiling?: string, runs?: number[], coldRuns?: number[]): BenchRow {
  return {
    id,
    title,
    eventsPerSecond: r.eventsPerSecond,
    megabytesPerSecond: r.megabytesPerSecond,
    p50Ms: r.p50Ms,
    p99Ms: r.p99Ms,
    p999Ms: r.p999Ms,
    rssMiB,
    ...(ceiling ? { ceiling } : {}),
    extra: {
      publishPerSecond: Math.round(r.publishPerSecond),
      ...(runs && runs.length > 1 ? { runs: runs.map((x) => Math.round(x)).join(", ") } : {}),
      ...(coldRuns && coldRuns.length > 0 ? { coldRuns: coldRuns.map((x) => Math.round(x)).join(", ") } : {}),
    },
  };
}

/** One side of measureWithCeiling: the median run by events/s, every run's events/s, the highest peak RSS. */
export interface MedianRun {
  result: StreamResult;
  runs: number[];
  /** Events/s of each process's warm-up run, the first events it ever handled. */
  coldRuns: number[];
  peakRssMiB: number | undefined;
}

/** One measured stream on a fresh process, and the events/s of the warm-up run before it. */
export interface Measured {
  result: StreamResult;
  peakRssMiB: number | undefined;
  cold: number | undefined;
}

/**
 * Each process (sidecar or raw server) first handles a run of half the events, not measured
 * (its events/s is kept as `coldRuns`): a fresh process's first seconds at full load are V8
 * compiling its hot path, and a sidecar runs for days (W6 warms up for the same reason).
 * Alike on both sides of a ratio. None in `--quick`.
 */
async function warmThenMeasure(address: string, shape: StreamShape, groups = 1, client: Pick<ConnectOptions, "tls"> = {}): Promise<{ result: StreamResult; cold: number | undefined }> {
  const cold = shape.warmUp ? (await runWeftStream(address, { ...shape, events: Math.ceil(shape.events / 2) }, groups, client)).eventsPerSecond : undefined;
  return { result: await runWeftStream(address, shape, groups, client), cold };
}

/**
 * Measures `shape` through a fresh sidecar and through the raw grpc-js server `rounds` times,
 * alternating (Weft, raw, Weft, raw, ...), and reports each side's median run: one pair's
 * ratio moves from run to run with whatever else the machine does.
 */
export async function measureWithCeiling(scratch: string, name: string, shape: StreamShape, rounds: number): Promise<{ weft: MedianRun; raw: MedianRun }> {
  const weft: Measured[] = [];
  const raw: typeof weft = [];
  for (let r = 0; r < rounds; r++) {
    weft.push(await measureSidecar(scratch, `${name}-${r}`, shape));
    raw.push(await measureRawGrpc(shape));
  }
  return { weft: median(weft), raw: median(raw) };
}

export function median(runs: Measured[]): MedianRun {
  const sorted = [...runs].sort((a, b) => a.result.eventsPerSecond - b.result.eventsPerSecond);
  const peaks = runs.map((r) => r.peakRssMiB).filter((x): x is number => x !== undefined);
  return {
    result: sorted[(sorted.length - 1) >> 1]!.result,
    runs: runs.map((r) => r.result.eventsPerSecond),
    coldRuns: runs.map((r) => r.cold).filter((x): x is number => x !== undefined),
    peakRssMiB: peaks.length > 0 ? Math.max(...peaks) : undefined,
  };
}

/** Runs `shape` through a fresh sidecar process (its own data directory under `scratch`). */
export async function measureSidecar(scratch: string, name: string, shape: StreamShape, sidecarArgs: string[] = [], groups = 1, client: Pick<ConnectOptions, "tls"> = {}): Promise<Measured> {
  const sidecar = await startSidecar(join(scratch, name), sidecarArgs);
  try {
    const { result, cold } = await warmThenMeasure(sidecar.address, shape, groups, client);
    return { result, cold, peakRssMiB: sidecar.peakRssMiB() };
  } finally {
    await sidecar.stop();
  }
}

/** Runs `shape` through the raw grpc-js server (raw-grpc-server.ts) in its own process. */
export async function measureRawGrpc(shape: StreamShape): Promise<Measured> {
  const server = await startScript(RAW_SERVER);
  try {
    const { result, cold } = await warmThenMeasure(server.address, shape);
    return { result, cold, peakRssMiB: server.peakRssMiB() };
  } finally {
    await server.stop();
  }
}
