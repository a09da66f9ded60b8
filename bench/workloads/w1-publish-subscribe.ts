import { measureRawGrpc, measureSidecar, streamRow } from "./stream-rows.js";
import { streamShape } from "./stream-shape.js";
import type { Workload } from "./types.js";

/**
 * W1: publish → one sidecar (own process, default durability) → one subscriber acking each,
 * 256 B events; and its ceiling, the same client against a raw grpc-js server with no log.
 */
export const workload: Workload = async ({ quick, scratch }) => {
  const shape = streamShape(quick ? 5000 : 100_000, 256, quick);
  const weft = await measureSidecar(scratch, "w1", shape);
  const raw = await measureRawGrpc(shape);
  return [
    streamRow("W1", `publish → sidecar → subscriber, ${shape.events} × 256 B, ack each`, weft.result, weft.peakRssMiB, "W1-ceiling"),
    streamRow("W1-ceiling", "same client, raw grpc-js server, no log", raw.result, raw.peakRssMiB),
  ];
};
