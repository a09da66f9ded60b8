import { status } from "@grpc/grpc-js";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { Subscription } from "../src/client/index.js";
import { Reason } from "../src/contract/errors.js";
import { createLogger } from "../src/ops/logger.js";
import { type ForwardedEvent, writeForward } from "../src/wire/peer-frames.js";
import { eventually, settle, take } from "./support/collect.js";
import { type LinkStatus, type RawLink, RawPeer, eventBytes, forwarded, groupInterest, hello } from "./support/raw-peer.js";
import { type TestSidecar, startSidecar } from "./support/sidecar.js";

/**
 * The delivery contract, point 10, on the peer API: a peer that sends what a well-behaved
 * sidecar never would gets its link ended with the exact gRPC status and "weft-reason",
 * nothing is stored, and the sidecar goes on serving its own clients and other peers.
 * Every test plays the peer by hand over a real socket (test/support/raw-peer.ts).
 */

let counter = 0;
/** A channel or group name no other test uses. */
const fresh = (what: string): string => `peer.${what}.n${++counter}`;
/** A node id no other test uses. */
const freshNode = (): string => `raw-${++counter}`;

const peers: RawPeer[] = [];
/** A raw peer of `s`, closed after the test. */
function rawPeer(s: TestSidecar): RawPeer {
  const p = new RawPeer(s.peerAddress);
  peers.push(p);
  return p;
}
const subscriptions: Subscription[] = [];

afterEach(() => {
  for (const p of peers.splice(0)) p.close();
  for (const s of subscriptions.splice(0)) s.close();
});

/**
 * Asserts how a link ended: the code, the reason (trailer and message prefix), and that
 * the sidecar named itself in "weft-node-id".
 */
async function expectEnded(link: RawLink, s: TestSidecar, code: status, reason: string): Promise<LinkStatus> {
  const st = await link.finished();
  expect({ code: status[st.code], reason: st.reason, nodeId: st.nodeId }).toEqual({
    code: status[code],
    reason,
    nodeId: s.sidecar.mesh.nodeId,
  });
  expect(st.details.startsWith(`${reason}: `), st.details).toBe(true);
  return st;
}

/** The link the sidecar accepted from `nodeId` is gone from its side too. */
async function expectDisconnected(s: TestSidecar, nodeId: string): Promise<void> {
  await eventually(() => !s.sidecar.mesh.status().some((p) => p.nodeId === nodeId && p.connected), 10_000, `${nodeId} disconnected`);
}

/** A refused hello leaves no trace of the peer at the sidecar. */
function expectUnknown(s: TestSidecar, nodeId: string): void {
  expect(s.sidecar.mesh.status().map((p) => p.nodeId)).not.toContain(nodeId);
}

/** Nothing was ever stored in `channel` (the tests' channels get relay copies only). */
function expectNothingStored(s: TestSidecar, channel: string): void {
  expect(s.sidecar.log.head(channel).last).toBe(0);
  expect(s.sidecar.log.channels()).not.toContain(channel);
}

/**
 * The sidecar still serves: a publish reaches a subscriber on its service API, and a
 * well-behaved peer can link (hello answered with hello, then an interest snapshot).
 */
async function expectServing(s: TestSidecar): Promise<void> {
  const channel = fresh("alive");
  const client = s.client();
  const sub = client.subscribe({ channel, group: "checker", from: "earliest" });
  try {
    await sub.subscribed();
    const published = await client.publish({ channel, data: "still here" });
    const [d] = await take(sub, 1);
    expect({ sequence: d?.sequence, text: d?.text() }).toEqual({ sequence: published.sequence, text: "still here" });
  } finally {
    sub.close();
  }

  const p = new RawPeer(s.peerAddress);
  try {
    const link = p.link();
    link.sendHello(hello(freshNode()));
    const theirs = await link.expect("hello");
    expect({ nodeId: theirs.nodeId, instance: theirs.instance }).toEqual({ nodeId: s.sidecar.mesh.nodeId, instance: s.sidecar.mesh.instance });
    const interest = await link.expect("interest");
    expect(interest.snapshot).toBe(true);
  } finally {
    p.close();
  }
}

/**
 * Opens a subscription to a fresh (channel, group) on `s`, and a raw link whose interest
 * from the sidecar (the snapshot, or a delta after it) lists that group.
 */
async function advertisedLink(s: TestSidecar, h = hello(freshNode())) {
  const nodeId = h.nodeId;
  const channel = fresh("ch");
  const group = fresh("g");
  const sub = s.client().subscribe({ channel, group, from: "earliest" });
  subscriptions.push(sub);
  await sub.subscribed();
  const { link, interest } = await rawPeer(s).linkUp(h);
  const lists = (i: { groups: { channel: string; group: string; members: boolean }[] }): boolean => i.groups.some((g) => g.channel === channel && g.group === group && g.members);
  if (!lists(interest)) await link.interest(lists);
  return { channel, group, sub, link, nodeId };
}

describe("Peer.Link refuses bad input", () => {
  let t: TestSidecar;

  beforeAll(async () => {
    t = await startSidecar({ nodeId: "a" });
  });
  afterAll(async () => {
    await t?.dispose();
  });
  afterEach(async () => {
    await expectServing(t);
  });

  describe("hello", () => {
    it("refuses a peer with no common protocol version, naming both ranges", async () => {
      const nodeId = freshNode();
      const link = rawPeer(t).link();
      link.sendHello(hello(nodeId, { minProtocolVersion: 99, maxProtocolVersion: 99 }));
      const st = await expectEnded(link, t, status.FAILED_PRECONDITION, Reason.UNSUPPORTED_PROTOCOL);
      expect(st.details).toContain("99..99");
      expect(st.details).toContain("1..1");
      expect(link.received).toEqual([]);
      expectUnknown(t, nodeId);
    });

    it.each([
      ["min > max", { minProtocolVersion: 2, maxProtocolVersion: 1 }],
      ["min 0", { minProtocolVersion: 0, maxProtocolVersion: 1 }],
    ])("refuses an empty protocol range (%s) as INVALID_ARGUMENT", async (_, versions) => {
      const nodeId = freshNode();
      const link = rawPeer(t).link();
      link.sendHello(hello(nodeId, versions));
      await expectEnded(link, t, status.INVALID_ARGUMENT, Reason.UNSUPPORTED_PROTOCOL);
      expect(link.received).toEqual([]);
      expectUnknown(t, nodeId);
    });

    it("refuses a hello with the sidecar's own node id from another instance (DUPLICATE_NODE_ID)", async () => {
      const link = rawPeer(t).link();
      link.sendHello(hello(t.sidecar.mesh.nodeId));
      await expectEnded(link, t, status.PERMISSION_DENIED, Reason.DUPLICATE_NODE_ID);
      expect(link.received).toEqual([]);
      expect(t.sidecar.mesh.status().map((p) => p.nodeId)).not.toContain(t.sidecar.mesh.nodeId);
    });

    it("tells a sidecar that dialed its own address so (SELF_LINK)", async () => {
      const link = rawPeer(t).link();
      link.sendHello(hello(t.sidecar.mesh.nodeId, { instance: t.sidecar.mesh.instance }));
      await expectEnded(link, t, status.ALREADY_EXISTS, Reason.SELF_LINK);
      expect(link.received).toEqual([]);
    });

    it("refuses a second peer claiming the node id of a linked one, and keeps the first link", async () => {
      const nodeId = freshNode();
      const p = rawPeer(t);
      const first = (await p.linkUp(hello(nodeId))).link;

      const second = p.link();
      second.sendHello(hello(nodeId));
      await expectEnded(second, t, status.PERMISSION_DENIED, Reason.DUPLICATE_NODE_ID);
      expect(second.received).toEqual([]);

      // The first link is up at both ends and still carries frames: a new group is advertised on it.
      expect(first.closed).toBe(false);
      expect(t.sidecar.mesh.status().filter((s) => s.nodeId === nodeId)).toEqual([{ nodeId, connected: true, groups: [], inflight: 0 }]);
      const channel = fresh("ch");
      const sub = t.client().subscribe({ channel, group: "late", from: "earliest" });
      subscriptions.push(sub);
      await sub.subscribed();
      await first.interest((i) => !i.snapshot && i.groups.some((g) => g.channel === channel && g.group === "late" && g.members));
      expect(first.closed).toBe(false);
    });

    it("refuses a second link from the same process when the sidecar's node id is lower (LINK_EXISTS), keeping the first", async () => {
      const h = hello(freshNode()); // "raw-…" > "a": the link "a" would dial is the one kept
      const p = rawPeer(t);
      const first = (await p.linkUp(h)).link;
      const second = p.link();
      second.sendHello(h);
      await expectEnded(second, t, status.ALREADY_EXISTS, Reason.LINK_EXISTS);
      expect(second.received).toEqual([]);
      expect(first.closed).toBe(false);
      expect(t.sidecar.mesh.status().filter((s) => s.nodeId === h.nodeId).map((s) => s.connected)).toEqual([true]);
    });

    it("replaces a link by the one the lower node id dialed, ending the old one with LINK_EXISTS", async () => {
      const h = hello(`0${freshNode()}`); // "0raw-…" < "a": the peer's own dial is the one kept
      const p = rawPeer(t);
      const first = (await p.linkUp(h)).link;
      const { link: second, hello: theirs } = await p.linkUp(h);
      expect(theirs.nodeId).toBe("a");
      await expectEnded(first, t, status.ALREADY_EXISTS, Reason.LINK_EXISTS);
      expect(second.closed).toBe(false);
      expect(t.sidecar.mesh.status().filter((s) => s.nodeId === h.nodeId).map((s) => s.connected)).toEqual([true]);
    });

    it.each([
      ["empty", ""],
      ["with spaces", "node a"],
      ["65 characters", `n${"x".repeat(64)}`],
      ["non-ASCII", "nöde"],
      ["starting with '-'", "-node"],
    ])("refuses an invalid node id (%s)", async (_, nodeId) => {
      const link = rawPeer(t).link();
      link.sendHello(hello(nodeId));
      await expectEnded(link, t, status.INVALID_ARGUMENT, Reason.PROTOCOL_VIOLATION);
      expect(link.received).toEqual([]);
      expectUnknown(t, nodeId);
    });

    it("accepts a node id of exactly 64 characters", async () => {
      const nodeId = `n${"x".repeat(62)}${++counter % 10}`;
      expect(nodeId).toHaveLength(64);
      const { hello: theirs, interest } = await rawPeer(t).linkUp(hello(nodeId));
      expect(theirs.nodeId).toBe("a");
      expect(interest.snapshot).toBe(true);
      expect(t.sidecar.mesh.status().find((p) => p.nodeId === nodeId)?.connected).toBe(true);
    });

    it("refuses instance 0", async () => {
      const nodeId = freshNode();
      const link = rawPeer(t).link();
      link.sendHello(hello(nodeId, { instance: 0n }));
      await expectEnded(link, t, status.INVALID_ARGUMENT, Reason.PROTOCOL_VIOLATION);
      expectUnknown(t, nodeId);
    });

    it("refuses log_id 0", async () => {
      const nodeId = freshNode();
      const link = rawPeer(t).link();
      link.sendHello(hello(nodeId, { logId: 0n }));
      await expectEnded(link, t, status.INVALID_ARGUMENT, Reason.PROTOCOL_VIOLATION);
      expectUnknown(t, nodeId);
    });

    it("refuses a heartbeat interval over an hour", async () => {
      const nodeId = freshNode();
      const link = rawPeer(t).link();
      link.sendHello(hello(nodeId, { heartbeatIntervalMs: 3_600_001 }));
      await expectEnded(link, t, status.INVALID_ARGUMENT, Reason.PROTOCOL_VIOLATION);
      expectUnknown(t, nodeId);
    });
  });

  describe("frame order and framing", () => {
    it.each([
      ["truncated varint", [0xff, 0xff, 0xff]],
      ["length past the end", [0x0a, 0x05, 0x01]],
      ["field number 0", [0x07]],
    ])("refuses garbage as the first frame (%s) with MALFORMED_MESSAGE", async (_, bytes) => {
      const link = rawPeer(t).link();
      link.write(Buffer.from(bytes));
      await expectEnded(link, t, status.INVALID_ARGUMENT, Reason.MALFORMED_MESSAGE);
      expect(link.received).toEqual([]);
    });

    it.each<[string, (l: RawLink) => void]>([
      ["heartbeat", (l) => l.send({ case: "heartbeat", value: { sentUnixMs: 1n } })],
      ["interest", (l) => l.sendInterest(true)],
      ["forward", (l) => l.forward(1, [forwarded("x", "g", 1)])],
      ["an empty frame", (l) => l.write(new Uint8Array(0))],
    ])("refuses a first frame that is not hello (%s) with PROTOCOL_VIOLATION", async (_, send) => {
      const link = rawPeer(t).link();
      send(link);
      await expectEnded(link, t, status.INVALID_ARGUMENT, Reason.PROTOCOL_VIOLATION);
      expect(link.received).toEqual([]);
    });

    it("refuses a second hello", async () => {
      const nodeId = freshNode();
      const { link } = await rawPeer(t).linkUp(hello(nodeId));
      link.sendHello(hello(nodeId));
      await expectEnded(link, t, status.INVALID_ARGUMENT, Reason.PROTOCOL_VIOLATION);
      await expectDisconnected(t, nodeId);
    });

    it("refuses an empty frame after hello with MALFORMED_MESSAGE", async () => {
      const nodeId = freshNode();
      const { link } = await rawPeer(t).linkUp(hello(nodeId));
      link.write(new Uint8Array(0));
      await expectEnded(link, t, status.INVALID_ARGUMENT, Reason.MALFORMED_MESSAGE);
      await expectDisconnected(t, nodeId);
    });

    it("refuses garbage after hello with MALFORMED_MESSAGE", async () => {
      const nodeId = freshNode();
      const { link } = await rawPeer(t).linkUp(hello(nodeId));
      link.write(Buffer.from([0x1a, 0x7f, 0x08]));
      await expectEnded(link, t, status.INVALID_ARGUMENT, Reason.MALFORMED_MESSAGE);
      await expectDisconnected(t, nodeId);
    });

    it("refuses an interest delta before the snapshot", async () => {
      const nodeId = freshNode();
      const { link } = await rawPeer(t).linkUp(hello(nodeId), { snapshot: false });
      link.sendInterest(false, [groupInterest(fresh("ch"), "g")]);
      await expectEnded(link, t, status.INVALID_ARGUMENT, Reason.PROTOCOL_VIOLATION);
      await expectDisconnected(t, nodeId);
    });

    it("refuses a second interest snapshot", async () => {
      const nodeId = freshNode();
      const { link } = await rawPeer(t).linkUp(hello(nodeId));
      link.sendInterest(true, [groupInterest(fresh("ch"), "g")]);
      await expectEnded(link, t, status.INVALID_ARGUMENT, Reason.PROTOCOL_VIOLATION);
      await expectDisconnected(t, nodeId);
    });
  });

  describe("interest", () => {
    it.each<[string, boolean, string, string, string]>([
      ["an uppercase channel (snapshot)", true, "Orders", "g", Reason.INVALID_CHANNEL],
      ["a channel with '~' (snapshot)", true, "orders~g", "g", Reason.INVALID_CHANNEL],
      ["a group over 200 characters (snapshot)", true, "orders", `g${"x".repeat(200)}`, Reason.INVALID_GROUP],
      ["an uppercase channel (delta)", false, "Orders", "g", Reason.INVALID_CHANNEL],
      ["a channel with '~' (delta)", false, "orders~g", "g", Reason.INVALID_CHANNEL],
      ["a group over 200 characters (delta)", false, "orders", `g${"x".repeat(200)}`, Reason.INVALID_GROUP],
    ])("refuses %s", async (_, snapshot, channel, group, reason) => {
      const nodeId = freshNode();
      const { link } = await rawPeer(t).linkUp(hello(nodeId), { snapshot: !snapshot });
      link.sendInterest(snapshot, [groupInterest(channel, group)]);
      await expectEnded(link, t, status.INVALID_ARGUMENT, reason);
      await expectDisconnected(t, nodeId);
      expect(t.sidecar.engine.status().some((g) => g.channel === channel)).toBe(false);
    });
  });

  describe("outcomes", () => {
    it("count only for events forwarded to the peer: acks for another group's events change nothing", async () => {
      const channel = fresh("outcomes");
      const creating = t.client().subscribe({ channel, group: "local", from: "earliest" });
      await creating.subscribed();
      creating.close();
      const published = await t.client().publishMany([1, 2, 3, 4, 5].map((i) => ({ channel, data: `e${i}` })));
      const { link } = await rawPeer(t).linkUp(hello(freshNode()));
      // Nothing of either group was forwarded to this peer: "local" has its member here, and
      // "remote" the peer never advertised.
      link.send({
        case: "outcomes",
        value: {
          groups: [
            { channel, group: "local", done: published.map((p) => p.sequence), returned: [] },
            { channel, group: "remote", done: [1n, 2n], returned: [3n] },
          ],
        },
      });
      // Frames are handled in order: once the forward after them is stored, the outcomes were seen.
      link.forward(1, []);
      await link.until("stored");
      const sub = t.client().subscribe({ channel, group: "local" });
      subscriptions.push(sub);
      expect((await take(sub, 5)).map((d) => d.text())).toEqual(["e1", "e2", "e3", "e4", "e5"]);
      expect(t.sidecar.engine.status().some((g) => g.channel === channel && g.group === "remote")).toBe(false);
    });

    it.each<[string, { done: bigint[]; returnedAfterAttempts: { sequence: bigint; attempts: number }[] }]>([
      ["0 attempts", { done: [1n], returnedAfterAttempts: [{ sequence: 2n, attempts: 0 }] }],
      ["a sequence 0 given back after attempts", { done: [1n], returnedAfterAttempts: [{ sequence: 0n, attempts: 1 }] }],
      ["a sequence over 2^53-1 given back after attempts", { done: [1n], returnedAfterAttempts: [{ sequence: 2n ** 53n, attempts: 1 }] }],
    ])("refuses outcomes with %s (PROTOCOL_VIOLATION), applying none of them", async (_, outcome) => {
      const channel = fresh("outcomes");
      const nodeId = freshNode();
      const { link } = await rawPeer(t).linkUp(hello(nodeId), { snapshot: false });
      link.sendInterest(true, [groupInterest(channel, "g")]);
      await eventually(() => t.sidecar.mesh.status().some((p) => p.groups.includes(`${channel}!g`)), 10_000, "forwarding g to the peer");
      await t.client().publishMany([{ channel, data: "one" }, { channel, data: "two" }]);
      expect((await link.until("forward")).events.map((e) => e.sequence)).toEqual([1n, 2n]);
      link.send({ case: "outcomes", value: { groups: [{ channel, group: "g", ...outcome }] } });
      await expectEnded(link, t, status.INVALID_ARGUMENT, Reason.PROTOCOL_VIOLATION);
      // #1's "done" was not applied: the group still has both.
      expect(t.sidecar.engine.status().find((g) => g.channel === channel && g.group === "g")!.backlog).toBe(2);
      await expectDisconnected(t, nodeId);
    });
  });

  describe("forward", () => {
    it("refuses a forward for a group the sidecar never advertised (NOT_ADVERTISED), storing nothing", async () => {
      const nodeId = freshNode();
      const { link } = await rawPeer(t).linkUp(hello(nodeId));
      const channel = fresh("ch");
      const group = fresh("g");
      link.forward(1, [forwarded(channel, group, 1), forwarded(channel, group, 2)]);
      await expectEnded(link, t, status.FAILED_PRECONDITION, Reason.NOT_ADVERTISED);
      expect(link.received.map((f) => f.case)).not.toContain("stored");
      expectNothingStored(t, channel);
      expect(t.sidecar.log.channels()).not.toContain(channel);
      await expectDisconnected(t, nodeId);
    });

    it("refuses a forward mixing an advertised group and one never advertised, storing nothing", async () => {
      const { channel, group, link, nodeId } = await advertisedLink(t);
      const other = fresh("g");
      link.forward(1, [forwarded(channel, group, 1), forwarded(channel, other, 1)]);
      await expectEnded(link, t, status.FAILED_PRECONDITION, Reason.NOT_ADVERTISED);
      expectNothingStored(t, channel);
      await expectDisconnected(t, nodeId);
    });

    // Each bad forward carries a good event first: a bad forward changes nothing.
    it.each<[string, (channel: string, group: string) => ForwardedEvent, status, string]>([
      ["event bytes that are garbage", (c, g) => forwarded(c, g, 2, { bytes: Buffer.from([0xff, 0xff, 0xff]) }), status.INVALID_ARGUMENT, Reason.INVALID_EVENT],
      ["an empty event (its channel is checked first, as on Publish)", (c, g) => forwarded(c, g, 2, { bytes: new Uint8Array(0) }), status.INVALID_ARGUMENT, Reason.INVALID_CHANNEL],
      ["an event without an id", (c, g) => forwarded(c, g, 2, { bytes: eventBytes(c, { id: "" }) }), status.INVALID_ARGUMENT, Reason.INVALID_EVENT],
      ["an event of another channel", (c, g) => forwarded(c, g, 2, { bytes: eventBytes(`${c}.other`) }), status.INVALID_ARGUMENT, Reason.INVALID_EVENT],
      ["sequence 0", (c, g) => forwarded(c, g, 0), status.INVALID_ARGUMENT, Reason.PROTOCOL_VIOLATION],
      ["a sequence over 2^53-1", (c, g) => forwarded(c, g, 2 ** 53), status.INVALID_ARGUMENT, Reason.PROTOCOL_VIOLATION],
      ["a channel that is not a name", (c, g) => forwarded(`${c}~x`, g, 2, { bytes: eventBytes(`${c}~x`) }), status.INVALID_ARGUMENT, Reason.INVALID_CHANNEL],
    ])("refuses a forward with %s, storing nothing", async (_, bad, code, reason) => {
      const { channel, group, link, nodeId } = await advertisedLink(t);
      link.forward(1, [forwarded(channel, group, 1), bad(channel, group)]);
      await expectEnded(link, t, code, reason);
      expect(link.received.map((f) => f.case)).not.toContain("stored");
      expectNothingStored(t, channel);
      await expectDisconnected(t, nodeId);
    });

    it("refuses a forward of more than 1000 events (BATCH_TOO_LARGE), storing nothing", async () => {
      const { channel, group, link, nodeId } = await advertisedLink(t);
      link.forward(1, Array.from({ length: 1001 }, (_, i) => forwarded(channel, group, i + 1)));
      await expectEnded(link, t, status.RESOURCE_EXHAUSTED, Reason.BATCH_TOO_LARGE);
      expectNothingStored(t, channel);
      await expectDisconnected(t, nodeId);
    });

    it("stores a forward of exactly 1000 events", async () => {
      const { channel, group, link } = await advertisedLink(t);
      link.forward(9, Array.from({ length: 1000 }, (_, i) => forwarded(channel, group, i + 1)));
      expect((await link.until("stored")).forwardId).toBe(9n);
      expect(t.sidecar.log.head(channel).last).toBe(1000);
      expect(link.closed).toBe(false);
    });

    it("stores a valid forward once, delivers it, and reports the outcomes (again on a retry)", async () => {
      const { channel, group, link, sub, nodeId } = await advertisedLink(t);
      const events = [1, 2, 3].map((sequence) => forwarded(channel, group, sequence));
      const forwardId = 2 ** 40 + 7;
      link.forward(forwardId, events);
      expect((await link.until("stored")).forwardId).toBe(BigInt(forwardId));
      expect(t.sidecar.log.head(channel).last).toBe(3);

      // The subscriber gets each event byte for byte, under its origin sequence, and acks it.
      const got = await take(sub, 3);
      expect(got.map((d) => d.sequence)).toEqual([1n, 2n, 3n]);
      const stored = await t.sidecar.log.read(channel, 1, 10);
      expect(stored.map((e) => Buffer.from(e.bytes).toString("hex"))).toEqual(events.map((e) => Buffer.from(e.bytes).toString("hex")));
      // Each a relay copy held for the group, naming its origin and its sequence there.
      expect(stored.map((e) => [e.onlyGroup, e.origin?.node, e.origin?.sequence])).toEqual([1, 2, 3].map((seq) => [group, nodeId, seq]));

      const key = `${channel}/${group}`;
      const enough = (seen: Map<string, { done: bigint[] }>): boolean => (seen.get(key)?.done.length ?? 0) >= 3;
      const first = await link.outcomes(enough);
      expect([...first.keys()]).toEqual([key]);
      expect({ done: [...first.get(key)!.done].sort(), returned: first.get(key)!.returned }).toEqual({ done: [1n, 2n, 3n], returned: [] });

      // The origin never heard (say): the same forward again is stored once, and reported done again.
      link.forward(forwardId + 1, events);
      expect((await link.until("stored")).forwardId).toBe(BigInt(forwardId + 1));
      expect(t.sidecar.log.head(channel).last).toBe(3);
      const again = await link.outcomes(enough);
      expect({ done: [...again.get(key)!.done].sort(), returned: again.get(key)!.returned }).toEqual({ done: [1n, 2n, 3n], returned: [] });
      expect(t.sidecar.log.head(channel).last).toBe(3);
      expect(link.closed).toBe(false);
    });

    it("answers an empty forward with stored", async () => {
      const { link } = await rawPeer(t).linkUp(hello(freshNode()));
      link.forward(5, []);
      expect((await link.until("stored")).forwardId).toBe(5n);
      expect(link.closed).toBe(false);
    });

    // Proto3 skips unknown fields: a forward next to one is still a forward (a receiver that
    // ignored it would have the origin resend it forever).
    it("stores a forward frame that also carries an unknown field (a newer peer)", async () => {
      const { channel, group, link } = await advertisedLink(t);
      const unknown = Buffer.from([0x98, 0x06, 0x01]); // field 99, varint 1
      link.write(Buffer.concat([writeForward(3, [forwarded(channel, group, 1)]), unknown]));
      link.forward(4, [forwarded(channel, group, 2)]);
      // Frames are handled in order: the first answer is for forward 3.
      expect((await link.until("stored")).forwardId).toBe(3n);
      expect((await link.until("stored")).forwardId).toBe(4n);
      expect(t.sidecar.log.head(channel).last).toBe(2);
    });
  });
});

describe("Peer.Link limits", () => {
  let t: TestSidecar;

  beforeAll(async () => {
    t = await startSidecar({ nodeId: "limits", maxEventBytes: 1024, maxMessageBytes: 64 * 1024 });
  });
  afterAll(async () => {
    await t?.dispose();
  });
  afterEach(async () => {
    await expectServing(t);
  });

  it("stores a forwarded event over its own maxEventBytes when it fits in a frame: the origin's limits applied", async () => {
    // Sidecars with different max event sizes must not refuse each other's events (the link
    // would end at every retry and the event never reach any member).
    const { channel, group, link } = await advertisedLink(t);
    const big = eventBytes(channel, { data: Buffer.alloc(1100, 1) });
    expect(big.length).toBeGreaterThan(1024);
    link.forward(1, [forwarded(channel, group, 1), forwarded(channel, group, 2, { bytes: big })]);
    expect((await link.until("stored")).forwardId).toBe(1n);
    expect(t.sidecar.log.head(channel).last).toBe(2);
  });

  it("stores a forwarded event of exactly maxEventBytes", async () => {
    const { channel, group, link } = await advertisedLink(t);
    const base = eventBytes(channel, { id: "exact", data: Buffer.alloc(900, 1) }).length;
    const exact = eventBytes(channel, { id: "exact", data: Buffer.alloc(900 + 1024 - base, 1) });
    expect(exact.length).toBe(1024);
    link.forward(1, [forwarded(channel, group, 1, { bytes: exact })]);
    expect((await link.until("stored")).forwardId).toBe(1n);
    expect(t.sidecar.log.head(channel).last).toBe(1);
  });

  it("ends a link whose frame is over maxMessageBytes with RESOURCE_EXHAUSTED, storing nothing", async () => {
    const { channel, group, link, nodeId } = await advertisedLink(t);
    // Many small (valid) events in one frame of over 64 KiB.
    const events = Array.from({ length: 900 }, (_, i) => forwarded(channel, group, i + 1));
    expect(writeForward(1, events).length).toBeGreaterThan(64 * 1024);
    link.forward(1, events);
    const st = await link.finished();
    expect({ code: status[st.code], reason: st.reason }).toEqual({ code: "RESOURCE_EXHAUSTED", reason: "" });
    expectNothingStored(t, channel);
    await expectDisconnected(t, nodeId);
    // The peer's state was cleaned up: it can link again (a restart: another instance).
    const { hello: theirs } = await rawPeer(t).linkUp(hello(nodeId));
    expect(theirs.nodeId).toBe("limits");
    expect(t.sidecar.mesh.status().find((p) => p.nodeId === nodeId)?.connected).toBe(true);
  });

  it("ends a link whose first frame is over maxMessageBytes with RESOURCE_EXHAUSTED", async () => {
    const link = rawPeer(t).link();
    link.write(Buffer.alloc(65 * 1024, 0));
    const st = await link.finished();
    expect({ code: status[st.code], reason: st.reason }).toEqual({ code: "RESOURCE_EXHAUSTED", reason: "" });
    expect(link.received).toEqual([]);
  });
});

describe("two sidecars with the same node id", () => {
  const all: TestSidecar[] = [];
  afterAll(async () => {
    for (const s of all) await s.dispose();
  });

  it("refuse to link, log why, and both go on serving", async () => {
    const records: { level: string; msg: string; reason?: string; address?: string }[] = [];
    const logger = createLogger({ level: "info", destination: { write: (line: string) => records.push(JSON.parse(line)) } });
    const b = await startSidecar({ nodeId: "twin" }, { logger });
    all.push(b);
    const a = await startSidecar({ nodeId: "twin", peers: [b.peerAddress] }, { logger });
    all.push(a);
    // The dialer (a) logs the refusal; the acceptor (b) logs that it refused.
    const dialer = (r: (typeof records)[number]): boolean => r.level === "warn" && r.address === b.peerAddress && r.reason === Reason.DUPLICATE_NODE_ID;
    await eventually(() => records.some((r) => dialer(r) && r.msg.includes(`cannot link with ${b.peerAddress}`)), 10_000, "the dialer's record");
    const acceptor = (r: (typeof records)[number]): boolean => r.level === "warn" && r.reason === Reason.DUPLICATE_NODE_ID && r.msg.includes("refused a link");
    await eventually(() => records.some((r) => acceptor(r) && r.msg.includes("twin")), 10_000, "the acceptor's record");
    expect(a.sidecar.mesh.status()).toEqual([]);
    expect(b.sidecar.mesh.status()).toEqual([]);
    expect(a.sidecar.mesh.instance).not.toBe(b.sidecar.mesh.instance);
    await expectServing(a);
    await expectServing(b);
    // Still refused after those links came and went.
    expect(a.sidecar.mesh.status().filter((p) => p.nodeId === "twin")).toEqual([]);
    expect(b.sidecar.mesh.status().filter((p) => p.nodeId === "twin")).toEqual([]);
  });
});

describe("relay copies and the dedup window", () => {
  let t: TestSidecar;

  beforeAll(async () => {
    // The shortest settings the configuration allows (peerTimeout < dedupWindow, dedupWindow >= 1 s).
    t = await startSidecar({ nodeId: "dedup", dedupWindowMs: 1000, peerTimeoutMs: 500 });
  });
  afterAll(async () => {
    await t?.dispose();
  });
  afterEach(async () => {
    await expectServing(t);
  });

  // A relay copy's dedup entry lasts as long as the copy, not the publish dedup window:
  // an event stays in flight at its origin until it is finished here, and every reconnect
  // forwards it again, however long ago it was first stored.
  it("stores an event once when its forward is retried after a reconnect, however long it was in flight", async () => {
    const h = hello(freshNode());
    const { channel, group, link: first, sub, nodeId } = await advertisedLink(t, h);
    const events = [1, 2, 3].map((sequence) => forwarded(channel, group, sequence));
    first.forward(1, events);
    expect((await first.until("stored")).forwardId).toBe(1n);
    const storedAt = Date.now();
    // The member here holds the events (it does not ack) for longer than the dedup window.
    expect((await take(sub, 3, () => {})).map((d) => d.sequence)).toEqual([1n, 2n, 3n]);
    await eventually(() => Date.now() - storedAt > 1100, 10_000, "the dedup window passed");
    // The link drops and comes back within the peer timeout: the origin forwards what is in flight again.
    first.cancel();
    await expectDisconnected(t, nodeId);
    const again = (await rawPeer(t).linkUp(h)).link;
    again.forward(2, events);
    expect((await again.until("stored")).forwardId).toBe(2n);
    expect(t.sidecar.log.head(channel).last).toBe(3);
  });
});

describe("a peer timeout shorter than the proof of a new link", () => {
  let s: TestSidecar;
  afterAll(async () => {
    await s?.dispose();
  });

  it("keeps a peer whose link came back at once: the new link stops the clock before the timeout", async () => {
    s = await startSidecar({ nodeId: "short-timeout", peerTimeoutMs: 1000 });
    const peer = rawPeer(s);
    const h = hello(freshNode());
    const first = await peer.linkUp(h);
    first.link.cancel();
    await expectDisconnected(s, h.nodeId);
    // Back at once, as the same process: the link that two sidecars keep when both dialed.
    const second = await peer.linkUp(h);
    await settle(1600);
    expect(second.link.closed).toBe(false);
    expect(s.sidecar.mesh.status().find((p) => p.nodeId === h.nodeId)?.connected).toBe(true);
  });
});
