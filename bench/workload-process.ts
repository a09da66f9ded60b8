/**
 * Runs one workload of bench/run.ts in a process of its own and writes its rows (or its
 * error) as JSON to OUT. Each workload starts from a fresh heap: a heap an earlier workload
 * left large runs full collections, whose pauses would show in a later workload's latency.
 *
 *   node --import tsx bench/workload-process.ts FILE SCRATCH OUT [--quick]
 */
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import type { Workload } from "./workloads/types.js";

const [file, scratch, out] = process.argv.slice(2);
if (!file || !scratch || !out) {
  console.error("usage: node --import tsx bench/workload-process.ts FILE SCRATCH OUT [--quick]");
  process.exit(2);
}
const quick = process.argv.includes("--quick");

try {
  const path = join(fileURLToPath(new URL(".", import.meta.url)), "workloads", file);
  const module = (await import(pathToFileURL(path).href)) as Record<string, unknown>;
  const workload = module.workload ?? module.default;
  if (typeof workload !== "function") throw new Error(`bench/workloads/${file} exports no \`workload\` (nor a default)`);
  const rows = await (workload as Workload)({ quick, scratch });
  await writeFile(out, JSON.stringify({ rows }));
} catch (e) {
  await writeFile(out, JSON.stringify({ error: (e as Error).stack ?? String(e) }));
}
// Handles a workload left open (a client not closed) must not keep the process alive.
process.exit(0);
