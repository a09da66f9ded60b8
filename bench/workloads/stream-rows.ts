import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { BenchRow } from "./types.js";
import { startScript, startSidecar } from "./child-process.js";
import type { StreamResult, StreamShape } from "./stream-shape.js";
import { runWeftStream } from "./weft-stream.js";

const RAW_SERVER = fileURLToPath(new URL("./raw-grpc-server.ts", import.meta.url));

/** A measured stream as a table row. */
export function streamRow(id: string, title: string, r: StreamResult, rssMiB: number | undefined, ceiling?: string): BenchRow {
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
    extra: { publishPerSecond: Math.round(r.publishPerSecond) },
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
