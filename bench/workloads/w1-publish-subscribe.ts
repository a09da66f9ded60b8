import { measureWithCeiling, streamRow } from "./stream-rows.js";
import { streamShape } from "./stream-shape.js";
import type { Workload } from "./types.js";

/**
 * W1: publish → one sidecar (own process, default durability) → one subscriber acking each,
 * 256 B events; and its ceiling, the same client against a raw grpc-js server with no log.
 * Three rounds each, alternating; the rows are each side's median run.
 */
export const workload: Workload = async ({ quick, scratch }) => {
  const shape = streamShape(quick ? 5000 : 100_000, 256, quick);
  const { weft, raw } = await measureWithCeiling(scratch, "w1", shape, quick ? 1 : 3);
  return [
    streamRow("W1", `publish → sidecar → subscriber, ${shape.events} × 256 B, ack each (median of ${weft.runs.length})`, weft.result, weft.peakRssMiB, "W1-ceiling", weft.runs, weft.coldRuns),
    streamRow("W1-ceiling", "same client, raw grpc-js server, no log", raw.result, raw.peakRssMiB, undefined, raw.runs, raw.coldRuns),
  ];
};
