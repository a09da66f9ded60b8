/**
 * W3: one hop of the mesh. A publisher on sidecar A, the subscriber on sidecar B (both
 * `weft sidecar` processes, linked as peers), 256 B events, durable, each delivery acked.
 * Events/s end to end (first publish to last delivery) and publish-to-delivery latency
 * (each event carries the time its publish was called). Ceiling: W1 (one sidecar).
 */
import { type ClientTls, connect } from "../../src/client/index.js";
import { Histogram, procMemory, round1, round3, stampOf, stamped, startPair, warmUp } from "./support/hop-procs.js";
import type { BenchOptions, BenchRow, Workload } from "./types.js";

const PAYLOAD = 256;

export const workload: Workload = async (options) => [await measureHop(options, "w3")];

/** With TLS: the sidecars' flags (per node id) and what the clients connect with. */
export interface HopTls {
  sidecarArgs: (nodeId: string) => string[];
  client: ClientTls;
}

/** One W3 measurement on a fresh pair of sidecars: the row, with id "W3" (the caller may rename it). */
export async function measureHop(options: BenchOptions, tag: string, tls?: HopTls): Promise<BenchRow> {
  const total = options.quick ? 5_000 : 100_000;
  const { a, b } = await startPair(options.scratch, tag, undefined, tls?.sidecarArgs);
  const client = tls ? { tls: tls.client } : {};
  const pub = connect(a.address, { ...client, maxOutstanding: 20_000 });
  const subClient = connect(b.address, client);
  const channel = `bench.w3.r${Date.now()}`;
  try {
    const sub = subClient.subscribe({ channel, group: "w3", from: "latest", maxInFlight: 5000 });
    await sub.subscribed();
    const latency = new Histogram();
    let warm = false;
    let received = 0;
    let firstPublish = 0;
    let lastDelivery = 0;
    let consumed!: () => void;
    const allConsumed = new Promise<void>((r) => (consumed = r));
    const reader = (async () => {
      for await (const d of sub) {
        const now = performance.now();
        d.ack();
        const stamp = stampOf(d.data);
        if (stamp < 0) {
          warm = true;
          continue;
        }
        latency.record(now - stamp);
        lastDelivery = now;
        if (++received === total) {
          consumed();
          break;
        }
      }
    })();
    const warmUpMs = await warmUp(pub, channel, () => warm);

    firstPublish = performance.now();
    const chunk = 1000;
    const inflight: Promise<unknown>[] = [];
    for (let i = 0; i < total; i += chunk) {
      const n = Math.min(chunk, total - i);
      const now = performance.now();
      inflight.push(pub.publishMany(Array.from({ length: n }, () => ({ channel, data: stamped(PAYLOAD, now) }))));
      if (inflight.length >= 16) await inflight.shift();
    }
    await Promise.all(inflight);
    const published = performance.now();
    const timeout = setTimeout(() => consumed(), options.quick ? 60_000 : 300_000);
    await allConsumed;
    clearTimeout(timeout);
    sub.close();
    await reader.catch(() => {});
    const [memA, memB] = await Promise.all([procMemory(a.pid), procMemory(b.pid)]);

    const seconds = (lastDelivery - firstPublish) / 1000;
    const eventsPerSecond = Math.round(received / seconds);
    const row: BenchRow = {
      id: "W3",
      title: "publish on sidecar A → sidecar B → subscriber, 256 B, durable, ack each",
      eventsPerSecond,
      megabytesPerSecond: round1((eventsPerSecond * PAYLOAD) / 1e6),
      p50Ms: round3(latency.quantile(0.5)),
      p99Ms: round3(latency.quantile(0.99)),
      p999Ms: round3(latency.quantile(0.999)),
      rssMiB: Math.max(memA.hwmMiB, memB.hwmMiB),
      ceiling: "W1",
      extra: {
        events: total,
        delivered: received,
        publishEventsPerSecond: Math.round(total / ((published - firstPublish) / 1000)),
        maxMs: round3(latency.max()),
        rssPeakMiBA: memA.hwmMiB,
        rssPeakMiBB: memB.hwmMiB,
        warmUpMs: Math.round(warmUpMs),
        latencyNote: "under saturation: the publisher outruns the hop, so p50/p99 are mostly queueing (≈ events ÷ rate); W6 measures latency at a fixed load",
      },
    };
    if (received < total) row.extra!["note"] = `only ${received} of ${total} delivered before the timeout`;
    return row;
  } finally {
    pub.close();
    subClient.close();
    await Promise.all([a.terminate(), b.terminate()]);
  }
}
