import { Client, Metadata, type ServiceError, credentials, status } from "@grpc/grpc-js";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { AdminClient, ClientError, type Delivery, type Subscription } from "../src/client/index.js";
import { collect, eventually, settle, take } from "./support/collect.js";
import { settled, startMesh } from "./support/mesh.js";
import { FILE_CONTAINING_SYMBOL, LIST_SERVICES, ReflectionStream, request } from "./support/reflection-client.js";
import { type TestSidecar, startSidecar } from "./support/sidecar.js";
import { SOFTWARE_VERSION } from "../sidecar/version.js";

// weft.v1.Admin over gRPC against real sidecars on loopback: what it shows after known
// traffic, dead letters listed, redriven to their group only, purged; bad input refused.

/** The ClientError a call rejected with. */
async function refusal(call: Promise<unknown>): Promise<ClientError> {
  const e = await call.then(
    () => undefined,
    (err: unknown) => err,
  );
  if (!(e instanceof ClientError)) throw new Error(`expected a refusal, got ${e === undefined ? "an answer" : String(e)}`);
  return e;
}

/** Reads deliveries until one of `id` arrives; nacks or acks as `handle` says. */
async function untilEvent(sub: Subscription, id: string, handle: (d: Delivery) => void = (d) => d.ack()): Promise<Delivery> {
  const seen = await collect(sub, (s) => s.some((d) => d.event.id === id), handle);
  return seen.find((d) => d.event.id === id)!;
}

describe("weft.v1.Admin on one sidecar", () => {
  let s: TestSidecar;
  let admin: AdminClient;
  const channel = "orders.created";

  beforeAll(async () => {
    s = await startSidecar({ nodeId: "solo" });
    admin = new AdminClient(s.address);
  });
  afterAll(async () => {
    admin.close();
    await s.dispose();
  });

  it("lists channels, groups and counters after known traffic; dead-letters, redrives to one group, purges", async () => {
    const client = s.client();
    const billing = client.subscribe({ channel, group: "billing", from: "earliest", maxAttempts: 1 });
    const audit = client.subscribe({ channel, group: "audit", from: "earliest" });
    await Promise.all([billing.subscribed(), audit.subscribed()]);
    const events = Array.from({ length: 10 }, (_, i) => ({ channel, id: `order-${i}`, source: "//shop", key: `k${i % 3}`, data: { i } }));
    await client.publishMany(events);
    await client.publishMany(events.slice(0, 2)); // duplicates: published, not stored
    // billing fails order-3 once: with max attempts 1 it is dead-lettered at once.
    await take(billing, 10, (d) => (d.event.id === "order-3" ? d.nack() : d.ack()));
    await take(audit, 10);
    await eventually(async () => (await admin.listGroups(channel)).groups.every((g) => g.backlog === 0n), 10_000, "backlogs drained");

    const stats = await admin.stats();
    expect(stats.nodeId).toBe("solo");
    expect(stats.published).toBe(12n);
    expect(stats.stored).toBe(11n); // 10 events + 1 dead letter
    expect(stats.acked).toBe(19n); // 9 by billing, 10 by audit
    expect(stats.forwarded).toBe(0n);
    expect(Number(stats.time!.seconds)).toBeGreaterThanOrEqual(Number(stats.startTime!.seconds));

    const dlq = `${channel}.dlq.billing`;
    const { channels, nodeId } = await admin.listChannels();
    expect(nodeId).toBe("solo");
    expect(channels.map((c) => c.channel)).toEqual([channel, dlq]);
    const orders = channels[0]!;
    expect(orders.log).toMatchObject({ events: 10n, oldestSequence: 1n, newestSequence: 10n, expired: 0n });
    expect(orders.log!.bytes).toBeGreaterThan(0n);
    expect(orders.log!.oldestTime).toBeDefined();
    expect(orders.groups.map((g) => [g.group, g.backlog, g.members])).toEqual([
      ["audit", 0n, 1],
      ["billing", 0n, 1],
    ]);
    expect(orders.relays).toEqual([]);
    expect(channels[1]!.log!.events).toBe(1n);
    expect(channels[1]!.deadLettersOf.map((g) => [g.channel, g.group])).toEqual([[channel, "billing"]]);

    const groups = await admin.listGroups(channel);
    expect(groups.groups.map((g) => g.group)).toEqual(["audit", "billing"]);
    expect(groups.groups[1]).toMatchObject({
      group: "billing",
      ackedThrough: 10n,
      backlog: 0n,
      inFlight: 0,
      localMembers: 1,
      remoteMembers: 0,
      maxAttempts: 1,
      deadLetterChannel: dlq,
      deadLetters: 1n,
      deadLettersMore: false,
    });
    expect(groups.groups[0]!.deadLetters).toBe(0n);

    // The dead letter, with its attributes.
    const page = await admin.listDeadLetters({ channel, group: "billing" });
    expect(page.deadLetterChannel).toBe(dlq);
    expect(page.nextAfterSequence).toBe(0n);
    expect(page.deadLetters).toHaveLength(1);
    const dead = page.deadLetters[0]!;
    expect(dead.sequence).toBe(1n);
    expect(dead.event!.id).toBe("order-3");
    expect(dead.event!.channel).toBe(dlq);
    expect(dead.event!.attributes).toMatchObject({
      "weft.dead_letter.reason": "max_attempts",
      "weft.dead_letter.attempts": "1",
      "weft.dead_letter.channel": channel,
      "weft.dead_letter.group": "billing",
      "weft.dead_letter.sequence": "4",
    });

    // Redrive: billing gets order-3 again (a new event for billing only); audit does not.
    const redriven = await admin.redrive({ channel, group: "billing" });
    expect(redriven.more).toBe(false);
    expect(redriven.redriven.map((r) => [r.deadLetterSequence, r.sequence, r.duplicate])).toEqual([[1n, 11n, false]]);
    // It fails again: a second dead letter, not a duplicate of the first.
    const again = await untilEvent(billing, "order-3", (d) => d.nack());
    expect(again.attempt).toBe(1);
    expect(again.sequence).toBe(11n);
    expect(again.event.channel).toBe(channel);
    expect(again.text()).toBe(JSON.stringify({ i: 3 }));
    expect(again.event.attributes).toEqual({ "weft.redrive.group": "billing", "weft.redrive.from": `${dlq}#1` });
    await settle(300);
    const auditAfter = (await admin.listGroups(channel)).groups.find((g) => g.group === "audit")!;
    expect(auditAfter).toMatchObject({ ackedThrough: 11n, backlog: 0n, inFlight: 0 });

    // The redriven dead letter is gone from the list; the new one is there.
    await eventually(async () => (await admin.listDeadLetters({ channel, group: "billing" })).deadLetters.length === 1, 10_000, "second dead letter");
    const second = (await admin.listDeadLetters({ channel, group: "billing" })).deadLetters[0]!;
    expect(second.sequence).toBe(2n);
    expect(second.event!.attributes).toMatchObject({ "weft.redrive.from": `${dlq}#1`, "weft.dead_letter.sequence": "11" });
    const gone = await refusal(admin.redrive({ channel, group: "billing", sequences: [1n] }));
    expect([gone.code, gone.reason, gone.field]).toEqual([status.NOT_FOUND, "DEAD_LETTER_NOT_FOUND", "sequences[0]"]);

    // Redrive by sequence, and this time billing acks it.
    const bySequence = await admin.redrive({ channel, group: "billing", sequences: [2n] });
    expect(bySequence.redriven.map((r) => r.sequence)).toEqual([12n]);
    const acked = await untilEvent(billing, "order-3");
    expect(acked.event.attributes["weft.redrive.from"]).toBe(`${dlq}#2`);
    expect((await admin.listDeadLetters({ channel, group: "billing" })).deadLetters).toEqual([]);
    await eventually(async () => (await admin.stats()).acked === 20n, 10_000, "the redriven event acked");

    // Purge: one more dead letter, purged; nothing is listed or counted any more.
    await client.publish({ channel, id: "order-99", source: "//shop" });
    await untilEvent(billing, "order-99", (d) => d.nack());
    await eventually(async () => (await admin.listDeadLetters({ channel, group: "billing" })).deadLetters.length === 1, 10_000, "third dead letter");
    expect((await admin.purge({ channel, group: "billing" })).purged).toBe(1n);
    expect((await admin.listDeadLetters({ channel, group: "billing" })).deadLetters).toEqual([]);
    expect((await admin.listGroups(channel)).groups.find((g) => g.group === "billing")!.deadLetters).toBe(0n);
    expect((await admin.purge({ channel, group: "billing" })).purged).toBe(0n);
    expect((await admin.redrive({ channel, group: "billing" })).redriven).toEqual([]);
    // The dead-letter channel keeps its events (purge is about the list, not the log).
    expect((await admin.listChannels()).channels.find((c) => c.channel === dlq)!.log!.events).toBe(3n);
    billing.close();
    audit.close();
  });

  it("pages through dead letters, and redrives and purges the ones named", async () => {
    const ch = "pages.events";
    const client = s.client();
    const sub = client.subscribe({ channel: ch, group: "g", from: "earliest", maxAttempts: 1 });
    await sub.subscribed();
    await client.publishMany(Array.from({ length: 7 }, (_, i) => ({ channel: ch, id: `p${i}`, source: "//t" })));
    await take(sub, 7, (d) => d.nack());
    await eventually(async () => (await admin.listGroups(ch)).groups[0]!.deadLetters === 7n, 10_000, "seven dead letters");

    const first = await admin.listDeadLetters({ channel: ch, group: "g", limit: 3 });
    expect(first.deadLetters.map((d) => d.sequence)).toEqual([1n, 2n, 3n]);
    expect(first.nextAfterSequence).toBe(3n);
    const next = await admin.listDeadLetters({ channel: ch, group: "g", limit: 3, afterSequence: first.nextAfterSequence });
    expect(next.deadLetters.map((d) => d.sequence)).toEqual([4n, 5n, 6n]);
    const last = await admin.listDeadLetters({ channel: ch, group: "g", limit: 3, afterSequence: next.nextAfterSequence });
    expect(last.deadLetters.map((d) => d.sequence)).toEqual([7n]);
    expect(last.nextAfterSequence).toBe(0n);

    // One sequence that is not a pending dead letter: refused, and nothing is purged.
    const refused = await refusal(admin.purge({ channel: ch, group: "g", sequences: [2n, 99n] }));
    expect([refused.code, refused.reason, refused.field]).toEqual([status.NOT_FOUND, "DEAD_LETTER_NOT_FOUND", "sequences[1]"]);
    expect((await admin.listDeadLetters({ channel: ch, group: "g" })).deadLetters).toHaveLength(7);
    expect((await admin.purge({ channel: ch, group: "g", sequences: [2n, 5n] })).purged).toBe(2n);
    const r = await admin.redrive({ channel: ch, group: "g", limit: 2 });
    expect(r.redriven.map((x) => x.deadLetterSequence)).toEqual([1n, 3n]);
    expect(r.more).toBe(true);
    const left = await admin.listDeadLetters({ channel: ch, group: "g" });
    expect(left.deadLetters.map((d) => d.sequence)).toEqual([4n, 6n, 7n]);
    const got = await take(sub, 2);
    expect(got.map((d) => d.event.id).sort()).toEqual(["p0", "p2"]);
    sub.close();
  });

  it("is listed by server reflection, which serves admin.proto", async () => {
    const client = new Client(s.address, credentials.createInsecure());
    const stream = new ReflectionStream(client);
    try {
      const listed = await stream.ask(request(LIST_SERVICES, "*"));
      expect(listed.services).toEqual(expect.arrayContaining(["weft.v1.Mesh", "weft.v1.Admin"]));
      const files = (await stream.ask(request(FILE_CONTAINING_SYMBOL, "weft.v1.Admin"))).files!;
      const admin = files.find((f) => f.name === "weft/v1/admin.proto")!;
      expect(admin.service.map((x) => x.name)).toEqual(["Admin"]);
      expect(admin.service[0]!.method.map((m) => m.name)).toEqual(["ListChannels", "ListGroups", "ListPeers", "ListDeadLetters", "Redrive", "Purge", "Stats"]);
    } finally {
      stream.end();
      client.close();
    }
  });

  it("refuses bad input with INVALID_ARGUMENT or NOT_FOUND and a stable reason, and keeps serving", async () => {
    const cases: [string, () => Promise<unknown>, status, string, string][] = [
      ["a bad channel", () => admin.listGroups("Orders!"), status.INVALID_ARGUMENT, "INVALID_CHANNEL", "channel"],
      ["a name with '~' (once a relay channel's)", () => admin.listGroups(`${channel}~billing`), status.INVALID_ARGUMENT, "INVALID_CHANNEL", "channel"],
      ["an unknown channel", () => admin.listGroups("no.such.channel"), status.NOT_FOUND, "CHANNEL_NOT_FOUND", "channel"],
      ["a bad group", () => admin.listDeadLetters({ channel, group: "" }), status.INVALID_ARGUMENT, "INVALID_GROUP", "group"],
      ["an unknown group", () => admin.listDeadLetters({ channel, group: "nobody" }), status.NOT_FOUND, "GROUP_NOT_FOUND", "group"],
      ["a limit too high", () => admin.listDeadLetters({ channel, group: "billing", limit: 1001 }), status.INVALID_ARGUMENT, "INVALID_LIMIT", "limit"],
      ["a redrive limit too high", () => admin.redrive({ channel, group: "billing", limit: 10_001 }), status.INVALID_ARGUMENT, "INVALID_LIMIT", "limit"],
      ["sequence 0", () => admin.redrive({ channel, group: "billing", sequences: [0n] }), status.INVALID_ARGUMENT, "INVALID_SEQUENCE", "sequences[0]"],
      ["a sequence past 2^53", () => admin.purge({ channel, group: "billing", sequences: [2n ** 60n] }), status.INVALID_ARGUMENT, "INVALID_SEQUENCE", "sequences[0]"],
      ["a sequence never stored", () => admin.purge({ channel, group: "billing", sequences: [999n] }), status.NOT_FOUND, "DEAD_LETTER_NOT_FOUND", "sequences[0]"],
      [
        "too many sequences",
        () => admin.redrive({ channel, group: "billing", sequences: Array.from({ length: 10_001 }, (_, i) => BigInt(i + 1)) }),
        status.RESOURCE_EXHAUSTED,
        "BATCH_TOO_LARGE",
        "sequences",
      ],
    ];
    for (const [what, call, code, reason, field] of cases) {
      const e = await refusal(call());
      expect([what, e.code, e.reason, e.field], e.message).toEqual([what, code, reason, field]);
      expect(e.message.startsWith(`${reason}: `), e.message).toBe(true);
    }
    // Bytes that are not the request message.
    const raw = new Client(s.address, credentials.createInsecure());
    const malformed = await new Promise<ServiceError>((resolve) =>
      raw.makeUnaryRequest(
        "/weft.v1.Admin/ListGroups",
        (b: Buffer) => b,
        (b: Buffer) => b,
        Buffer.from([0x0a, 0xff, 0xff]), // field 1, a length past the end
        new Metadata(),
        (e) => resolve(e!),
      ),
    );
    raw.close();
    expect(malformed.code).toBe(status.INVALID_ARGUMENT);
    expect(malformed.metadata.get("weft-reason")).toEqual(["MALFORMED_MESSAGE"]);
    // The sidecar keeps serving.
    expect((await admin.listChannels()).channels.length).toBeGreaterThan(0);
  });
});

describe("weft.v1.Admin in a mesh", () => {
  let mesh: TestSidecar[];
  const subs: Subscription[] = [];
  beforeAll(async () => {
    mesh = await startMesh(["a", "b", "c"]);
  });
  afterEach(() => {
    for (const sub of subs.splice(0)) sub.close();
  });
  afterAll(async () => {
    for (const s of mesh) await s.dispose();
  });

  it("shows relay copies as events of their channel, counted apart in their group, peers with their groups, and forwards counted", async () => {
    const [a, b] = [mesh[0]!, mesh[1]!];
    const channel = "mesh.orders";
    const sub = b.client().subscribe({ channel, group: "ship", from: "earliest" });
    subs.push(sub);
    await sub.subscribed();
    await settled(a, [b], channel, "ship");
    await a.client().publishMany(Array.from({ length: 5 }, (_, i) => ({ channel, id: `m${i}`, source: "//t" })));
    const [adminA, adminB] = [new AdminClient(a.address), new AdminClient(b.address)];
    try {
      // B's member holds the 5 copies: B's group counts them in its backlog and in flight, and apart.
      const held = await take(sub, 5, () => {});
      expect((await adminB.listGroups(channel)).groups[0]).toMatchObject({ group: "ship", backlog: 5n, inFlight: 5, relayBacklog: 5n, relayInFlight: 5 });
      for (const d of held) d.ack();
      await eventually(async () => (await adminA.listGroups(channel)).groups[0]?.backlog === 0n, 10_000, "A's backlog drained");
      const peersA = await adminA.listPeers();
      expect(peersA.nodeId).toBe("a");
      expect(peersA.peers.map((p) => [p.nodeId, p.connected])).toEqual([
        ["b", true],
        ["c", true],
      ]);
      const toB = peersA.peers[0]!;
      expect(toB.softwareVersion).toBe(SOFTWARE_VERSION);
      expect(toB.since).toBeDefined();
      expect(toB.inFlight).toBe(0n);
      expect(toB.groups.map((g) => [g.channel, g.group, g.inFlight])).toEqual([[channel, "ship", 0]]);
      expect((await adminA.listGroups(channel)).groups[0]).toMatchObject({ group: "ship", localMembers: 0, remoteMembers: 1, backlog: 0n });
      expect((await adminA.stats()).forwarded).toBeGreaterThanOrEqual(5n);

      // B holds the relay copies as events of mesh.orders (the deprecated relays list stays empty).
      const channelsB = (await adminB.listChannels()).channels;
      expect(channelsB.map((c) => c.channel)).toEqual([channel]);
      const atB = channelsB[0]!;
      expect(atB.log!.events).toBe(5n);
      expect(atB.relays).toEqual([]);
      expect(atB.groups.map((g) => [g.group, g.backlog, g.inFlight, g.members])).toEqual([["ship", 0n, 0, 1]]);
      await eventually(async () => (await adminB.listGroups(channel)).groups[0]?.relayInFlight === 0, 10_000, "B's acks done");
      expect((await adminB.listGroups(channel)).groups[0]).toMatchObject({ group: "ship", localMembers: 1, backlog: 0n, relayBacklog: 0n, relayInFlight: 0 });
      const statsB = await adminB.stats();
      expect([statsB.stored, statsB.acked, statsB.published]).toEqual([5n, 5n, 0n]);
    } finally {
      adminA.close();
      adminB.close();
    }
  });

  it("redrives a dead letter kept behind a peer to the group's members, across a link", async () => {
    const [a, b, c] = [mesh[0]!, mesh[1]!, mesh[2]!];
    const channel = "mesh.payments";
    // The group's only member is on B: B dead-letters the relay copy and keeps the dead letter.
    const atB = b.client().subscribe({ channel, group: "pay", from: "earliest", maxAttempts: 1 });
    await atB.subscribed();
    await settled(a, [b], channel, "pay");
    await a.client().publish({ channel, id: "pay-1", source: "//t", data: "charge" });
    await untilEvent(atB, "pay-1", (d) => d.nack());
    const adminB = new AdminClient(b.address);
    try {
      await eventually(async () => (await adminB.listDeadLetters({ channel, group: "pay" })).deadLetters.length === 1, 10_000, "dead letter at B");
      const [dead] = (await adminB.listDeadLetters({ channel, group: "pay" })).deadLetters;
      expect(dead!.event!.attributes).toMatchObject({ "weft.dead_letter.origin": "a", "weft.dead_letter.sequence": "1", "weft.dead_letter.group": "pay" });
      // The member moves to C. B, where the dead letter is, redrives it: B stores it as its
      // own event for "pay" and forwards it to the group's member on C.
      atB.close();
      const atC = c.client().subscribe({ channel, group: "pay", from: "earliest", maxAttempts: 1 });
      subs.push(atC);
      await atC.subscribed();
      await settled(b, [c], channel, "pay");
      const other = c.client().subscribe({ channel, group: "other", from: "earliest" });
      subs.push(other);
      await other.subscribed();
      await settled(b, [c], channel, "other");
      const r = await adminB.redrive({ channel, group: "pay" });
      expect(r.redriven).toHaveLength(1);
      const again = await untilEvent(atC, "pay-1");
      expect(again.text()).toBe("charge");
      expect(again.event.attributes).toEqual({ "weft.redrive.group": "pay", "weft.redrive.from": `${channel}.dlq.pay#1` });
      // "other" got the original from A, never the redriven copy.
      const seen = await take(other, 1);
      expect(seen[0]!.event.attributes).toEqual({});
      await expect(collect(other, (got) => got.length > 0, undefined, 700)).rejects.toThrow(/no delivery within/);
      await eventually(async () => (await adminB.listGroups(channel)).groups.every((g) => g.backlog === 0n), 10_000, "B's groups done");
      expect((await adminB.listDeadLetters({ channel, group: "pay" })).deadLetters).toEqual([]);
    } finally {
      adminB.close();
    }
  });
});
