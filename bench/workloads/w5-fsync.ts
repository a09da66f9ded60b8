import { join } from "node:path";
import { measureLevelDbSync } from "./leveldb-sync-ceiling.js";
import { measureSidecar, streamRow } from "./stream-rows.js";
import { streamShape } from "./stream-shape.js";
import type { Workload } from "./types.js";

/**
 * W5: W1 with `--fsync` (each append group synced before its acks). events/s is the publish
 * rate (acked = stored and synced); the ceiling is LevelDB alone writing the same groups
 * with sync (leveldb-sync-ceiling.ts).
 */
export const workload: Workload = async ({ quick, scratch }) => {
  const shape = streamShape(quick ? 5000 : 100_000, 256, quick);
  const weft = await measureSidecar(scratch, "w5", shape, ["--fsync"]);
  const row = streamRow("W5", `W1 with --fsync: ${shape.events} × 256 B, publish acked (synced)`, weft.result, weft.peakRssMiB, "W5-ceiling");
  row.eventsPerSecond = weft.result.publishPerSecond;
  row.megabytesPerSecond = (weft.result.publishPerSecond * shape.payloadBytes) / 1e6;
  row.extra = { endToEndPerSecond: Math.round(weft.result.eventsPerSecond) };
  const outstanding = Math.min(shape.maxOutstanding, shape.chunk * shape.window);
  const raw = await measureLevelDbSync(join(scratch, "w5-leveldb"), shape.events, shape.payloadBytes, shape.maxBatch, outstanding);
  return [
    row,
    {
      id: "W5-ceiling",
      title: `LevelDB chained batches with sync, ${shape.maxBatch}-event appends grouped up to 10 000 events or 256 KiB`,
      eventsPerSecond: raw.eventsPerSecond,
      megabytesPerSecond: (raw.eventsPerSecond * shape.payloadBytes) / 1e6,
      rssMiB: undefined,
      extra: { meanGroupEvents: Math.round(raw.meanGroup) },
    },
  ];
};
