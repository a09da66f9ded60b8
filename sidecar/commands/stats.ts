import { AdminClient } from "../../src/client/index.js";
import type { StatsResponse } from "../../src/gen/weft/v1/admin_pb.js";
import { type AdminOptions, describeFailure, jsonNumber, timestampMs } from "./admin-connection.js";
import { note, writeLine } from "./output.js";
import { readClientTls } from "./client-tls.js";
import { reachSidecar } from "./reach-sidecar.js";
import { formatTable, humanTime } from "./table.js";

/** The options of `weft stats`. */
export interface StatsOptions extends AdminOptions {
  watch?: boolean;
  /** Time between the two readings (and between lines with --watch), ms. */
  interval: number;
}

const COUNTERS = ["published", "stored", "forwarded", "acked"] as const;
type Counter = (typeof COUNTERS)[number];

/**
 * `weft stats`: the four rates of the sidecar (events published, stored, forwarded to
 * peers and acked by handlers, per second), from two readings of its counters one
 * interval apart. With --watch, a line per interval until SIGINT or SIGTERM.
 * @returns the exit status: 0, also when stopped by a signal.
 */
export async function statsCommand(o: StatsOptions): Promise<number> {
  const tls = await readClientTls(o);
  await reachSidecar(o.to, o.timeout, tls);
  const admin = new AdminClient(o.to, { timeoutMs: o.timeout, ...(tls ? { tls } : {}), ...(o.token ? { token: o.token } : {}) });
  const stop = new AbortController();
  const onSignal = (): void => stop.abort();
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  try {
    let previous = await admin.stats();
    let lines = 0;
    while (!stop.signal.aborted) {
      await sleep(o.interval, stop.signal);
      if (stop.signal.aborted) break;
      const current = await admin.stats();
      if (timestampMs(current.startTime) !== timestampMs(previous.startTime)) {
        note(`weft stats: the sidecar restarted (its counters start again at 0); next reading in ${o.interval} ms`);
        previous = current;
        continue;
      }
      const seconds = Math.max(0.001, ((timestampMs(current.time) ?? 0) - (timestampMs(previous.time) ?? 0)) / 1000);
      const rates = Object.fromEntries(COUNTERS.map((c) => [c, Math.round((Number(current[c] - previous[c]) / seconds) * 1000) / 1000])) as Record<Counter, number>;
      if (o.json) await writeLine(JSON.stringify(sampleJson(current, seconds, rates)));
      else if (o.watch) await writeLine(watchLine(current, rates, lines++ === 0));
      else for (const line of table(current, seconds, rates)) await writeLine(line);
      previous = current;
      if (!o.watch) break;
    }
    return 0;
  } catch (e) {
    throw describeFailure(e, o.to);
  } finally {
    admin.close();
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
  }
}

function sampleJson(s: StatsResponse, seconds: number, rates: Record<Counter, number>): Record<string, unknown> {
  return {
    node: s.nodeId,
    time: new Date(timestampMs(s.time) ?? 0).toISOString(),
    intervalMs: Math.round(seconds * 1000),
    perSecond: rates,
    totals: Object.fromEntries(COUNTERS.map((c) => [c, jsonNumber(s[c])])),
  };
}

function table(s: StatsResponse, seconds: number, rates: Record<Counter, number>): string[] {
  const header = `node ${s.nodeId}, over ${seconds.toFixed(1)}s (counting since ${humanTime(timestampMs(s.startTime))}):`;
  const columns = [{ header: "" }, ...COUNTERS.map((c) => ({ header: c.toUpperCase(), right: true }))];
  return [header, ...formatTable(columns, [["per second", ...COUNTERS.map((c) => rates[c].toFixed(1))], ["total", ...COUNTERS.map((c) => String(s[c]))]])];
}

const WATCH_COLUMNS = ["TIME", ...COUNTERS.map((c) => `${c.toUpperCase()}/S`)];

function watchLine(s: StatsResponse, rates: Record<Counter, number>, first: boolean): string {
  const time = humanTime(timestampMs(s.time)).slice(11, 19);
  const cells = [time, ...COUNTERS.map((c) => rates[c].toFixed(1))];
  const row = cells.map((cell, i) => (i === 0 ? cell.padEnd(8) : cell.padStart(Math.max(12, WATCH_COLUMNS[i]!.length)))).join("  ");
  if (!first) return row;
  const head = WATCH_COLUMNS.map((h, i) => (i === 0 ? h.padEnd(8) : h.padStart(Math.max(12, h.length)))).join("  ");
  return `${head}  (node ${s.nodeId})\n${row}`;
}

/** Waits `ms`, or less when `signal` aborts. */
function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done, { once: true });
    function done(): void {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    }
  });
}
