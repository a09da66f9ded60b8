import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { BenchRow } from "./types.js";
import { startScript, startSidecar } from "./child-process.js";
import type { StreamResult, StreamShape } from "./stream-shape.js";
import { runWeftStream } from "./weft-stream.js";

const RAW_SERVER = fileURLToPath(new URL("./raw-grpc-server.ts", import.meta.url));

/** A measured stream as a table row; `runs`, when it was measured more than once, the events/s of each. */
export function streamRow(id: string, title: string, r: StreamResult, rssMiB: number | undefined, ceiling?: string, runs?: number[]): BenchRow {
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
    extra: { publishPerSecond: Math.round(r.publishPerSecond), ...(runs && runs.length > 1 ? { runs: runs.map((x) => Math.round(x)).join(", ") } : {}) },
  };
}

/** One side of measureWithCeiling: the median run by events/s, every run's events/s, the highest peak RSS. */
export interface MedianRun {
  result: StreamResult;
  runs: number[];
  peakRssMiB: number | undefined;
}

/**
 * Measures `shape` through a fresh sidecar and through the raw grpc-js server `rounds` times,
 * alternating (Weft, raw, Weft, raw, ...), and reports each side's median run: on the 2-core
 * machine one pair's ratio moved by ±15% from run to run, with whatever else the machine did.
 */
export async function measureWithCeiling(scratch: string, name: string, shape: StreamShape, rounds: number): Promise<{ weft: MedianRun; raw: MedianRun }> {
  const weft: { result: StreamResult; peakRssMiB: number | undefined }[] = [];
  const raw: typeof weft = [];
  for (let r = 0; r < rounds; r++) {
    weft.push(await measureSidecar(scratch, `${name}-${r}`, shape));
    raw.push(await measureRawGrpc(shape));
  }
  return { weft: median(weft), raw: median(raw) };
}

function median(runs: { result: StreamResult; peakRssMiB: number | undefined }[]): MedianRun {
  const sorted = [...runs].sort((a, b) => a.result.eventsPerSecond - b.result.eventsPerSecond);
  const peaks = runs.map((r) => r.peakRssMiB).filter((x): x is number => x !== undefined);
  return {
    result: sorted[(sorted.length - 1) >> 1]!.result,
    runs: runs.map((r) => r.result.eventsPerSecond),
    peakRssMiB: peaks.length > 0 ? Math.max(...peaks) : undefined,
  };
}

/** Runs `shape` through a fresh sidecar process (its own data directory under `scratch`). */
export async function measureSidecar(scratch: string, name: string, shape: StreamShape, sidecarArgs: string[] = [], groups = 1): Promise<{ result: StreamResult; peakRssMiB: number | undefined }> {
  const sidecar = await startSidecar(join(scratch, name), sidecarArgs);
  try {
    const result = await runWeftStream(sidecar.address, shape, groups);
    return { result, peakRssMiB: sidecar.peakRssMiB() };
  } finally {
    await sidecar.stop();
  }
}

/** Runs `shape` through the raw grpc-js server (raw-grpc-server.ts) in its own process. */
export async function measureRawGrpc(shape: StreamShape): Promise<{ result: StreamResult; peakRssMiB: number | undefined }> {
  const server = await startScript(RAW_SERVER);
  try {
    const result = await runWeftStream(server.address, shape);
    return { result, peakRssMiB: server.peakRssMiB() };
  } finally {
    await server.stop();
  }
}
