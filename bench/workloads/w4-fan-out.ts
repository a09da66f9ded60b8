import { measureSidecar, streamRow } from "./stream-rows.js";
import { streamShape } from "./stream-shape.js";
import type { Workload } from "./types.js";

const GROUPS = 4;

/**
 * W4: fan-out, one publisher and 4 groups (one subscriber each) on one sidecar, 256 B.
 * events/s is deliveries summed over the groups; the ceiling is W1 × 4 (a group costing
 * nothing more than the first), computed by the harness from the W1 row of the same run.
 */
export const workload: Workload = async ({ quick, scratch }) => {
  const shape = streamShape(quick ? 5000 : 100_000, 256, quick);
  const weft = await measureSidecar(scratch, "w4", shape, [], GROUPS);
  const row = streamRow("W4", `fan-out: ${shape.events} × 256 B to ${GROUPS} groups, delivered sum`, weft.result, weft.peakRssMiB, "W1");
  row.extra = { ...row.extra, ceilingFactor: GROUPS };
  return [row];
};
