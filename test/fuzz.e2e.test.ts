import { describe, expect, it } from "vitest";
import { TARGETS } from "./support/fuzz-frames.js";
import { formatReport, runFuzz } from "./support/fuzz.js";

/**
 * A bounded fuzzing campaign on a real `weft sidecar` process: random and mutated frames on
 * every RPC of both gRPC listeners, with a fixed seed, then the check that the same process
 * still serves a round trip and delivers every event acked before the fuzzing. `npm run
 * fuzz -- --frames N --seed S` runs the same campaign for as long as wanted.
 */
describe("fuzzing every RPC", () => {
  it("leaves the sidecar serving, with every event acked before still delivered", async () => {
    const report = await runFuzz({ seed: 20_261_207, frames: 3000 });
    console.log(formatReport(report));
    for (const t of TARGETS) expect(report.frames[t.name] ?? 0, t.name).toBeGreaterThan(0);
    expect(report.findings).toEqual([]);
    expect(report.check.lines.filter((l) => !l.startsWith("ok"))).toEqual([]);
    expect(report.ok).toBe(true);
  }, 180_000);
});
