import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Delivery, WeftClient } from "../../src/client/index.js";
import { collect, settle, take } from "../support/collect.js";

/**
 * Where the scenarios run: one sidecar today, a mesh of several later. Publishers and
 * subscribers get clients from the topology; the assertions stay the same, only the hops
 * change.
 */
export interface Topology {
  /** A client of the sidecar that events are published to. */
  publisher(): WeftClient;
  /** A client of the i-th subscriber-side sidecar (the same one when there is only one). */
  subscriber(i: number): WeftClient;
  /**
   * Resolves once the publisher's sidecar knows every member of the group that has
   * subscribed so far (in a mesh, interest travels to the origin after `subscribed()`).
   */
  settled?(channel: string, group: string): Promise<void>;
  /**
   * True when subscribers talk to the publisher's own sidecar, so that a group's position
   * in `subscribed()` is the origin's (in a mesh it is the subscriber's sidecar's own).
   */
  sharedLog: boolean;
  dispose(): Promise<void>;
}

let channelCounter = 0;
/** A channel no other scenario uses. */
const fresh = (name: string): string => `conf.${name}.c${++channelCounter}.p${process.pid}`;

const ids = (ds: Delivery[]): string[] => ds.map((d) => d.event.id);

/**
 * The delivery contract (docs/delivery-contract.md), points 1, 2, 4, 5, 6, 8 and 9, as scenarios over real
 * gRPC streams.
 */
export function describeDeliveryContract(name: string, makeTopology: () => Promise<Topology>): void {
  describe(`delivery contract: ${name}`, () => {
    let topo: Topology;
    beforeAll(async () => {
      topo = await makeTopology();
    });
    afterAll(async () => {
      await topo?.dispose();
    });

    it("delivers every published event, intact and in sequence order, to a subscriber", async () => {
      const channel = fresh("basic");
      const sub = topo.subscriber(0).subscribe({ channel, group: "g", from: "earliest" });
      await sub.subscribed();
      await topo.settled?.(channel, "g");
      const published = await topo.publisher().publishMany(
        Array.from({ length: 100 }, (_, i) => ({ channel, data: { i }, type: "test.basic", attributes: { traceparent: `t${i}` } })),
      );
      expect(published.map((p) => p.sequence)).toEqual(Array.from({ length: 100 }, (_, i) => BigInt(i + 1)));
      const got = await take(sub, 100);
      sub.close();
      const bySeq = [...got].sort((a, b) => Number(a.sequence - b.sequence));
      expect(bySeq.map((d) => d.json<{ i: number }>().i)).toEqual(Array.from({ length: 100 }, (_, i) => i));
      expect(bySeq.map((d) => d.event.id)).toEqual(published.map((p) => p.id));
      expect(bySeq.every((d) => d.attempt === 1 && d.event.channel === channel && d.event.type === "test.basic")).toBe(true);
      expect(bySeq[7]!.event.attributes["traceparent"]).toBe("t7");
    });

    it("gives every group every event", async () => {
      const channel = fresh("groups");
      const a = topo.subscriber(0).subscribe({ channel, group: "billing", from: "earliest" });
      const b = topo.subscriber(1).subscribe({ channel, group: "shipping", from: "earliest" });
      await Promise.all([a.subscribed(), b.subscribed()]);
      await topo.settled?.(channel, "billing");
      await topo.settled?.(channel, "shipping");
      const published = await topo.publisher().publishMany(Array.from({ length: 200 }, () => ({ channel, data: "x" })));
      const [ga, gb] = await Promise.all([take(a, 200), take(b, 200)]);
      a.close();
      b.close();
      const want = published.map((p) => p.id).sort();
      expect(ids(ga).sort()).toEqual(want);
      expect(ids(gb).sort()).toEqual(want);
    });

    it("shares a group's events among its members without losing any", async () => {
      const channel = fresh("share");
      const members = [0, 1].map((i) => topo.subscriber(i).subscribe({ channel, group: "workers", from: "earliest", maxInFlight: 10 }));
      await Promise.all(members.map((m) => m.subscribed()));
      await topo.settled?.(channel, "workers");
      const published = await topo.publisher().publishMany(Array.from({ length: 300 }, (_, i) => ({ channel, data: { i } })));
      const seen: Delivery[][] = [[], []];
      const all = new Set<string>();
      await Promise.all(
        members.map((m, i) =>
          collect(
            m,
            () => all.size >= 300,
            (d) => {
              seen[i]!.push(d);
              all.add(d.event.id);
              d.ack();
            },
          ),
        ),
      );
      for (const m of members) m.close();
      expect([...all].sort()).toEqual(published.map((p) => p.id).sort());
      expect(seen[0]!.length).toBeGreaterThan(0);
      expect(seen[1]!.length).toBeGreaterThan(0);
    });

    it("redelivers a nacked event with attempt + 1, after the nack's delay", async () => {
      const channel = fresh("nack");
      const sub = topo.subscriber(0).subscribe({ channel, group: "g", from: "earliest" });
      await sub.subscribed();
      await topo.settled?.(channel, "g");
      const [p] = await topo.publisher().publishMany([{ channel, data: "retry me" }]);
      let nackedAt = 0;
      const got = await take(sub, 3, (d) => {
        if (d.attempt === 1) d.nack();
        else if (d.attempt === 2) {
          nackedAt = Date.now();
          d.nack({ delayMs: 400 });
        } else d.ack();
      });
      const third = Date.now();
      sub.close();
      expect(got.map((d) => d.attempt)).toEqual([1, 2, 3]);
      expect(new Set(ids(got))).toEqual(new Set([p!.id]));
      // The delay is a lower bound of the contract, not a speed figure.
      expect(third - nackedAt).toBeGreaterThanOrEqual(390);
    });

    it("redelivers an event that is not acked within its deadline", async () => {
      const channel = fresh("deadline");
      const sub = topo.subscriber(0).subscribe({ channel, group: "g", from: "earliest", ackDeadlineMs: 300 });
      await sub.subscribed();
      await topo.settled?.(channel, "g");
      const [p] = await topo.publisher().publishMany([{ channel, data: "slow" }]);
      const got = await take(sub, 2, (d) => {
        if (d.attempt === 2) d.ack(); // the first is left to expire
      });
      sub.close();
      expect(got.map((d) => [d.event.id, d.attempt])).toEqual([
        [p!.id, 1],
        [p!.id, 2],
      ]);
    });

    it("dead-letters an event after max attempts, with reason, attempts and original channel", async () => {
      const channel = fresh("dlq");
      const sub = topo.subscriber(0).subscribe({ channel, group: "g", from: "earliest", maxAttempts: 3 });
      const confirmed = await sub.subscribed();
      expect(confirmed.deadLetterChannel).toBe(`${channel}.dlq.g`);
      await topo.settled?.(channel, "g");
      const [poison, fine] = await topo.publisher().publishMany([
        { channel, data: "poison", key: "k" },
        { channel, data: "fine", key: "k" },
      ]);
      const got = await take(sub, 4, (d) => (d.text() === "poison" ? d.nack() : d.ack()));
      expect(got.map((d) => [d.text(), d.attempt])).toEqual([
        ["poison", 1],
        ["poison", 2],
        ["poison", 3],
        ["fine", 1], // the key's next event waited for the dead-lettering
      ]);
      sub.close();
      const dlq = topo.subscriber(0).subscribe({ channel: confirmed.deadLetterChannel, group: "ops", from: "earliest" });
      const [dead] = await take(dlq, 1);
      dlq.close();
      expect(dead!.event.id).toBe(poison!.id);
      expect(dead!.text()).toBe("poison");
      expect(dead!.event.attributes).toMatchObject({
        "weft.dead_letter.reason": "max_attempts",
        "weft.dead_letter.attempts": "3",
        "weft.dead_letter.channel": channel,
        "weft.dead_letter.group": "g",
      });
      expect(fine!.sequence).toBe(2n);
    });

    it("keeps per-key order across parallel members and one in flight per key", async () => {
      const channel = fresh("order");
      const members = [0, 1, 2].map((i) =>
        topo.subscriber(i % 2).subscribe({ channel, group: "ordered", from: "earliest", maxInFlight: 20 }),
      );
      await Promise.all(members.map((m) => m.subscribed()));
      await topo.settled?.(channel, "ordered");
      const keys = ["a", "b", "c", "d", "e"];
      const events = Array.from({ length: 250 }, (_, i) => ({ channel, key: keys[i % keys.length]!, data: { i } }));
      await topo.publisher().publishMany(events);
      const inFlight = new Map<string, number>();
      const order = new Map<string, number[]>();
      const memberOf = new Map<string, Set<number>>();
      const violations: string[] = [];
      let total = 0;
      await Promise.all(
        members.map((m, mi) =>
          collect(
            m,
            () => total >= 250,
            (d) => {
              const key = d.event.key;
              if (inFlight.get(key)) violations.push(`${key}#${d.sequence} delivered while another ${key} was in flight`);
              inFlight.set(key, 1);
              (order.get(key) ?? order.set(key, []).get(key)!).push(d.json<{ i: number }>().i);
              (memberOf.get(key) ?? memberOf.set(key, new Set()).get(key)!).add(mi);
              // Handle in the background, finishing in random order, while more deliveries arrive.
              setTimeout(() => {
                inFlight.set(key, 0);
                total++;
                d.ack();
              }, Math.random() * 5);
            },
          ),
        ),
      );
      for (const m of members) m.close();
      expect(violations).toEqual([]);
      for (const [k, is] of order) {
        const want = events.map((e, i) => (e.key === k ? i : -1)).filter((i) => i >= 0);
        expect(is).toEqual(want);
        expect(memberOf.get(k)!.size).toBe(1); // key affinity while membership is stable
      }
    });

    it("stores a re-published (source, id) once and acks it with the original sequence", async () => {
      const channel = fresh("dedup");
      const pub = topo.publisher();
      const event = { channel, id: "order-1", source: "//test/dedup", data: "once" };
      const [first, sameBatch] = await pub.publishMany([event, event]);
      const again = await pub.publish(event);
      const other = await pub.publish({ ...event, id: "order-2" });
      expect(first!.duplicate).toBe(false);
      expect(sameBatch).toMatchObject({ sequence: first!.sequence, duplicate: true });
      expect(again).toMatchObject({ sequence: first!.sequence, duplicate: true });
      expect(other.sequence).toBe(first!.sequence + 1n);
      const sub = topo.subscriber(0).subscribe({ channel, group: "g", from: "earliest" });
      const got = await take(sub, 2);
      await settle();
      const extra = await Promise.race([sub[Symbol.asyncIterator]().next().then(() => true), settle(200).then(() => false)]);
      sub.close();
      expect(ids(got).sort()).toEqual(["order-1", "order-2"]);
      expect(extra).toBe(false);
    });

    it("starts a new group at latest, earliest, a sequence or a time, and resumes an existing one", async () => {
      const channel = fresh("start");
      const pub = topo.publisher();
      await pub.publishMany(Array.from({ length: 5 }, (_, i) => ({ channel, data: { i } })));
      await settle(20);
      const middle = new Date();
      await settle(20);
      await pub.publishMany(Array.from({ length: 5 }, (_, i) => ({ channel, data: { i: i + 5 } })));

      const latest = topo.subscriber(0).subscribe({ channel, group: "latest", from: "latest" });
      const confirmed = await latest.subscribed();
      expect(confirmed.created).toBe(true);
      if (topo.sharedLog) expect(confirmed.ackedThrough).toBe(10n);
      await topo.settled?.(channel, "latest");
      await pub.publish({ channel, data: { i: 10 } });
      const earliest = topo.subscriber(0).subscribe({ channel, group: "earliest", from: "earliest" });
      const fromSeq = topo.subscriber(0).subscribe({ channel, group: "seq", from: { sequence: 4 } });
      const fromTime = topo.subscriber(0).subscribe({ channel, group: "time", from: { time: middle } });
      const seqs = async (sub: typeof latest, n: number) => (await take(sub, n)).map((d) => Number(d.sequence)).sort((a, b) => a - b);
      expect(await seqs(latest, 1)).toEqual([11]);
      expect(await seqs(earliest, 11)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
      expect(await seqs(fromSeq, 8)).toEqual([4, 5, 6, 7, 8, 9, 10, 11]);
      expect(await seqs(fromTime, 6)).toEqual([6, 7, 8, 9, 10, 11]);
      for (const s of [latest, earliest, fromSeq, fromTime]) s.close();

      // An existing group resumes where it left off and ignores the start position.
      const resume1 = topo.subscriber(0).subscribe({ channel, group: "resume", from: "earliest", maxInFlight: 1 });
      await take(resume1, 3);
      resume1.close();
      await resume1.closed;
      const resume2 = topo.subscriber(0).subscribe({ channel, group: "resume", from: "earliest" });
      const again = await resume2.subscribed();
      expect(again.created).toBe(false);
      expect(await seqs(resume2, 8)).toEqual([4, 5, 6, 7, 8, 9, 10, 11]);
      resume2.close();
    });

    it("takes back a closing member's unacked deliveries without counting an attempt", async () => {
      const channel = fresh("goodbye");
      await topo.publisher().publishMany(Array.from({ length: 10 }, (_, i) => ({ channel, data: { i } })));
      const first = topo.subscriber(0).subscribe({ channel, group: "g", from: "earliest", maxInFlight: 3 });
      const handled = await take(first, 3); // acked; the sidecar refills the credits at once
      first.close();
      await first.closed;
      const second = topo.subscriber(1).subscribe({ channel, group: "g", from: "earliest", maxInFlight: 3 });
      const rest = await take(second, 7);
      second.close();
      expect(handled.map((d) => Number(d.sequence))).toEqual([1, 2, 3]);
      expect(rest.map((d) => Number(d.sequence)).sort((a, b) => a - b)).toEqual([4, 5, 6, 7, 8, 9, 10]);
      expect(rest.map((d) => d.attempt)).toEqual([1, 1, 1, 1, 1, 1, 1]);
    });

    it("never has more deliveries in flight than the member's credits", async () => {
      const channel = fresh("credits");
      const sub = topo.subscriber(0).subscribe({ channel, group: "g", from: "earliest", maxInFlight: 3 });
      await sub.subscribed();
      await topo.settled?.(channel, "g");
      await topo.publisher().publishMany(Array.from({ length: 10 }, (_, i) => ({ channel, data: { i } })));
      const it = sub[Symbol.asyncIterator]();
      const held: Delivery[] = [];
      for (let i = 0; i < 3; i++) held.push((await it.next()).value as Delivery);
      const fourth = it.next();
      const early = await Promise.race([fourth.then(() => "delivered"), settle(400).then(() => "held back")]);
      expect(early).toBe("held back");
      held[0]!.ack();
      const next = (await fourth).value as Delivery;
      expect(held.map((d) => Number(d.sequence))).toEqual([1, 2, 3]);
      expect(Number(next.sequence)).toBe(4);
      const fifth = it.next();
      expect(await Promise.race([fifth.then(() => "delivered"), settle(300).then(() => "held back")])).toBe("held back");
      sub.close();
    });
  });
}
