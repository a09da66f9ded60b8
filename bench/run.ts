/**
 * `npm run bench`: every workload of bench/workloads in order, one table, and
 * bench/results/latest.json. Each Weft row is shown beside its ceiling measured in the same
 * run, as a ratio, so the machine's noise of the moment cancels out.
 *
 *   npm run bench [-- --quick] [-- --only W1,W5]
 *
 * --quick is a seconds-long smoke (a few thousand events a workload) to keep the bench working.
 */
import { spawn } from "node:child_process";
import { once } from "node:events";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { cpus, tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { cpuTicks, stealPercent } from "./workloads/support/hop-procs.js";
import type { BenchRow } from "./workloads/types.js";

/**
 * The workloads, in the order they run: [id, module in bench/workloads/]. Each module exports
 * `workload: Workload` (types.ts); a module not written yet is listed as skipped.
 */
const WORKLOADS: readonly [id: string, file: string][] = [
  ["W1", "w1-publish-subscribe.ts"],
  ["W2", "w2-payload-sizes.ts"],
  ["W3", "w3-hop.ts"],
  ["W4", "w4-fan-out.ts"],
  ["W5", "w5-fsync.ts"],
  ["W6", "w6-latency.ts"],
  ["W7", "w7-backlog.ts"],
  ["W8", "w8-tls.ts"],
  ["J", "jetstream.ts"],
];

const here = fileURLToPath(new URL(".", import.meta.url));
const quick = process.argv.includes("--quick");
const onlyIndex = process.argv.indexOf("--only");
const only = onlyIndex > 0 ? new Set((process.argv[onlyIndex + 1] ?? "").split(",").map((s) => s.trim().toUpperCase())) : undefined;

/**
 * Runs a workload in a process of its own (bench/workload-process.ts), so no workload
 * inherits another's heap, and returns its rows; undefined when its file has not landed yet.
 */
async function runWorkload(file: string, scratch: string, limitMs: number): Promise<BenchRow[] | undefined> {
  if (!existsSync(join(here, "workloads", file))) return undefined;
  const out = join(scratch, "rows.json");
  const child = spawn(process.execPath, ["--import", "tsx", join(here, "workload-process.ts"), file, scratch, out, ...(quick ? ["--quick"] : [])], {
    stdio: ["ignore", "inherit", "inherit"],
  });
  // A workload that waits on nothing (a stream that never answers) must fail loudly.
  const timer = setTimeout(() => child.kill("SIGKILL"), limitMs);
  const [code, signal] = (await once(child, "exit")) as [number | null, NodeJS.Signals | null];
  clearTimeout(timer);
  if (signal === "SIGKILL") throw new Error(`no result within ${limitMs / 1000} s`);
  let result: { rows?: BenchRow[]; error?: string };
  try {
    result = JSON.parse(await readFile(out, "utf8")) as typeof result;
  } catch {
    throw new Error(`its process exited (${code ?? signal}) without a result`);
  }
  if (result.error !== undefined) throw new Error(result.error);
  return result.rows ?? [];
}

// The sidecars measured are dist/'s (see WEFT_BIN): built from the sources as they are now.
console.log("building dist/ ...");
const [built] = (await once(spawn(process.execPath, [join(here, "..", "scripts", "build-dist.js")], { stdio: ["ignore", "inherit", "inherit"] }), "exit")) as [number | null];
if (built !== 0) throw new Error("npm run build failed: the bench measures the compiled sidecar");

const rows: BenchRow[] = [];
const started = new Date();
const ticksAtStart = cpuTicks();
for (const [id, file] of WORKLOADS) {
  if (only && !only.has(id)) continue;
  const scratch = await mkdtemp(join(tmpdir(), `weft-bench-${id}-`));
  const t0 = performance.now();
  const ticks0 = cpuTicks();
  process.stderr.write(`${id} ... `);
  try {
    const found = await runWorkload(file, scratch, quick ? 120_000 : 900_000);
    if (!found) {
      process.stderr.write("not written yet\n");
      rows.push({ id, title: `not written yet (bench/workloads/${file})`, skipped: "not written yet" });
      continue;
    }
    rows.push(...found);
    const steal = stealPercent(ticks0, cpuTicks());
    process.stderr.write(`${((performance.now() - t0) / 1000).toFixed(1)} s${steal === undefined ? "" : `, the host took ${steal}% of the CPU`}\n`);
  } catch (e) {
    process.stderr.write(`failed\n`);
    rows.push({ id, title: "failed", skipped: `failed: ${(e as Error).message.split("\n")[0]}` });
    process.exitCode = 1;
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
}

/** The row's rate over its ceiling's (× a factor, e.g. W4 against W1 × 4); none for latency rows. */
function ratio(row: BenchRow): number | undefined {
  if (!row.ceiling || row.compare === "latency") return undefined;
  const ceiling = rows.find((r) => r.id === row.ceiling);
  const factor = Number(row.extra?.ceilingFactor ?? 1);
  if (!ceiling?.eventsPerSecond || row.eventsPerSecond === undefined) return undefined;
  return row.eventsPerSecond / (ceiling.eventsPerSecond * factor);
}

const num = (v: number | undefined, digits = 0): string => (v === undefined || Number.isNaN(v) ? "–" : v.toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits }));
const table = [
  ["workload", "events/s", "MB/s", "p50 ms", "p99 ms", "RSS MiB", "ratio to ceiling"],
  ...rows.map((r) => {
    // The reason goes in the last column, the one left-aligned, so it does not widen the figures.
    if (r.skipped) return [r.id, "skipped", "", "", "", "", r.skipped];
    const x = ratio(r);
    const factor = r.extra?.ceilingFactor;
    if (r.compare === "latency") {
      const ceiling = rows.find((c) => c.id === r.ceiling);
      const added = r.p99Ms !== undefined && ceiling?.p99Ms !== undefined ? r.p99Ms - ceiling.p99Ms : undefined;
      return [r.id, num(r.eventsPerSecond), num(r.megabytesPerSecond, 1), num(r.p50Ms, 1), num(r.p99Ms, 1), num(r.rssMiB), added === undefined ? `– (no ${r.ceiling} row)` : `p99 ${added >= 0 ? "+" : ""}${num(added, 1)} ms vs ${r.ceiling}`];
    }
    return [
      r.id,
      num(r.eventsPerSecond),
      num(r.megabytesPerSecond, 1),
      num(r.p50Ms, 1),
      num(r.p99Ms, 1),
      num(r.rssMiB),
      x === undefined ? (r.ceiling ? `– (no ${r.ceiling} row)` : "") : `${x.toFixed(2)} × ${r.ceiling}${factor ? ` × ${factor}` : ""}`,
    ];
  }),
];
const widths = table[0]!.map((_, c) => Math.max(...table.map((line) => line[c]!.length)));
const line = (cells: string[]): string => `| ${cells.map((cell, c) => (c === 0 || c === 6 ? cell.padEnd(widths[c]!) : cell.padStart(widths[c]!))).join(" | ")} |`;
console.log(line(table[0]!));
console.log(`| ${widths.map((w, c) => (c === 0 || c === 6 ? "-".repeat(w) : `${"-".repeat(w - 1)}:`)).join(" | ")} |`);
for (const cells of table.slice(1)) console.log(line(cells));
console.log();
for (const r of rows) console.log(`${r.id}: ${r.title}${r.extra ? `  ${JSON.stringify(r.extra)}` : ""}`);

// The targets, met or not, from this run's rows (printed, never a pass/fail).
const row = (id: string): BenchRow | undefined => rows.find((r) => r.id === id && !r.skipped);
const targets: { target: string; measured: string; met: boolean | undefined }[] = [];
const check = (target: string, value: number | undefined, unit: string, met: (v: number) => boolean, note = ""): void => {
  targets.push({ target, measured: value === undefined ? "not measured" : `${num(value, 2)}${unit}${note}`, met: value === undefined ? undefined : met(value) });
};
/** For a latency row: how much of the machine's CPU its host took meanwhile, when any. */
const stealNote = (id: string): string => {
  const steal = row(id)?.extra?.stealPct;
  return typeof steal === "number" && steal > 0 ? ` (the host took ${steal}% of the CPU meanwhile)` : "";
};
const w1 = row("W1");
const j = row("J");
/** The median of a row's cold runs (each process's first, unmeasured run), if it has them. */
const coldMedian = (r: BenchRow | undefined): number | undefined => {
  const runs = typeof r?.extra?.coldRuns === "string" ? r.extra.coldRuns.split(", ").map(Number).sort((x, y) => x - y) : [];
  return runs.length > 0 ? runs[(runs.length - 1) >> 1] : undefined;
};
const w1Cold = coldMedian(w1);
const w1CeilingCold = coldMedian(row("W1-ceiling"));
const coldNote = w1Cold && w1CeilingCold ? ` (fresh processes' first runs: ${num(w1Cold / w1CeilingCold, 2)} ×)` : "";
if (w1) check("W1 ≥ 0.5 × its raw grpc-js ceiling", ratio(w1), " ×", (v) => v >= 0.5, coldNote);
if (w1) check("W1 ≥ 1 × the JetStream row's events/s", j?.eventsPerSecond && w1.eventsPerSecond ? w1.eventsPerSecond / j.eventsPerSecond : undefined, " ×", (v) => v >= 1);
const added = (id: string): number | undefined => {
  const r = row(id);
  const c = r?.ceiling ? row(r.ceiling) : undefined;
  return r?.p99Ms !== undefined && c?.p99Ms !== undefined ? r.p99Ms - c.p99Ms : undefined;
};
/**
 * A hop cannot take time away: an added p99 below zero means the ceiling's own run was
 * disturbed (even the better of its two), and the comparison says nothing.
 */
const checkAdded = (target: string, id: string, limit: number, note = ""): void => {
  const v = added(id);
  if (v !== undefined && v < 0) targets.push({ target, measured: `${num(v, 2)} ms: below zero, the ceiling's runs were disturbed; not a measurement`, met: undefined });
  else check(target, v, " ms", (x) => x <= limit, stealNote(id) + note);
};
const agedAdded = added("W6-1k-2hop-aged");
const agedNote = agedAdded === undefined ? "" : `; sidecars older than their dedup window (W6-1k-2hop-aged): ${num(agedAdded, 2)} ms`;
if (row("W6-1k-1hop")) checkAdded("W6 p99 added by one sidecar hop at 1k events/s ≤ 1 ms", "W6-1k-1hop", 1);
if (row("W6-1k-2hop")) checkAdded("W6 p99 added by two hops at 1k events/s ≤ 2 ms", "W6-1k-2hop", 2, agedNote);
const w7 = row("W7");
const w7n = (k: string): number | undefined => (typeof w7?.extra?.[k] === "number" ? (w7.extra[k] as number) : undefined);
const mib = w7n("rssStoredMiB");
if (w7) check("W7 sidecar RSS ≤ 150 MB with the backlog stored (median, 2-10 s after the burst)", mib === undefined ? undefined : (mib * 2 ** 20) / 1e6, " MB", (v) => v <= 150);
if (w7) check("W7 first redelivery ≤ 1 s after restart (from spawning the process)", w7n("firstDeliveryAfterSpawnMs"), " ms", (v) => v <= 1000);
const stealPct = stealPercent(ticksAtStart, cpuTicks());
if (stealPct !== undefined) {
  console.log();
  console.log(`The host took ${stealPct}% of this machine's CPU time during the run (steal, /proc/stat).`);
}
if (targets.length > 0) {
  console.log();
  console.log(`Targets${quick ? " (--quick: a smoke, not a measurement)" : ""}:`);
  for (const t of targets) console.log(`  ${t.met === undefined ? "?" : t.met ? "met" : "MISSED"}  ${t.target}: ${t.measured}`);
}

const results = {
  started: started.toISOString(),
  quick,
  machine: { cpus: cpus().length, cpu: cpus()[0]?.model, node: process.version, stealPct },
  rows: rows.map((r) => ({ ...r, ratio: ratio(r) })),
  targets,
};
await mkdir(join(here, "results"), { recursive: true });
await writeFile(join(here, "results", quick ? "quick.json" : "latest.json"), `${JSON.stringify(results, null, 2)}\n`);
