import { afterEach, describe, expect, it } from "vitest";
import type { Delivery, Subscription } from "../src/client/index.js";
import { spreadHash } from "../src/delivery/hash.js";
import { collect, eventually, settle, take } from "./support/collect.js";
import { copiesHeld, linked, settled, startMesh } from "./support/mesh.js";
import { StartPosition_Kind } from "../src/gen/weft/v1/mesh_pb.js";
import { RawMeshConnection, type RawSubscribe } from "./support/raw-client.js";
import { RawPeer, forwarded, hello } from "./support/raw-peer.js";
import { type TestSidecar, startSidecar } from "./support/sidecar.js";
import { TcpProxy } from "./support/tcp-proxy.js";

/**
 * Relay copies on the one event path: a copy a peer forwarded is an event of its channel
 * here, held for one group, delivered by that group's dispatcher to its local members only,
 * and its outcome goes back to its origin. Real sidecars (and a raw peer) on loopback.
 */
describe("relay copies on the one event path", () => {
  const started: TestSidecar[] = [];
  const closers: (() => unknown)[] = [];
  afterEach(async () => {
    for (const c of closers.splice(0).reverse()) await c();
    for (const s of started.splice(0)) await s.dispose().catch(() => {});
  });
  async function mesh(names: string[], peerTimeoutMs = 1000, overrides: Parameters<typeof startMesh>[1] = {}): Promise<TestSidecar[]> {
    const m = await startMesh(names, { peerTimeoutMs, ...overrides });
    started.push(...m);
    return m;
  }
  function subscribe(s: TestSidecar, options: Parameters<ReturnType<TestSidecar["client"]>["subscribe"]>[0]): Subscription {
    const sub = s.client().subscribe(options);
    closers.push(() => sub.close());
    return sub;
  }
  const group = (s: TestSidecar, channel: string, g: string) => s.sidecar.engine.status().find((x) => x.channel === channel && x.group === g);

  it("never forwards a copy to a peer member: it waits for a member here while the group's member behind another peer has room", async () => {
    const [a, b, c] = await mesh(["a", "b", "c"]);
    const channel = "copies.one.hop";
    // B's member holds one delivery at a time; C's member has room for everything.
    const onB = subscribe(b!, { channel, group: "g", from: "earliest", maxInFlight: 1 });
    const onC = subscribe(c!, { channel, group: "g", from: "earliest", maxInFlight: 1000 });
    await Promise.all([onB.subscribed(), onC.subscribed()]);
    await settled(a!, [b!, c!], channel, "g");
    // C is a peer member of g at B too (for B's own events).
    await settled(b!, [c!], channel, "g");
    const published = await a!.client().publishMany(Array.from({ length: 40 }, (_, i) => ({ channel, key: `k${i}`, data: `${i}` })));
    const heldAtB = await take(onB, 1, () => {});
    await eventually(async () => (await copiesHeld(b!, channel, "g")).length >= 2, 20_000, "B holds copies waiting for its member");
    const got: Delivery[] = [...heldAtB];
    const ids = (): Set<string> => new Set(got.map((d) => d.event.id));
    const all = (): boolean => ids().size >= 40;
    const atC = collect(onC, all, (d) => (got.push(d), d.ack()));
    await settle(500);
    // B sent C nothing: its copies wait for its own member, which has no credit free.
    expect(b!.sidecar.mesh.status().find((p) => p.nodeId === "c")!.inflight).toBe(0);
    expect((await c!.sidecar.log.read(channel, 1, 1000)).filter((e) => e.origin?.node !== "a")).toEqual([]);
    // B's member takes B's copies, one at a time.
    heldAtB[0]!.ack();
    await Promise.all([atC, collect(onB, all, (d) => (got.push(d), d.ack()))]);
    expect(ids()).toEqual(new Set(published.map((p) => p.id)));
    await eventually(() => group(a!, channel, "g")?.backlog === 0, 20_000, "A drained");
  });

  it("keeps per-key order per origin: two sidecars whose own events of one key are in flight to each other both finish", async () => {
    // B links to A only once both have their member of g, so that each sidecar's group has its
    // local member first and the peer second: a key that hashes to the second goes from each
    // sidecar to the other.
    const a = await startSidecar({ nodeId: "a", peerTimeoutMs: 5000 });
    started.push(a);
    const proxy = await TcpProxy.start(a.peerAddress);
    closers.push(() => proxy.close());
    proxy.pause();
    const b = await startSidecar({ nodeId: "b", peerTimeoutMs: 5000, peers: [proxy.address] });
    started.push(b);
    const channel = "copies.same.key";
    const key = Array.from({ length: 100 }, (_, i) => `k${i}`).find((k) => spreadHash(`${channel}\u0000${k}`) % 2 === 1)!;
    const onA = subscribe(a, { channel, group: "g", from: "earliest" });
    const onB = subscribe(b, { channel, group: "g", from: "earliest" });
    await Promise.all([onA.subscribed(), onB.subscribed()]);
    proxy.resume();
    await linked([a, b]);
    await settled(a, [b], channel, "g");
    await settled(b, [a], channel, "g");

    const [fromA, fromB] = await Promise.all([
      a.client().publishMany(Array.from({ length: 50 }, (_, i) => ({ channel, key, data: `a${i}` }))),
      b.client().publishMany(Array.from({ length: 50 }, (_, i) => ({ channel, key, data: `b${i}` }))),
    ]);
    const got: Delivery[] = [];
    const all = (): boolean => new Set(got.map((d) => d.event.id)).size >= 100;
    await Promise.all([collect(onA, all, (d) => (got.push(d), d.ack())), collect(onB, all, (d) => (got.push(d), d.ack()))]);
    expect(new Set(got.map((d) => d.event.id))).toEqual(new Set([...fromA, ...fromB].map((p) => p.id)));
    // Per origin, the key's events reached the group in publish order.
    for (const prefix of ["a", "b"]) {
      const order = got.filter((d) => d.text().startsWith(prefix)).map((d) => Number(d.text().slice(1)));
      expect(order).toEqual([...order].sort((x, y) => x - y));
    }
    await eventually(() => group(a, channel, "g")?.backlog === 0 && group(b, channel, "g")?.backlog === 0, 20_000, "both drained");
  });

  it("delivers a copy to the group it is held for only: another group there, and one created there later, skip it", async () => {
    const [a, b] = await mesh(["a", "b"]);
    const channel = "copies.skip";
    const seen = new Map<string, Delivery[]>();
    const member = (g: string): Promise<unknown> => {
      const sub = subscribe(b!, { channel, group: g, from: "earliest" });
      seen.set(g, []);
      void collect(sub, () => false, (d) => (seen.get(g)!.push(d), d.ack()), 60_000).catch(() => {});
      return sub.subscribed();
    };
    await Promise.all([member("g"), member("h")]);
    await settled(a!, [b!], channel, "g");
    await settled(a!, [b!], channel, "h");
    const published = await a!.client().publishMany(Array.from({ length: 20 }, (_, i) => ({ channel, data: `${i}` })));
    const ids = new Set(published.map((p) => p.id));
    const done = (g: string): boolean => group(b!, channel, g)?.backlog === 0 && group(b!, channel, g)?.inflight === 0 && (seen.get(g)?.length ?? 0) > 0;
    await eventually(() => done("g") && done("h"), 20_000, "g and h finished at B");
    // One copy per group; each group got each event once.
    expect((await copiesHeld(b!, channel, "g")).length).toBe(20);
    expect((await copiesHeld(b!, channel, "h")).length).toBe(20);
    for (const g of ["g", "h"]) expect(seen.get(g)!.map((d) => d.event.id).sort()).toEqual([...ids].sort());

    // A group created at B later, from the earliest event: the copies held for g and h are
    // not its own; A forwards it the events anew, for it.
    await member("late");
    await settled(a!, [b!], channel, "late");
    await eventually(() => done("late"), 20_000, "late finished at B");
    expect(seen.get("late")!.map((d) => d.event.id).sort()).toEqual([...ids].sort());
    expect(b!.sidecar.log.head(channel).last).toBe(60);
  });

  it("reports outcomes for copies only: events published here move the cursor, copies also go back to their origin", async () => {
    const t = await startSidecar({ nodeId: "receiver" });
    started.push(t);
    const channel = "copies.outcomes";
    const sub = subscribe(t, { channel, group: "g", from: "earliest" });
    await sub.subscribed();
    const peer = new RawPeer(t.peerAddress);
    closers.push(() => peer.close());
    const { link, interest } = await peer.linkUp(hello("origin"));
    const lists = (i: { groups: { channel: string; group: string; members: boolean }[] }): boolean => i.groups.some((g) => g.channel === channel && g.group === "g" && g.members);
    if (!lists(interest)) await link.interest(lists);

    await t.client().publishMany([1, 2, 3].map((i) => ({ channel, data: `own ${i}` })));
    link.forward(1, [1, 2, 3].map((s) => forwarded(channel, "g", s)));
    await link.until("stored");
    await take(sub, 6);
    const key = `${channel}/g`;
    const first = await link.outcomes((seen) => (seen.get(key)?.done.length ?? 0) >= 3);
    // One more of each: what comes back after it is the copy's outcome, and only that.
    await t.client().publish({ channel, data: "own 4" });
    link.forward(2, [forwarded(channel, "g", 4)]);
    await take(sub, 2);
    const second = await link.outcomes((seen) => (seen.get(key)?.done.length ?? 0) >= 1);
    expect([...first.keys(), ...second.keys()]).toEqual([key, key]);
    expect([...first.get(key)!.done, ...second.get(key)!.done].sort()).toEqual([1n, 2n, 3n, 4n]);
    expect([...first.get(key)!.returned, ...second.get(key)!.returned]).toEqual([]);
    await eventually(() => group(t, channel, "g")?.backlog === 0, 10_000, "the group finished all 8");
    expect(group(t, channel, "g")!.ackedThrough).toBe(8);
  });

  it("gives up the copies of a group it withdrew, and stores a later forward of one of them as a new copy, delivered", async () => {
    const [a, b] = await mesh(["a", "b"], 500);
    const channel = "copies.given.up";
    const first = subscribe(b!, { channel, group: "g", from: "earliest", maxInFlight: 5 });
    await first.subscribed();
    await settled(a!, [b!], channel, "g");
    const published = await a!.client().publishMany(Array.from({ length: 5 }, (_, i) => ({ channel, data: `${i}` })));
    await take(first, 5, () => {}); // held, never acked
    first.close();
    await first.closed;
    // B withdraws g after the linger: A takes the 5 back, and B gives up its copies.
    await eventually(() => !a!.sidecar.mesh.status().find((p) => p.nodeId === "b")!.groups.includes(`${channel}!g`), 10_000, "B withdrew g");
    await eventually(() => group(b!, channel, "g")?.backlog === 0, 10_000, "B gave up its copies");
    expect(group(a!, channel, "g")!.backlog).toBe(5);

    // The member comes back: A forwards the 5 again; B stores them as new copies (not the
    // ones it gave up, which are done here) and delivers them.
    const again = subscribe(b!, { channel, group: "g", from: "earliest" });
    const got = await take(again, 5);
    expect(got.map((d) => d.event.id).sort()).toEqual(published.map((p) => p.id).sort());
    await eventually(() => group(a!, channel, "g")?.backlog === 0, 10_000, "A drained");
    const copies = await copiesHeld(b!, channel, "g");
    expect(copies.map((e) => [e.origin!.sequence, e.copyEpoch])).toEqual([...[1, 2, 3, 4, 5].map((s) => [s, 0]), ...[1, 2, 3, 4, 5].map((s) => [s, 1])]);
  });

  it("does not let the copies of a group it withdrew hold back its own events for the group's members elsewhere", async () => {
    const [a, b, c] = await mesh(["a", "b", "c"], 500);
    const channel = "copies.stale";
    const onB = subscribe(b!, { channel, group: "g", from: "earliest", maxInFlight: 2 });
    await onB.subscribed();
    await settled(a!, [b!], channel, "g");
    await a!.client().publishMany(Array.from({ length: 10 }, (_, i) => ({ channel, data: `a${i}` })));
    await eventually(async () => (await copiesHeld(b!, channel, "g")).length === 10, 20_000, "B stored the copies");
    await take(onB, 2, () => {});
    onB.close();
    await onB.closed;
    // g moves to C; B publishes events of its own, which go to C.
    const onC = subscribe(c!, { channel, group: "g", from: "earliest" });
    await take(onC, 10);
    await eventually(() => !a!.sidecar.mesh.status().find((p) => p.nodeId === "b")!.groups.includes(`${channel}!g`), 10_000, "B withdrew g");
    await settled(b!, [c!], channel, "g");
    await b!.client().publishMany(Array.from({ length: 5 }, (_, i) => ({ channel, data: `b${i}` })));
    await take(onC, 5);
    // B's cursor passed the copies it gave up and its own events C finished.
    await eventually(() => group(b!, channel, "g")?.backlog === 0, 10_000, "B's backlog drained");
    expect(group(b!, channel, "g")!.ackedThrough).toBe(15);
  });

  it("keeps advertising after a restart a group whose copies were in flight to members, and only such a group", async () => {
    const [a, b] = await mesh(["a", "b"], 10_000);
    const channel = "copies.restart";
    // g's member on B holds copies of A's events; h's member on B holds B's own events.
    const onG = subscribe(b!, { channel, group: "g", from: "earliest" });
    const onH = subscribe(b!, { channel: `${channel}.own`, group: "h", from: "earliest" });
    await Promise.all([onG.subscribed(), onH.subscribed()]);
    await settled(a!, [b!], channel, "g");
    await a!.client().publishMany(Array.from({ length: 3 }, (_, i) => ({ channel, data: `${i}` })));
    await b!.client().publishMany(Array.from({ length: 3 }, (_, i) => ({ channel: `${channel}.own`, data: `${i}` })));
    await Promise.all([take(onG, 3, () => {}), take(onH, 3, () => {})]);
    onG.close();
    onH.close();
    await b!.restart();
    await linked([a!, b!]);
    expect(b!.sidecar.engine.interrupted().map((g) => `${g.channel}/${g.group}`)).toEqual([`${channel}/g`]);
    // A still forwards g to B (it keeps the copies in flight there), and never heard of h
    // having members: B's interest snapshot after the restart names g with members, not h.
    // (A dropped h once B's snapshot reached it.)
    const forwarding = (): string[] => a!.sidecar.mesh.status().find((p) => p.nodeId === "b")?.groups ?? [];
    await eventually(() => !forwarding().includes(`${channel}.own!h`), 10_000, "B's snapshot reached A");
    expect(forwarding()).toContain(`${channel}!g`);
    // The member comes back within the peer timeout and gets what it held, again.
    const back = subscribe(b!, { channel, group: "g", from: "earliest" });
    const again = await take(back, 3);
    expect(again.every((d) => d.attempt === 2)).toBe(true);
    await eventually(() => group(a!, channel, "g")?.backlog === 0, 10_000, "A drained");
  });

  /**
   * A member of g on `s` through a raw stream behind a TCP proxy, whose `cut()` breaks the
   * stream as a crashed service's connection would. (A client's cancel is not used: grpc-js
   * half-closes before its RST_STREAM, which a sidecar may read as a clean goodbye.)
   */
  async function rawMember(s: TestSidecar, channel: string, maxInFlight: number): Promise<RawSubscribe & { cut(): void }> {
    const proxy = await TcpProxy.start(s.address);
    closers.push(() => proxy.close());
    const raw = new RawMeshConnection(proxy.address);
    closers.push(() => raw.close());
    const sub = raw.subscribe();
    sub.open({ channel, group: "g", start: { kind: StartPosition_Kind.EARLIEST }, maxInFlight });
    await sub.subscribed();
    return Object.assign(sub, { cut: () => void proxy.cut() });
  }
  const withdrew = (a: TestSidecar, b: TestSidecar, channel: string) => () =>
    !a.sidecar.mesh.status().find((p) => p.nodeId === b.sidecar.config.nodeId)!.groups.includes(`${channel}!g`);

  it("tells the origin the attempts its members had when it withdraws a group: the next delivery counts on from them", async () => {
    const [a, b] = await mesh(["a", "b"], 500);
    const channel = "copies.attempts.back";
    const onB = await rawMember(b!, channel, 5);
    await settled(a!, [b!], channel, "g");
    await a!.client().publishMany(Array.from({ length: 5 }, (_, i) => ({ channel, data: `${i}` })));
    expect((await onB.take(5)).map((d) => d.attempt)).toEqual([1, 1, 1, 1, 1]);
    onB.cut(); // a broken stream: each delivery was an attempt
    await eventually(withdrew(a!, b!, channel), 10_000, "B withdrew g");
    const onA = subscribe(a!, { channel, group: "g", from: "earliest" });
    expect((await take(onA, 5)).map((d) => d.attempt)).toEqual([2, 2, 2, 2, 2]);
    await eventually(() => group(a!, channel, "g")?.backlog === 0, 10_000, "A drained");
  });

  it("forwards an event with the attempts it had: a copy counts on from them behind its peer", async () => {
    const [a, b] = await mesh(["a", "b"], 5000);
    const channel = "copies.attempts.forward";
    const onA = await rawMember(a!, channel, 5);
    await a!.client().publishMany(Array.from({ length: 3 }, (_, i) => ({ channel, data: `${i}` })));
    expect((await onA.take(3)).map((d) => d.attempt)).toEqual([1, 1, 1]);
    const onB = subscribe(b!, { channel, group: "g", from: "earliest" });
    await onB.subscribed();
    await settled(a!, [a!, b!], channel, "g");
    onA.cut(); // A counts the three attempts; B's member is the group's only one left
    expect((await take(onB, 3)).map((d) => d.attempt)).toEqual([2, 2, 2]);
    await eventually(() => group(a!, channel, "g")?.backlog === 0, 10_000, "A drained");
    expect((await copiesHeld(b!, channel, "g")).map((e) => e.priorAttempts)).toEqual([1, 1, 1]);
  });

  it("after a restart, tells the origin the attempts of copies in flight at the stop when the group is withdrawn unread", async () => {
    const [a, b] = await mesh(["a", "b"], 1000);
    const channel = "copies.attempts.restart";
    const onB = await rawMember(b!, channel, 5);
    await settled(a!, [b!], channel, "g");
    await a!.client().publishMany(Array.from({ length: 3 }, (_, i) => ({ channel, data: `${i}` })));
    expect((await onB.take(3)).map((d) => d.attempt)).toEqual([1, 1, 1]);
    await b!.restart(); // the member does not come back to B
    await linked([a!, b!]);
    expect(b!.sidecar.engine.interrupted().map((g) => g.group)).toEqual(["g"]);
    await eventually(withdrew(a!, b!, channel), 10_000, "B withdrew g after its peer timeout");
    const onA = subscribe(a!, { channel, group: "g", from: "earliest" });
    expect((await take(onA, 3)).map((d) => d.attempt)).toEqual([2, 2, 2]);
    await eventually(() => group(a!, channel, "g")?.backlog === 0 && group(b!, channel, "g")?.backlog === 0, 10_000, "both drained");
  });

  it("reads copies past a window full of its own events in flight to a peer: two sidecars never wait on each other", async () => {
    // A small read-ahead budget: each sidecar's window fills with its own events forwarded to
    // the other, while the copies of the other's events must still be read to be delivered.
    const [a, b] = await mesh(["a", "b"], 5000, { maxReadAheadBytes: 64 * 1024 });
    const channel = "copies.window";
    const onA = subscribe(a!, { channel, group: "g", from: "earliest", maxInFlight: 1000 });
    const onB = subscribe(b!, { channel, group: "g", from: "earliest", maxInFlight: 1000 });
    await Promise.all([onA.subscribed(), onB.subscribed()]);
    await settled(a!, [b!], channel, "g");
    await settled(b!, [a!], channel, "g");
    const big = "x".repeat(4096);
    const [fromA, fromB] = await Promise.all([
      a!.client().publishMany(Array.from({ length: 200 }, (_, i) => ({ channel, key: `a${i % 20}`, data: `a${i} ${big}` }))),
      b!.client().publishMany(Array.from({ length: 200 }, (_, i) => ({ channel, key: `b${i % 20}`, data: `b${i} ${big}` }))),
    ]);
    const got = new Set<string>();
    const all = (): boolean => got.size >= 400;
    await Promise.all([collect(onA, all, (d) => (got.add(d.event.id), d.ack())), collect(onB, all, (d) => (got.add(d.event.id), d.ack()))]);
    expect(got).toEqual(new Set([...fromA, ...fromB].map((p) => p.id)));
    await eventually(() => group(a!, channel, "g")?.backlog === 0 && group(b!, channel, "g")?.backlog === 0, 20_000, "both drained");
  });
});
