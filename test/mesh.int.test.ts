import { afterEach, describe, expect, it } from "vitest";
import type { Delivery, Subscription } from "../src/client/index.js";
import { collect, eventually, settle, take } from "./support/collect.js";
import { copiesHeld, linked, settled, startMesh } from "./support/mesh.js";
import { Dialer } from "../src/mesh/dialer.js";
import { SILENT_LOGGER } from "../src/ops/logger.js";
import { freePort } from "./support/process.js";
import { type TestSidecar, startSidecar } from "./support/sidecar.js";

/**
 * The mesh with real sidecars on loopback: events published on one sidecar reach groups
 * behind others, acks travel back to the origin, groups span sidecars, and a peer that
 * leaves gives its share to the others.
 */
describe("mesh", () => {
  const started: TestSidecar[] = [];
  afterEach(async () => {
    for (const s of started.splice(0)) await s.dispose();
  });
  async function mesh(names: string[], peerTimeoutMs = 1000): Promise<TestSidecar[]> {
    const m = await startMesh(names, { peerTimeoutMs });
    started.push(...m);
    return m;
  }
  const group = (s: TestSidecar, channel: string, g: string) => s.sidecar.engine.status().find((x) => x.channel === channel && x.group === g);

  it("links every pair once when every sidecar has the same peer list, its own address included", async () => {
    const [a, b, c] = await mesh(["a", "b", "c"]);
    for (const s of [a!, b!, c!]) {
      const others = s.sidecar.mesh.status().map((p) => p.nodeId).sort();
      expect(others).toEqual(["a", "b", "c"].filter((n) => n !== s.sidecar.config.nodeId));
    }
  });

  it("finds peers through a DNS name (every address it resolves to), its own address included", async () => {
    const port = await freePort();
    // "localhost" resolves to this machine: the name stands for the whole mesh, as a headless Service does.
    const a = await startSidecar({ nodeId: "a", peerListen: `127.0.0.1:${port}`, peersDns: [`localhost:${port}`], peersDnsIntervalMs: 1000 });
    started.push(a);
    const b = await startSidecar({ nodeId: "b", peersDns: [`localhost:${port}`], peersDnsIntervalMs: 1000 });
    started.push(b);
    await linked([a, b]);
    expect(b.sidecar.mesh.status().map((p) => p.nodeId)).toEqual(["a"]);
    expect(a.sidecar.mesh.status().map((p) => p.nodeId)).toEqual(["b"]);
  });

  it("delivers events published on A to a subscriber on B, and B's acks drain A's backlog", async () => {
    const [a, b] = await mesh(["a", "b"]);
    const channel = "orders.created";
    const sub = b!.client().subscribe({ channel, group: "billing", from: "earliest", maxInFlight: 200 });
    await sub.subscribed();
    await settled(a!, [b!], channel, "billing");
    const published = await a!.client().publishMany(Array.from({ length: 2000 }, (_, i) => ({ channel, data: { i } })));
    const got = await take(sub, 2000);
    sub.close();
    expect(new Set(got.map((d) => d.event.id))).toEqual(new Set(published.map((p) => p.id)));
    // The subscriber sees each event's sequence at its origin.
    expect(got.map((d) => d.sequence).sort((x, y) => Number(x - y))).toEqual(published.map((p) => p.sequence));
    // A keeps each event until B reports it handled: then its backlog for the group is 0.
    await eventually(() => group(a!, channel, "billing")?.backlog === 0, 20_000, "A's backlog drained");
    expect(group(a!, channel, "billing")!.ackedThrough).toBe(2000);
    expect(a!.sidecar.mesh.status().find((p) => p.nodeId === "b")!.inflight).toBe(0);
    // B kept one relay copy of each, in the channel's own log, and finished them all.
    const copies = await copiesHeld(b!, channel, "billing");
    expect(copies.map((e) => e.origin!.sequence)).toEqual(published.map((p) => Number(p.sequence)));
    expect(b!.sidecar.log.channels()).toEqual([channel]);
    expect(group(b!, channel, "billing")!.backlog).toBe(0);
  });

  it("gives two groups on two sidecars everything, and shares one group across B and C in per-key order", async () => {
    const [a, b, c] = await mesh(["a", "b", "c"]);
    const channel = "orders.placed";
    const billing = b!.client().subscribe({ channel, group: "billing", from: "earliest", maxInFlight: 50 });
    const audit = c!.client().subscribe({ channel, group: "audit", from: "earliest", maxInFlight: 50 });
    const shipping = [b!, c!, c!].map((s) => s.client().subscribe({ channel, group: "shipping", from: "earliest", maxInFlight: 20 }));
    await Promise.all([billing, audit, ...shipping].map((s) => s.subscribed()));
    for (const g of ["billing", "audit", "shipping"]) await settled(a!, [b!, c!], channel, g);

    const keys = Array.from({ length: 40 }, (_, k) => `customer-${k}`);
    const events = Array.from({ length: 1200 }, (_, i) => ({ channel, key: keys[i % keys.length]!, data: { i } }));
    const published = await a!.client().publishMany(events);
    const all = new Set(published.map((p) => p.id));

    const [gotBilling, gotAudit] = await Promise.all([take(billing, 1200), take(audit, 1200)]);
    expect(new Set(gotBilling.map((d) => d.event.id))).toEqual(all);
    expect(new Set(gotAudit.map((d) => d.event.id))).toEqual(all);

    const seen = new Set<string>();
    const byMember = shipping.map(() => [] as Delivery[]);
    await Promise.all(
      shipping.map((s, m) =>
        collect(
          s,
          () => seen.size >= 1200,
          (d) => {
            seen.add(d.event.id);
            byMember[m]!.push(d);
            d.ack();
          },
        ),
      ),
    );
    for (const s of [billing, audit, ...shipping]) s.close();
    expect(seen).toEqual(all);
    // Shared: every member did part of the work, on both sidecars.
    expect(byMember.every((ds) => ds.length > 0)).toBe(true);
    // Each key stayed with one member, and reached it in publish order.
    for (const key of keys) {
      const holders = byMember.map((ds) => ds.filter((d) => d.event.key === key)).filter((ds) => ds.length > 0);
      expect(holders).toHaveLength(1);
      const order = holders[0]!.map((d) => d.json<{ i: number }>().i);
      expect(order).toEqual([...order].sort((x, y) => x - y));
    }
    await eventually(() => ["billing", "audit", "shipping"].every((g) => group(a!, channel, g)?.backlog === 0), 20_000, "A drained");
    // One hop: B and C hold relay copies from A only, each for the group it was forwarded
    // for; neither forwarded what it received, so A holds no copies.
    for (const s of [b!, c!]) {
      const held = await s.sidecar.log.read(channel, 1, 10_000);
      expect(held.every((e) => e.origin?.node === "a" && ["billing", "audit", "shipping"].includes(e.onlyGroup!))).toBe(true);
    }
    expect((await a!.sidecar.log.read(channel, 1, 10_000)).filter((e) => e.origin)).toEqual([]);
  });

  it("forwards at most the peer window per group to a peer whose members do not keep up", async () => {
    const [a, b] = await startMesh(["a", "b"], { peerTimeoutMs: 1000, peerWindow: 50 });
    started.push(a!, b!);
    const channel = "slow.consumer";
    const sub = b!.client().subscribe({ channel, group: "g", from: "earliest", maxInFlight: 10 });
    await sub.subscribed();
    await settled(a!, [b!], channel, "g");
    await a!.client().publishMany(Array.from({ length: 1000 }, (_, i) => ({ channel, data: { i } })));
    await eventually(() => b!.sidecar.log.head(channel).last === 50, 20_000, "B stored a window");
    await settle(300);
    // The rest waits in A's log, not in A's memory nor on the link.
    expect(b!.sidecar.log.head(channel).last).toBe(50);
    expect(a!.sidecar.mesh.status().find((p) => p.nodeId === "b")!.inflight).toBe(50);
    const all = await take(sub, 1000);
    sub.close();
    expect(new Set(all.map((d) => d.json<{ i: number }>().i)).size).toBe(1000);
  });

  it("gives a group's events held by a peer that is gone for good to the members behind the others, after the peer timeout", async () => {
    const [a, b, c] = await mesh(["a", "b", "c"], 1000);
    const channel = "jobs.queued";
    const onB = b!.client().subscribe({ channel, group: "workers", from: "earliest", maxInFlight: 1000 });
    const onC = c!.client().subscribe({ channel, group: "workers", from: "earliest", maxInFlight: 1000 });
    await Promise.all([onB.subscribed(), onC.subscribed()]);
    await settled(a!, [b!, c!], channel, "workers");
    const published = await a!.client().publishMany(Array.from({ length: 400 }, (_, i) => ({ channel, data: { i } })));

    // B's member takes its share and never acks it; C's acks everything.
    const heldOnB: Delivery[] = [];
    const cDone = new Set<string>();
    const drainC = collect(onC, () => cDone.size + heldOnB.length >= 400 && cDone.size >= 400, (d) => {
      cDone.add(d.event.id);
      d.ack();
    });
    await collect(onB, () => heldOnB.length + cDone.size >= 400, (d) => void heldOnB.push(d));
    expect(heldOnB.length).toBeGreaterThan(0);

    // B goes away and does not come back: after the peer timeout, A gives B's share to C.
    await b!.stop();
    started.splice(started.indexOf(b!), 1);
    await drainC;
    onB.close();
    onC.close();
    expect(cDone).toEqual(new Set(published.map((p) => p.id)));
    await eventually(() => group(a!, channel, "workers")?.backlog === 0, 20_000, "A drained");
    expect(a!.sidecar.mesh.status().map((p) => p.nodeId)).toEqual(["c"]);
  });

  it("gives what a sidecar held for a group whose members there all left to the members elsewhere, without counting an attempt", async () => {
    const [a, b, c] = await mesh(["a", "b", "c"], 500);
    const channel = "mail.outbound";
    const onB = b!.client().subscribe({ channel, group: "senders", from: "earliest", maxInFlight: 5 });
    await onB.subscribed();
    await settled(a!, [b!], channel, "senders");
    const published = await a!.client().publishMany(Array.from({ length: 100 }, (_, i) => ({ channel, data: { i } })));
    // B holds all 100 as relay copies; its member handles 5 and leaves cleanly.
    await eventually(async () => (await copiesHeld(b!, channel, "senders")).length === 100, 20_000, "B stored the relay copies");
    const handled = await take(onB, 5);
    onB.close();
    await onB.closed;

    const onC = c!.client().subscribe({ channel, group: "senders", from: "earliest", maxInFlight: 100 });
    const rest = await take(onC, 95);
    onC.close();
    const ids = new Set([...handled, ...rest].map((d) => d.event.id));
    expect(ids).toEqual(new Set(published.map((p) => p.id)));
    expect(rest.every((d) => d.attempt === 1)).toBe(true);
    await eventually(() => group(a!, channel, "senders")?.backlog === 0, 20_000, "A drained");
  });

  it("takes the events of a sidecar whose log was wiped for new ones, not for those it already stored", async () => {
    const [a, b] = await mesh(["a", "b"], 5000);
    const channel = "wiped.events";
    const sub = b!.client().subscribe({ channel, group: "g", from: "earliest" });
    await sub.subscribed();
    await settled(a!, [b!], channel, "g");
    await a!.client().publishMany(Array.from({ length: 10 }, (_, i) => ({ channel, data: `old ${i}` })));
    await take(sub, 10);
    await eventually(() => group(a!, channel, "g")?.backlog === 0, 20_000, "A drained");

    // A loses its data directory and comes back under the same node id and address:
    // its sequences start at 1 again.
    const config = a!.sidecar.config;
    await a!.dispose();
    started.splice(started.indexOf(a!), 1);
    const again = await startSidecar({ ...config, dataDir: undefined, listen: "127.0.0.1:0" });
    started.push(again);
    await settled(again, [b!], channel, "g");
    const published = await again.client().publishMany(Array.from({ length: 10 }, (_, i) => ({ channel, data: `new ${i}` })));
    expect(published[0]!.sequence).toBe(1n);
    const fresh = await take(sub, 10);
    sub.close();
    expect(fresh.map((d) => d.text()).sort()).toEqual(Array.from({ length: 10 }, (_, i) => `new ${i}`));
  });

  it("gives a member one window of credits for its sidecar's own events and those forwarded to it", async () => {
    const [a, b] = await mesh(["a", "b"]);
    const channel = "mixed.origins";
    const sub = a!.client().subscribe({ channel, group: "g", from: "earliest", maxInFlight: 3 });
    await sub.subscribed();
    await settled(b!, [a!], channel, "g");
    await a!.client().publishMany(Array.from({ length: 5 }, (_, i) => ({ channel, data: `a${i}` })));
    await b!.client().publishMany(Array.from({ length: 5 }, (_, i) => ({ channel, data: `b${i}` })));
    await eventually(async () => (await copiesHeld(a!, channel, "g")).length === 5, 20_000, "B's events stored at A");
    const it = sub[Symbol.asyncIterator]();
    const held: Delivery[] = [];
    for (let i = 0; i < 3; i++) held.push((await it.next()).value as Delivery);
    const fourth = it.next();
    expect(await Promise.race([fourth.then(() => "delivered"), settle(400).then(() => "held back")])).toBe("held back");
    for (const d of held) d.ack();
    const rest = [(await fourth).value as Delivery, ...(await take(sub, 6))];
    sub.close();
    expect([...held, ...rest].map((d) => d.text()).sort()).toEqual(["a0", "a1", "a2", "a3", "a4", "b0", "b1", "b2", "b3", "b4"]);
  });

  it("keeps serving when a peer listed in the configuration is not there", async () => {
    const [a] = await mesh(["a"]);
    const channel = "solo.events";
    const sub: Subscription = a!.client().subscribe({ channel, group: "g", from: "earliest" });
    await sub.subscribed();
    await a!.client().publishMany([{ channel, data: "still here" }]);
    const [d] = await take(sub, 1);
    sub.close();
    expect(d!.text()).toBe("still here");
  });
});

describe("dialing peers from DNS", () => {
  it("stops dialing an address three resolutions after DNS stopped giving it", async () => {
    const t = await startSidecar({ nodeId: "dns-owner" });
    let answer = [
      { address: "127.0.0.1", family: 4 },
      { address: "127.0.0.2", family: 4 },
    ];
    const dialer = new Dialer(t.sidecar.mesh, {
      peers: [],
      peersDns: ["mesh.example:1"],
      dnsIntervalMs: 20,
      maxMessageBytes: 1024 * 1024,
      logger: SILENT_LOGGER,
      lookup: async () => answer,
    });
    try {
      dialer.start();
      await eventually(() => dialer.status().length === 2, 10_000, "both addresses dialed");
      answer = [{ address: "127.0.0.1", family: 4 }];
      await eventually(() => dialer.status().length === 1, 10_000, "the address gone from DNS forgotten");
      expect(dialer.status().map((s) => s.address)).toEqual(["127.0.0.1:1"]);
    } finally {
      dialer.stop();
      await t.dispose();
    }
  });
});
