/**
 * W7: a backlog. One `weft sidecar` process; the group is created first (subscribe from
 * "earliest", then close), then 1M events of 256 B are published while no subscriber is
 * connected. Measured:
 *
 * - the sidecar's memory with the backlog stored (VmRSS from /proc/PID/status: the median of
 *   samples every 0.5 s from 2 s to 10 s after the burst, the first and the highest of them;
 *   VmHWM, the peak), and the data directory's size;
 * - the drain rate: a subscriber reads and acks all of them (first to last delivery), and
 *   its time to first delivery;
 * - recovery: a new backlog is published, a subscriber holds some deliveries unacked, the
 *   sidecar is killed with SIGKILL and restarted on the same data dir; the time from the
 *   restart (spawn, and "listening") to the first delivery to a fresh subscriber.
 *
 * --quick: 20k events.
 */
import { du } from "./support/w7-du.js";
import { connect } from "../../src/client/index.js";
import { heapOf, procMemory, round1, sleep, stamped, startOne } from "./support/hop-procs.js";
import type { BenchRow, Workload } from "./types.js";

const PAYLOAD = 256;

export const workload: Workload = async (options) => {
  const total = options.quick ? 20_000 : 1_000_000;
  const leftover = options.quick ? 2_000 : 50_000;
  const channel = `bench.w7.r${Date.now()}`;
  const group = "w7";
  let sidecar = await startOne(options.scratch, "w7");
  const extra: Record<string, number | string> = { events: total };
  try {
    // The group first, so that every event published afterwards is its backlog.
    {
      const c = connect(sidecar.address);
      const sub = c.subscribe({ channel, group, from: "earliest", maxInFlight: 1000 });
      await sub.subscribed();
      sub.close();
      c.close();
    }

    // 1M events with the subscriber stopped.
    const pub = connect(sidecar.address, { maxOutstanding: 20_000 });
    const data = stamped(PAYLOAD, 0);
    const publishStart = performance.now();
    let peakDuringPublish = 0;
    const inflight: Promise<unknown>[] = [];
    const chunk = 1000;
    for (let i = 0; i < total; i += chunk) {
      const n = Math.min(chunk, total - i);
      inflight.push(pub.publishMany(Array.from({ length: n }, () => ({ channel, data }))));
      if (inflight.length >= 16) await inflight.shift();
      if (i % 100_000 === 0) peakDuringPublish = Math.max(peakDuringPublish, (await procMemory(sidecar.pid)).rssMiB);
    }
    await Promise.all(inflight);
    extra["publishEventsPerSecond"] = Math.round(total / ((performance.now() - publishStart) / 1000));
    pub.close();
    // RSS while the backlog is stored: sampled every 0.5 s from 2 s to 10 s after the burst,
    // the median reported. A compaction still under way maps LevelDB's tables and shows as
    // file-backed RSS for a while: the max and the first sample say how much.
    await sleep(2000);
    const samples: Awaited<ReturnType<typeof procMemory>>[] = [];
    for (let i = 0; i < 17; i++) {
      if (i > 0) await sleep(500);
      samples.push(await procMemory(sidecar.pid));
    }
    const stored = [...samples].sort((x, y) => x.rssMiB - y.rssMiB)[samples.length >> 1]!;
    extra["rssStoredMiB"] = stored.rssMiB;
    extra["rssStoredAnonMiB"] = stored.anonMiB;
    extra["rssStoredFileMiB"] = stored.fileMiB;
    extra["rssStoredAt2sMiB"] = samples[0]!.rssMiB;
    extra["rssStoredMaxMiB"] = Math.max(...samples.map((x) => x.rssMiB));
    extra["rssPeakMiB"] = samples[samples.length - 1]!.hwmMiB;
    extra["dataDirMiB"] = round1((await du(sidecar.dataDir)) / 2 ** 20);
    extra["targetRssMiB"] = 150;
    for (const [k, v] of Object.entries(await heapOf(sidecar))) extra[`stored_${k}`] = v;
    // The same backlog after a clean restart: what holding 1M events costs, apart from what
    // the publish burst left behind (V8 heap not given back, malloc arenas, memtables).
    await sidecar.terminate();
    sidecar = await sidecar.restart();
    await sleep(2000);
    extra["rssStoredAfterCleanRestartMiB"] = (await procMemory(sidecar.pid)).rssMiB;
    for (const [k, v] of Object.entries(await heapOf(sidecar))) extra[`restarted_${k}`] = v;

    // Drain all of them.
    {
      const c = connect(sidecar.address);
      const sub = c.subscribe({ channel, group, from: "earliest", maxInFlight: 5000 });
      const start = performance.now();
      let first = 0;
      let last = 0;
      let received = 0;
      const timeout = setTimeout(() => sub.close(), options.quick ? 120_000 : 900_000);
      for await (const d of sub) {
        d.ack();
        last = performance.now();
        if (received++ === 0) first = last;
        if (received === total) break;
      }
      clearTimeout(timeout);
      sub.close();
      c.close();
      extra["drained"] = received;
      extra["drainEventsPerSecond"] = Math.round(received / ((last - first) / 1000 || 1));
      extra["drainFirstDeliveryMs"] = Math.round(first - start);
      const afterDrain = await procMemory(sidecar.pid);
      extra["rssAfterDrainMiB"] = afterDrain.rssMiB;
      extra["rssPeakWithDrainMiB"] = afterDrain.hwmMiB;
    }

    // A backlog left, deliveries held unacked, then kill -9 and restart on the same data dir.
    {
      const p = connect(sidecar.address, { maxOutstanding: 20_000 });
      for (let i = 0; i < leftover; i += chunk) await p.publishMany(Array.from({ length: Math.min(chunk, leftover - i) }, () => ({ channel, data })));
      p.close();
      const c = connect(sidecar.address);
      const sub = c.subscribe({ channel, group, from: "earliest", maxInFlight: 100, reconnect: false });
      let held = 0;
      for await (const _d of sub) if (++held >= 100) break; // never acked: in flight at the kill
      await sidecar.kill9();
      sub.close();
      c.close();
      extra["backlogAtKill"] = leftover;
      extra["heldUnackedAtKill"] = held;
    }
    sidecar = await sidecar.restart();
    {
      const c = connect(sidecar.address);
      const sub = c.subscribe({ channel, group, from: "earliest", maxInFlight: 1000 });
      let attempt = 0;
      let at = 0;
      for await (const d of sub) {
        at = performance.now();
        attempt = d.attempt;
        break;
      }
      sub.close();
      c.close();
      extra["firstDeliveryAfterRestartMs"] = Math.round(at - sidecar.listeningAt);
      extra["firstDeliveryAfterSpawnMs"] = Math.round(at - sidecar.spawnedAt);
      extra["restartToListeningMs"] = Math.round(sidecar.listeningAt - sidecar.spawnedAt);
      extra["firstDeliveryAttempt"] = attempt;
      extra["targetFirstDeliveryMs"] = 1000;
      extra["rssAfterRestartMiB"] = (await procMemory(sidecar.pid)).rssMiB;
    }
    extra["rssDuringPublishMaxSampledMiB"] = peakDuringPublish;
    return [
      {
        id: "W7",
        title: `backlog: ${total} events of 256 B stored with the subscriber stopped, then drained; kill -9 and restart`,
        eventsPerSecond: extra["drainEventsPerSecond"] as number,
        megabytesPerSecond: round1(((extra["drainEventsPerSecond"] as number) * PAYLOAD) / 1e6),
        rssMiB: stored.rssMiB,
        extra,
      },
    ];
  } finally {
    await sidecar.terminate();
  }
};
