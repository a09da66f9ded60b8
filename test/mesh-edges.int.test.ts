import { afterEach, describe, expect, it } from "vitest";
import type { Delivery, Subscription } from "../src/client/index.js";
import { collect, eventually, settle, take } from "./support/collect.js";
import { copiesHeld, linked, settled, startMesh } from "./support/mesh.js";
import { freePort } from "./support/process.js";
import { RawPeer, groupInterest, hello } from "./support/raw-peer.js";
import { type TestSidecar, startSidecar } from "./support/sidecar.js";

/**
 * Edges of the mesh where events could be lost or stalled: a wiped
 * origin, groups learnt late, frame and event size limits that differ between sidecars,
 * stale relay copies after a restart, and forwards given back.
 */
describe("mesh edges", () => {
  const started: TestSidecar[] = [];
  const closers: (() => void)[] = [];
  afterEach(async () => {
    for (const c of closers.splice(0)) c();
    for (const s of started.splice(0)) await s.dispose().catch(() => {});
  });
  const group = (s: TestSidecar, channel: string, g: string) => s.sidecar.engine.status().find((x) => x.channel === channel && x.group === g);

  /** Collects `n` deliveries within `ms`, holding them (no ack); resolves with what arrived. */
  async function within(sub: Subscription, n: number, ms: number): Promise<Delivery[]> {
    const got: Delivery[] = [];
    await Promise.race([collect(sub, () => got.length >= n, (d) => void got.push(d), ms + 1000).catch(() => {}), settle(ms)]);
    return got;
  }

  it("applies a peer's done reports to the origin log they were for: a wiped origin's new events are not acked by reports about its old ones", async () => {
    const [a, b, c] = await startMesh(["a", "b", "c"], { peerTimeoutMs: 1000 });
    started.push(a!, b!, c!);
    const channel = "wipe.outcomes";
    // B's only member of g holds 5 deliveries at most.
    const onB = b!.client().subscribe({ channel, group: "g", from: "earliest", maxInFlight: 5 });
    await onB.subscribed();
    await settled(a!, [b!], channel, "g");
    await a!.client().publishMany(Array.from({ length: 5 }, (_, i) => ({ channel, data: `old ${i}` })));
    const old = await take(onB, 5, () => {}); // held, not acked

    // A loses its data directory and comes back under the same node id and peer address.
    const config = a!.sidecar.config;
    await a!.dispose();
    started.splice(started.indexOf(a!), 1);
    const a2 = await startSidecar({ ...config, dataDir: undefined, listen: "127.0.0.1:0" });
    started.push(a2);
    await settled(a2, [b!], channel, "g");
    const fresh = await a2.client().publishMany(Array.from({ length: 5 }, (_, i) => ({ channel, data: `new ${i}` })));
    expect(fresh[0]!.sequence).toBe(1n);
    // B stores the new events as new relay copies (other log id): 10 copies.
    await eventually(async () => (await copiesHeld(b!, channel, "g")).length === 10, 20_000, "B stored the new events");

    // B's member acks the OLD events only. B reports "done" for sequences 1..5 to node "a"...
    for (const d of old) d.ack();
    // ...and receives the new ones, which it holds (never acks).
    const heldNew = await take(onB, 5, () => {});
    expect(heldNew.map((d) => d.text()).sort()).toEqual(Array.from({ length: 5 }, (_, i) => `new ${i}`));
    await settle(1000);
    // Nobody acked the new events: A2 must still have them to do.
    const backlogAtA2 = group(a2, channel, "g")!.backlog;

    // B goes away for good; a member of g on C should get B's unfinished share after the peer timeout.
    onB.close();
    await b!.dispose();
    started.splice(started.indexOf(b!), 1);
    const onC = c!.client().subscribe({ channel, group: "g", from: "earliest", maxInFlight: 100 });
    closers.push(() => onC.close());
    await onC.subscribed();
    const gotOnC = await within(onC, 5, 8000);

    expect({ backlogAtA2, deliveredOnC: gotOnC.map((d) => d.text()).sort() }).toEqual({
      backlogAtA2: 5,
      deliveredOnC: Array.from({ length: 5 }, (_, i) => `new ${i}`),
    });
  });

  it("gives a durable group (no member for now) the events a sidecar that joined the mesh meanwhile published", async () => {
    const [b] = await startMesh(["b"], { peerTimeoutMs: 1000 });
    started.push(b!);
    const channel = "late.origin";
    // The group g is created on B (durable from its first subscribe); its member leaves cleanly.
    const first = b!.client().subscribe({ channel, group: "g" });
    await first.subscribed();
    first.close();
    await first.closed;
    await settle(1500); // past the linger: B withdraws g

    // A new sidecar C joins the mesh (a scaled-out pod) and its service publishes.
    const c = await startSidecar({ nodeId: "c", peers: [b!.peerAddress], peerTimeoutMs: 1000 });
    started.push(c);
    await linked([b!, c]);
    await c.client().publishMany([{ channel, data: "while g had no member" }]);

    // The member of g comes back (g exists: it resumes where it left off).
    const again = b!.client().subscribe({ channel, group: "g" });
    closers.push(() => again.close());
    await again.subscribed();
    await settled(c, [b!], channel, "g");
    await c.client().publishMany([{ channel, data: "after the member came back" }]);
    const got = await within(again, 2, 5000);
    expect(got.map((d) => d.text()).sort()).toEqual(["after the member came back", "while g had no member"]);
  });

  it("sizes forward frames to what the receiver accepts (its maxMessageBytes, from hello)", async () => {
    // maxMessageBytes 1 MiB >= maxEventBytes 1 MiB: a configuration the sidecar accepts.
    const [a, b] = await startMesh(["a", "b"], { peerTimeoutMs: 1000, maxMessageBytes: 1024 * 1024 });
    started.push(a!, b!);
    const channel = "big.frames";
    const publisher = a!.client({ maxBatchBytes: 256 * 1024 });
    await publisher.publishMany(Array.from({ length: 300 }, (_, i) => ({ channel, data: `${i} ${"x".repeat(8000)}` })));
    // A subscriber from earliest: A gets the whole backlog for B at once (2.4 MB of events).
    const sub = b!.client().subscribe({ channel, group: "g", from: "earliest", maxInFlight: 1000 });
    closers.push(() => sub.close());
    await sub.subscribed();
    const got = await within(sub, 300, 8000);
    expect(got.length).toBe(300);
  });

  it("stores an event over the receiver's own maxEventBytes that the origin accepted, instead of ending the link at every retry", async () => {
    const ports = await Promise.all([0, 1, 2].map(() => freePort()));
    const peers = ports.map((p) => `127.0.0.1:${p}`);
    const base = { peers, peerTimeoutMs: 1000 };
    // A accepts events of up to 2 MiB; B and C keep the default 1 MiB.
    const a = await startSidecar({ ...base, nodeId: "a", peerListen: peers[0]!, maxEventBytes: 2 * 1024 * 1024 });
    const b = await startSidecar({ ...base, nodeId: "b", peerListen: peers[1]! });
    const c = await startSidecar({ ...base, nodeId: "c", peerListen: peers[2]! });
    started.push(a, b, c);
    await linked([a, b, c]);
    const channel = "big.events";
    const onB = b.client().subscribe({ channel, group: "g", from: "earliest" });
    closers.push(() => onB.close());
    await onB.subscribed();
    await settled(a, [b], channel, "g");
    await a.client().publishMany([{ channel, data: "x".repeat(1536 * 1024) }]);
    await settle(500);
    // A member of g on C: if B cannot take the event, C should get it (B's link never stays up).
    const onC = c.client().subscribe({ channel, group: "g", from: "earliest" });
    closers.push(() => onC.close());
    await onC.subscribed();
    const [onBGot, onCGot] = await Promise.all([within(onB, 1, 6000), within(onC, 1, 6000)]);
    expect(onBGot.length + onCGot.length).toBe(1);
  });

  it("does not advertise again, after a restart, a group it withdrew while holding stale relay copies", async () => {
    const [a, b, c] = await startMesh(["a", "b", "c"], { peerTimeoutMs: 1500 });
    started.push(a!, b!, c!);
    const channel = "stale.copies";
    const onB = b!.client().subscribe({ channel, group: "g", from: "earliest", maxInFlight: 2 });
    await onB.subscribed();
    await settled(a!, [b!], channel, "g");
    await a!.client().publishMany(Array.from({ length: 10 }, (_, i) => ({ channel, data: `e${i}` })));
    await eventually(async () => (await copiesHeld(b!, channel, "g")).length === 10, 20_000, "B stored the copies");
    await take(onB, 2);
    onB.close();
    await onB.closed;
    // The group moves to C; B withdraws it after the linger and keeps 8 copies "to do".
    const onC = c!.client().subscribe({ channel, group: "g", from: "earliest", maxInFlight: 100 });
    closers.push(() => onC.close());
    await take(onC, 8);
    await eventually(() => !a!.sidecar.mesh.status().find((p) => p.nodeId === "b")!.groups.includes(`${channel}!g`), 10_000, "B withdrew g");

    // B restarts (no member of g there any more, none coming back).
    await b!.restart();
    await linked([a!, b!, c!]);
    await settle(300);
    const forwardedToB = a!.sidecar.mesh.status().find((p) => p.nodeId === "b")!.groups;
    expect(forwardedToB).not.toContain(`${channel}!g`);
  });

  it("does not count a forward the peer gives back ('returned') as an attempt", async () => {
    const a = await startSidecar({ nodeId: "a", peerTimeoutMs: 5000 });
    started.push(a);
    const channel = "given.back";
    const peer = new RawPeer(a.peerAddress);
    closers.push(() => peer.close());
    const { link } = await peer.linkUp(hello("p"), { snapshot: false });
    link.sendInterest(true, [{ ...groupInterest(channel, "g"), maxAttempts: 1 }]);
    await eventually(() => a.sidecar.mesh.status().some((p) => p.groups.includes(`${channel}!g`)), 10_000, "A forwards g to the peer");
    await a.client().publishMany([{ channel, data: "one" }]);
    const fwd = await link.until("forward");
    const seqs = fwd.events.map((e) => e.sequence);
    expect(seqs).toEqual([1n]);
    // The peer hands it back unhandled (what a receiver does when the group was withdrawn meanwhile).
    link.send({ case: "outcomes", value: { groups: [{ channel, group: "g", done: [], returned: seqs }] } });
    await settle(1000);
    const dlq = a.sidecar.log.head(`${channel}.dlq.g`).last;
    expect(dlq).toBe(0);
  });

  it("counts what the peer gives back after attempts: forwarded again from the next attempt, dead-lettered at max attempts", async () => {
    const a = await startSidecar({ nodeId: "a", peerTimeoutMs: 5000 });
    started.push(a);
    const channel = "given.back.attempted";
    const peer = new RawPeer(a.peerAddress);
    closers.push(() => peer.close());
    const { link } = await peer.linkUp(hello("p"), { snapshot: false });
    link.sendInterest(true, [{ ...groupInterest(channel, "g"), maxAttempts: 3 }]);
    await eventually(() => a.sidecar.mesh.status().some((p) => p.groups.includes(`${channel}!g`)), 10_000, "A forwards g to the peer");
    await a.client().publishMany([{ channel, data: "one" }, { channel, data: "two" }]);
    const fwd = await link.until("forward");
    expect(fwd.events.map((e) => [e.sequence, e.attempt])).toEqual([[1n, 1], [2n, 1]]);
    // Its members had #1 once and #2 three times (its max), and left.
    link.send({ case: "outcomes", value: { groups: [{ channel, group: "g", returnedAfterAttempts: [{ sequence: 1n, attempts: 1 }, { sequence: 2n, attempts: 3 }] }] } });
    const again = await link.until("forward");
    expect(again.events.map((e) => [e.sequence, e.attempt])).toEqual([[1n, 2]]);
    await eventually(() => a.sidecar.log.head(`${channel}.dlq.g`).last === 1, 10_000, "#2 dead-lettered at A");
  });
});
