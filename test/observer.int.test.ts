import { afterEach, describe, expect, it } from "vitest";
import { NO_OBSERVER, type Observer } from "../src/ops/observer.js";
import { eventually, take } from "./support/collect.js";
import { freePort } from "./support/process.js";
import { type TestSidecar, startSidecar } from "./support/sidecar.js";
import { settled } from "./support/mesh.js";

/** Counts what an observer is told, by hook and channel. */
function counting(): { observer: Observer; counts: Map<string, number> } {
  const counts = new Map<string, number>();
  const add = (key: string, n = 1): void => void counts.set(key, (counts.get(key) ?? 0) + n);
  return {
    counts,
    observer: {
      ...NO_OBSERVER,
      published: (channel, n) => add(`published ${channel}`, n),
      stored: (channel, n, _bytes, copies) => {
        add(`stored ${channel}`, n);
        add(`stored copies ${channel}`, copies.count);
      },
      deduplicated: (channel) => add(`deduplicated ${channel}`),
      forwarded: (peer, channel, group, n) => add(`forwarded ${peer} ${channel}/${group}`, n),
      delivered: (channel, group, ds) => add(`delivered ${channel}/${group}`, ds.length),
      acked: (channel, group) => add(`acked ${channel}/${group}`),
      peerLink: (peer, up) => add(`link ${peer} ${up ? "up" : "down"}`),
    },
  };
}

describe("the observer (where metrics, logs and traces hook in)", () => {
  const started: TestSidecar[] = [];
  afterEach(async () => {
    for (const s of started.splice(0)) await s.dispose();
  });

  it("is told the four rates along one hop: published and stored at A, forwarded to B, stored, delivered and acked at B", async () => {
    const [pa, pb] = [await freePort(), await freePort()];
    const peers = [`127.0.0.1:${pa}`, `127.0.0.1:${pb}`];
    const [oa, ob] = [counting(), counting()];
    const a = await startSidecar({ nodeId: "a", peerListen: peers[0]!, peers }, { observer: oa.observer });
    const b = await startSidecar({ nodeId: "b", peerListen: peers[1]!, peers }, { observer: ob.observer });
    started.push(a, b);
    const channel = "observed.orders";
    const sub = b.client().subscribe({ channel, group: "g", from: "earliest" });
    await sub.subscribed();
    await settled(a, [b], channel, "g");
    const events = Array.from({ length: 20 }, (_, i) => ({ channel, id: `e${i}`, source: "//test", data: { i } }));
    await a.client().publishMany(events);
    await a.client().publishMany(events.slice(0, 5)); // duplicates
    await take(sub, 20);
    sub.close();
    await eventually(() => (ob.counts.get(`acked ${channel}/g`) ?? 0) === 20, 20_000, "acks observed");
    expect(oa.counts.get(`published ${channel}`)).toBe(25);
    expect(oa.counts.get(`stored ${channel}`)).toBe(20);
    expect(oa.counts.get(`stored copies ${channel}`)).toBe(0);
    expect(oa.counts.get(`deduplicated ${channel}`)).toBe(5);
    // A forward is sent again after a relink (e.g. when two links crossed at start): at least once each.
    expect(oa.counts.get(`forwarded b ${channel}/g`)).toBeGreaterThanOrEqual(20);
    expect(oa.counts.get("link b up")).toBeGreaterThanOrEqual(1);
    // B holds the relay copies in the channel itself, and delivers them as the group's events.
    expect(ob.counts.get(`stored ${channel}`)).toBe(20);
    expect(ob.counts.get(`stored copies ${channel}`)).toBe(20);
    expect(ob.counts.get(`delivered ${channel}/g`)).toBe(20);
  });
});
