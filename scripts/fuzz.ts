/**
 * `npm run fuzz`: random and mutated frames on every RPC of a real `weft sidecar` process,
 * then the check that it still serves and still delivers every event acked before. The CI
 * test (test/fuzz.e2e.test.ts) runs the same campaign with a small budget.
 *
 *   npm run fuzz [-- --frames N] [-- --seed S] [-- --concurrency C] [-- --only Publish,Admin/]
 *                [-- --sidecar-log FILE]
 *
 * Exits 1 on any finding or failed check, printing the seed that reproduces the run.
 */
import { parseArgs } from "node:util";
import { formatReport, runFuzz } from "../test/support/fuzz.js";

const { values } = parseArgs({
  options: {
    frames: { type: "string", default: "100000" },
    seed: { type: "string" },
    concurrency: { type: "string", default: "4" },
    "sidecar-log": { type: "string" },
    only: { type: "string" },
  },
});

const number = (name: string, text: string, min: number, max: number): number => {
  const n = Number(text);
  if (!Number.isInteger(n) || n < min || n > max) {
    console.error(`--${name} ${text}: use an integer from ${min} to ${max}`);
    process.exit(2);
  }
  return n;
};

const frames = number("frames", values.frames, 1, 1_000_000_000);
const seed = values.seed === undefined ? Math.floor(Math.random() * 2 ** 32) : number("seed", values.seed, 0, 2 ** 32 - 1);
const concurrency = number("concurrency", values.concurrency, 1, 256);

console.log(`weft fuzz: seed ${seed}, ${frames} frames, ${concurrency} streams at once`);
const sidecarLog = values["sidecar-log"];
const report = await runFuzz({ seed, frames, concurrency, progress: (line) => console.log(line), ...(sidecarLog ? { sidecarLog } : {}), ...(values.only ? { only: values.only.split(",") } : {}) });
if (sidecarLog) console.log(`the sidecar's stderr is in ${sidecarLog}`);
console.log(formatReport(report));
process.exit(report.ok ? 0 : 1);
