import { afterEach, describe, expect, it } from "vitest";
import type { Delivery, SubscriptionStatus } from "../src/client/index.js";
import { collect, eventually } from "./support/collect.js";
import { type TestSidecar, startSidecar } from "./support/sidecar.js";

describe("client reconnect", () => {
  let t: TestSidecar | undefined;
  afterEach(async () => {
    await t?.dispose();
    t = undefined;
  });

  it("resumes a subscription across a sidecar restart and receives everything, redeliveries marked", async () => {
    t = await startSidecar();
    const channel = "reconnect.orders";
    const publisher = t.client();
    const subscriber = t.client();
    const sub = subscriber.subscribe({ channel, group: "g", from: "earliest", maxInFlight: 5 });
    await sub.subscribed();
    const before = await publisher.publishMany(Array.from({ length: 30 }, (_, i) => ({ channel, data: { i } })));

    // Take 10, ack 7 and hold 3 unacked, then restart the sidecar under the client's feet.
    const held: Delivery[] = [];
    const first = await collect(
      sub,
      (seen) => seen.length >= 10,
      (d) => (held.length < 3 ? void held.push(d) : d.ack()),
    );
    const restarting = t.restart();
    // Published while the sidecar is down or coming back: the client retries until stored.
    const during = publisher.publishMany(Array.from({ length: 20 }, (_, i) => ({ channel, data: { i: 30 + i } })));
    await restarting;
    const after = await during;
    for (const d of held) d.ack(); // acks on the old stream are void: these must come again

    const all = new Set([...before, ...after].map((p) => p.id));
    const acked = new Set(first.filter((d) => !held.includes(d)).map((d) => d.event.id));
    const redelivered: Delivery[] = [];
    await collect(
      sub,
      () => acked.size >= all.size,
      (d) => {
        if (d.attempt > 1) redelivered.push(d);
        acked.add(d.event.id);
        d.ack();
      },
    );
    sub.close();
    expect([...acked].sort()).toEqual([...all].sort());
    const heldIds = held.map((d) => d.event.id).sort();
    expect(redelivered.map((d) => d.event.id).filter((id) => heldIds.includes(id)).sort()).toEqual(heldIds);
    expect(redelivered.every((d) => d.attempt >= 2)).toBe(true);
    // Nothing was stored twice although the client re-sent what it was unsure of.
    expect(t.sidecar.log.head(channel).last).toBe(50);
  });

  it("tells onStatus once when the sidecar goes away and once when the subscription is back", async () => {
    t = await startSidecar();
    const channel = "reconnect.status";
    const statuses: SubscriptionStatus[] = [];
    const sub = t.client().subscribe({ channel, group: "g", from: "earliest", onStatus: (s) => statuses.push(s) });
    await sub.subscribed();
    expect(statuses).toEqual([]);
    await t.stop();
    await eventually(() => statuses.length === 1, 20_000, "the disconnected status");
    expect(statuses[0]).toMatchObject({ type: "disconnected" });
    await t.start();
    await eventually(() => statuses.length === 2, 20_000, "the reconnected status");
    expect(statuses[1]).toMatchObject({ type: "reconnected", subscribed: { created: false } });
    await t.client().publish({ channel, data: "after" });
    const [d] = await collect(sub, (seen) => seen.length === 1);
    expect(d!.text()).toBe("after");
    sub.close();
    await sub.closed;
    expect(statuses).toHaveLength(2);
  });
});
