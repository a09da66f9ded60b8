import { measureRawGrpc, measureSidecar, streamRow } from "./stream-rows.js";
import { streamShape } from "./stream-shape.js";
import type { BenchRow, Workload } from "./types.js";

/** W2: W1 with 1 KiB and 64 KiB events (fewer of the large ones: at most 256 MiB a run). */
export const workload: Workload = async ({ quick, scratch }) => {
  const rows: BenchRow[] = [];
  for (const [label, bytes] of [["1k", 1024], ["64k", 65536]] as const) {
    const shape = streamShape(quick ? 5000 : 100_000, bytes, quick);
    const weft = await measureSidecar(scratch, `w2-${label}`, shape);
    const raw = await measureRawGrpc(shape);
    rows.push(
      streamRow(`W2-${label}`, `W1 with ${shape.events} × ${label === "1k" ? "1 KiB" : "64 KiB"}`, weft.result, weft.peakRssMiB, `W2-${label}-ceiling`),
      streamRow(`W2-${label}-ceiling`, `raw grpc-js, ${label === "1k" ? "1 KiB" : "64 KiB"}`, raw.result, raw.peakRssMiB),
    );
  }
  return rows;
};
