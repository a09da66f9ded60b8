import { measureWithCeiling, streamRow } from "./stream-rows.js";
import { streamShape } from "./stream-shape.js";
import type { BenchRow, Workload } from "./types.js";

/**
 * W2: W1 with 1 KiB and 64 KiB events (fewer of the large ones: at most 256 MiB a run), three
 * rounds each alternating with the ceiling, as W1.
 */
export const workload: Workload = async ({ quick, scratch }) => {
  const rows: BenchRow[] = [];
  for (const [label, bytes, size] of [["1k", 1024, "1 KiB"], ["64k", 65536, "64 KiB"]] as const) {
    const shape = streamShape(quick ? 5000 : 100_000, bytes, quick);
    const { weft, raw } = await measureWithCeiling(scratch, `w2-${label}`, shape, quick ? 1 : 3);
    rows.push(
      streamRow(`W2-${label}`, `W1 with ${shape.events} × ${size} (median of ${weft.runs.length})`, weft.result, weft.peakRssMiB, `W2-${label}-ceiling`, weft.runs, weft.coldRuns),
      streamRow(`W2-${label}-ceiling`, `raw grpc-js, ${size}`, raw.result, raw.peakRssMiB, undefined, raw.runs, raw.coldRuns),
    );
  }
  return rows;
};
