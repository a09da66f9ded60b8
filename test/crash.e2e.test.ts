import { rm } from "node:fs/promises";
import { afterEach, describe, expect, it } from "vitest";
import { type Delivery, type Published, type WeftClient, connect } from "../src/client/index.js";
import { collect } from "./support/collect.js";
import { type SidecarProcess, freePort, spawnSidecar } from "./support/process.js";
import { tempDir } from "./support/sidecar.js";

/**
 * Crash safety with real processes: `weft sidecar` is killed with SIGKILL and restarted on
 * the same data directory. Every event whose publish was acked must be in the log exactly
 * once, and deliveries that were in flight must come again.
 */
describe("crash safety (kill -9)", () => {
  const cleanup: (() => Promise<void> | void)[] = [];
  afterEach(async () => {
    for (const c of cleanup.splice(0).reverse()) await c();
  });

  async function start(dataDir: string, port: number): Promise<SidecarProcess> {
    const p = await spawnSidecar(dataDir, port);
    cleanup.push(() => p.kill9());
    return p;
  }
  function client(address: string): WeftClient {
    const c = connect(address);
    cleanup.push(() => c.close());
    return c;
  }

  /** Reads the first `expected` events of the channel with a fresh group, by sequence. */
  async function readAll(address: string, channel: string, expected: number): Promise<Delivery[]> {
    const sub = client(address).subscribe({ channel, group: `audit-${Date.now()}`, from: "earliest", maxInFlight: 1000 });
    const got = await collect(sub, (seen) => seen.length >= expected);
    sub.close();
    return got.sort((a, b) => Number(a.sequence - b.sequence));
  }

  it("keeps every acked event exactly once and redelivers in-flight deliveries", async () => {
    const dataDir = await tempDir();
    cleanup.push(() => rm(dataDir, { recursive: true, force: true }));
    const port = await freePort();
    const channel = "crash.orders";
    let sidecar = await start(dataDir, port);

    // Phase 1: publish and wait for every ack; hold some deliveries in flight.
    const pub = client(sidecar.address);
    const acked: Published[] = await pub.publishMany(Array.from({ length: 1000 }, (_, i) => ({ channel, data: { i } })));
    const sub = client(sidecar.address).subscribe({ channel, group: "workers", from: "earliest", maxInFlight: 10 });
    const inflight = await collect(sub, (seen) => seen.length >= 10, () => {});

    // Phase 2: three rounds of publishing with a kill -9 in the middle of each.
    let attempted = acked.length;
    for (let round = 0; round < 3; round++) {
      const p = round === 0 ? pub : client(sidecar.address);
      const target = acked.length + 100;
      const racing = Array.from({ length: 20 }, () => {
        attempted += 100;
        return p.publishMany(Array.from({ length: 100 }, (_, i) => ({ channel, data: { round, i } }))).then(
          (r) => acked.push(...r),
          () => {}, // unacked when the client closes: may be lost or stored, never duplicated
        );
      });
      while (acked.length < target) await new Promise((r) => setTimeout(r, 1));
      await sidecar.kill9();
      p.close();
      if (round === 0) sub.close();
      await Promise.all(racing);
      sidecar = await start(dataDir, port);
    }

    // After the last restart: account for every event, Jepsen style. A marker published now
    // is the last event of the log, so reading up to it reads everything that was stored.
    const marker = await client(sidecar.address).publish({ channel, data: "marker" });
    const log = (await readAll(sidecar.address, channel, Number(marker.sequence))).slice(0, -1);
    const ids = log.map((d) => d.event.id);
    const inLog = new Set(ids);
    const lost = acked.filter((p) => !inLog.has(p.id));
    const duplicated = ids.length - inLog.size;
    console.log(
      `crash accounting: attempted ${attempted}, acked ${acked.length}, in log ${ids.length}, lost ${lost.length}, duplicated ${duplicated}`,
    );
    expect(duplicated).toBe(0); // exactly once in the log
    expect(log.map((d) => Number(d.sequence))).toEqual(ids.map((_, i) => i + 1)); // no gaps
    expect(lost).toEqual([]); // every acked event survived
    for (const p of acked) expect(log[Number(p.sequence) - 1]!.event.id).toBe(p.id);

    // The group resumes: the 10 that were in flight come again with attempt 2.
    const resumed = client(sidecar.address).subscribe({ channel, group: "workers", from: "latest", maxInFlight: 100 });
    const again = await collect(resumed, (seen) => inflight.every((d) => seen.some((s) => s.event.id === d.event.id)));
    resumed.close();
    for (const d of inflight) {
      const redelivery = again.find((s) => s.event.id === d.event.id)!;
      expect(redelivery.attempt).toBe(2);
    }
  });
});
