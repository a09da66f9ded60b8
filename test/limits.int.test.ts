import { type ClientHttp2Stream, connect as http2Connect, constants as h2 } from "node:http2";
import { status } from "@grpc/grpc-js";
import { afterEach, describe, expect, it } from "vitest";
import { ClientError } from "../src/client/index.js";
import { createLogger } from "../src/ops/logger.js";
import { eventually, take } from "./support/collect.js";
import { PEER_MAX_STREAMS } from "../src/grpc/peer-server.js";
import { scrape, sampleValue } from "./support/prometheus.js";
import { grpcFrame, grpcRequest } from "./support/raw-http2.js";
import { RawPeer, forwarded, groupInterest, hello } from "./support/raw-peer.js";
import { type TestSidecar, startSidecar } from "./support/sidecar.js";

/**
 * The sidecar's count limits on real sidecars: a request past one is refused with
 * RESOURCE_EXHAUSTED and a stable reason, nothing of it is stored or created, and what is
 * within the limits goes on working.
 */

const cleanup: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanup.splice(0).reverse()) await c();
});

async function sidecar(...args: Parameters<typeof startSidecar>): Promise<TestSidecar> {
  const t = await startSidecar(...args);
  cleanup.push(() => t.dispose());
  return t;
}

/** The error a call was refused with, as the client reports it. */
async function refusal(p: Promise<unknown>): Promise<{ code: string; reason: string; message: string }> {
  const e = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(e).toBeInstanceOf(ClientError);
  const error = e as ClientError;
  return { code: status[error.code], reason: error.reason, message: error.message };
}

/** Log records of a sidecar, parsed. */
function capture(): { records: Record<string, unknown>[]; logger: ReturnType<typeof createLogger> } {
  const records: Record<string, unknown>[] = [];
  return { records, logger: createLogger({ level: "info", destination: { write: (line: string) => void records.push(JSON.parse(line)) } }) };
}

describe("maxChannels", () => {
  it("refuses a publish or a Subscribe that would make a channel past the limit, and stores nothing of it", async () => {
    // a, b and c have events; a group of a takes no channel of its own.
    const t = await sidecar({ maxChannels: 3 });
    const client = t.client({ source: "//limits" });
    for (const channel of ["limits.a", "limits.b", "limits.c"]) await client.publish({ channel, data: "x" });
    const sub = client.subscribe({ channel: "limits.a", group: "audit", from: "earliest" });
    await sub.subscribed();
    expect(t.sidecar.log.channelCount).toBe(3);

    const published = await refusal(client.publish({ channel: "limits.d", data: "x" }));
    expect(published).toMatchObject({ code: "RESOURCE_EXHAUSTED", reason: "TOO_MANY_CHANNELS" });
    expect(published.message).toContain("its limit (maxChannels) is 3");
    expect(published.message).toContain("raise maxChannels");
    expect(t.sidecar.log.head("limits.d").last).toBe(0);
    expect(t.sidecar.log.channels()).not.toContain("limits.d");

    const other = client.subscribe({ channel: "limits.e", group: "audit", reconnect: false });
    expect(await refusal(other.subscribed())).toMatchObject({ code: "RESOURCE_EXHAUSTED", reason: "TOO_MANY_CHANNELS" });
    expect(t.sidecar.engine.status().filter((g) => g.channel.startsWith("limits.e"))).toEqual([]);
    expect(t.sidecar.log.channelCount).toBe(3);
    // Operators see the refusals: one publish, one Subscribe.
    expect(sampleValue(await scrape(t.sidecar.httpAddress!), "weft_limit_refusals_total", { reason: "TOO_MANY_CHANNELS" })).toBe(2);

    // The channels held go on: a new event of one is stored and delivered.
    await client.publish({ channel: "limits.a", id: "second", data: "y" });
    const got = await take(sub, 2, (d) => d.ack());
    expect(got.map((d) => d.event.id).at(-1)).toBe("second");
    sub.close();
  });

  it("stores a peer's forward for a group here past the limit: the group holds its channel, copies take no other", async () => {
    const t = await sidecar({ nodeId: "held", maxChannels: 2 });
    const client = t.client({ source: "//limits" });
    // The group holds limits.held before it has any event; limits.other makes two channels.
    const sub = client.subscribe({ channel: "limits.held", group: "g", from: "earliest" });
    await sub.subscribed();
    await client.publish({ channel: "limits.other", data: "x" });
    expect(t.sidecar.log.channelCount).toBe(2);
    expect(await refusal(client.publish({ channel: "limits.third", data: "x" }))).toMatchObject({ reason: "TOO_MANY_CHANNELS" });

    const peer = new RawPeer(t.peerAddress);
    cleanup.push(() => peer.close());
    const { link } = await peer.linkUp(hello("far"));
    link.forward(1, [forwarded("limits.held", "g", 7)]);
    expect((await link.until("stored")).forwardId).toBe(1n);
    const [got] = await take(sub, 1);
    expect(got!.sequence).toBe(7n);
    expect(t.sidecar.log.channelCount).toBe(2);
    expect(link.closed).toBe(false);
    sub.close();
  });

  it("counts channels a restart loads, and refuses past them", async () => {
    const t = await sidecar({ maxChannels: 2 });
    const client = t.client();
    await client.publish({ channel: "limits.a", data: "x" });
    await client.publish({ channel: "limits.b", data: "x" });
    client.close();
    await t.restart();
    const again = t.client();
    expect(await refusal(again.publish({ channel: "limits.c", data: "x" }))).toMatchObject({ reason: "TOO_MANY_CHANNELS" });
    expect((await again.publish({ channel: "limits.b", data: "y" })).sequence).toBe(2n);
  });
});

describe("maxGroupsPerChannel", () => {
  it("refuses a Subscribe that would make a group past the limit, and creates nothing", async () => {
    const t = await sidecar({ maxGroupsPerChannel: 2 });
    const client = t.client();
    const subs = ["one", "two"].map((group) => client.subscribe({ channel: "limits.g", group }));
    await Promise.all(subs.map((s) => s.subscribed()));

    const third = client.subscribe({ channel: "limits.g", group: "three", reconnect: false });
    const refused = await refusal(third.subscribed());
    expect(refused).toMatchObject({ code: "RESOURCE_EXHAUSTED", reason: "TOO_MANY_GROUPS" });
    expect(refused.message).toContain("its limit (maxGroupsPerChannel) is 2");
    expect(t.sidecar.engine.status().map((g) => g.group).filter((g) => g === "three")).toEqual([]);
    expect(sampleValue(await scrape(t.sidecar.httpAddress!), "weft_limit_refusals_total", { reason: "TOO_MANY_GROUPS" })).toBe(1);
    // Its group was not made; the groups made hold one channel.
    expect(t.sidecar.log.channelCount).toBe(1);

    // Another member of an existing group joins as before.
    const more = client.subscribe({ channel: "limits.g", group: "one" });
    await more.subscribed();
    for (const s of [...subs, more]) s.close();
  });

  it("refuses a peer's interest in a group past the limit, logs it, and creates nothing", async () => {
    const { records, logger } = capture();
    const t = await sidecar({ nodeId: "origin", maxGroupsPerChannel: 1 }, { logger });
    const peer = new RawPeer(t.peerAddress);
    cleanup.push(() => peer.close());
    const { link } = await peer.linkUp(hello("far"), { snapshot: false });
    link.sendInterest(true, [groupInterest("limits.p", "first"), groupInterest("limits.p", "second")]);

    await eventually(() => t.sidecar.engine.status().some((g) => g.group === "first"), 10_000, "the first group created");
    await eventually(
      () => records.some((r) => r.reason === "TOO_MANY_GROUPS" && String(r.msg).includes("limits.p/second")),
      10_000,
      "the refusal of the second group logged",
    );
    expect(t.sidecar.engine.status().map((g) => g.group)).toEqual(["first"]);
  });
});

describe("maxStreamsPerConnection", () => {
  /** Opens a health Watch (answered at once, then open) on a raw HTTP/2 connection. */
  function watch(session: ReturnType<typeof http2Connect>): ClientHttp2Stream {
    const stream = grpcRequest(session, "/grpc.health.v1.Health/Watch");
    stream.end(grpcFrame(new Uint8Array(0)));
    return stream;
  }

  it("refuses the stream past the limit on one connection, and serves the ones within it", async () => {
    const t = await sidecar({ maxStreamsPerConnection: 4 });
    const session = http2Connect(`http://${t.address}`);
    session.on("error", () => {});
    cleanup.push(() => void session.destroy());
    // Sent before the sidecar's SETTINGS arrive, so the client does not hold the fifth back itself.
    const streams = [0, 1, 2, 3, 4].map(() => watch(session));
    const outcomes = streams.map(
      (s) =>
        new Promise<string>((resolve) => {
          s.on("response", () => resolve("answered"));
          s.on("close", () => resolve(s.rstCode === h2.NGHTTP2_REFUSED_STREAM ? "refused" : `closed ${s.rstCode}`));
        }),
    );
    expect(await Promise.all(outcomes)).toEqual(["answered", "answered", "answered", "answered", "refused"]);
    expect(session.remoteSettings.maxConcurrentStreams).toBe(4);
  });

  it("tells every connection its limit: the service API's setting, and the peer API's 100", async () => {
    const t = await sidecar({ maxStreamsPerConnection: 250 });
    for (const [address, limit] of [
      [t.address, 250],
      [t.peerAddress, PEER_MAX_STREAMS],
    ] as const) {
      const session = http2Connect(`http://${address}`);
      session.on("error", () => {});
      cleanup.push(() => void session.destroy());
      await new Promise<void>((resolve) => session.once("remoteSettings", () => resolve()));
      expect(session.remoteSettings.maxConcurrentStreams).toBe(limit);
    }
  });
});

describe("maxPeers", () => {
  it("refuses a hello from a new node past the limit with TOO_MANY_PEERS, logs it, and still takes known peers", async () => {
    const { records, logger } = capture();
    const t = await sidecar({ nodeId: "hub", maxPeers: 2 }, { logger });
    const peer = new RawPeer(t.peerAddress);
    cleanup.push(() => peer.close());
    const first = await peer.linkUp(hello("p1"));
    await peer.linkUp(hello("p2"));

    const third = peer.link();
    third.sendHello(hello("p3"));
    const st = await third.finished();
    expect({ code: status[st.code], reason: st.reason }).toEqual({ code: "RESOURCE_EXHAUSTED", reason: "TOO_MANY_PEERS" });
    expect(st.details).toContain("its limit (maxPeers) is 2");
    expect(third.received).toEqual([]);
    expect(t.sidecar.mesh.status().map((p) => p.nodeId).sort()).toEqual(["p1", "p2"]);
    expect(sampleValue(await scrape(t.sidecar.httpAddress!), "weft_limit_refusals_total", { reason: "TOO_MANY_PEERS" })).toBe(1);
    await eventually(() => records.some((r) => r.level === "warn" && r.reason === "TOO_MANY_PEERS" && String(r.msg).includes("p3")), 10_000, "the refusal logged");

    // A known peer linking again (a restart: another instance) is not a new one.
    first.link.cancel();
    await eventually(() => !t.sidecar.mesh.hasLink("p1"), 10_000, "p1's first link gone");
    await peer.linkUp(hello("p1"));
    expect(t.sidecar.mesh.hasLink("p1")).toBe(true);
  });
});

describe("maxReadAheadBytes", () => {
  it("keeps the bytes all groups hold within the budget while groups never ack, and a group that acks still gets every event", async () => {
    const budget = 2 * 1024 * 1024;
    const eventBytes = 16 * 1024;
    const count = 400; // 6.4 MiB a group: without the budget, nine groups hold ~57 MiB
    const t = await sidecar({ maxReadAheadBytes: budget });
    const client = t.client({ source: "//read-ahead" });
    const data = "x".repeat(eventBytes);
    for (let i = 0; i < count; i += 50) {
      await Promise.all(Array.from({ length: 50 }, (_, j) => client.publish({ channel: "limits.ra", id: `e${i + j}`, data })));
    }

    let most = 0;
    const sampler = setInterval(() => (most = Math.max(most, t.sidecar.engine.readAheadBytes)), 1);
    cleanup.push(() => clearInterval(sampler));
    // Eight groups whose members take every event they are given and never ack.
    const stalled = Array.from({ length: 8 }, (_, i) => client.subscribe({ channel: "limits.ra", group: `stalled-${i}`, from: "earliest", maxInFlight: 1000 }));
    const held: unknown[] = [];
    for (const sub of stalled) void (async () => { for await (const d of sub) held.push(d); })();
    await eventually(() => held.length > 0 && t.sidecar.engine.readAheadBytes >= budget / 2, 10_000, "the stalled groups holding the budget");

    const acking = client.subscribe({ channel: "limits.ra", group: "acking", from: "earliest", maxInFlight: 10 });
    const got = await take(acking, count, (d) => d.ack());
    expect(new Set(got.map((d) => d.event.id)).size).toBe(count);
    clearInterval(sampler);

    // One event more per group at most: a group that holds nothing may always read one.
    expect(most).toBeGreaterThan(budget / 2);
    expect(most).toBeLessThanOrEqual(budget + 9 * (eventBytes + 200));
    const metrics = await scrape(t.sidecar.httpAddress!);
    expect(sampleValue(metrics, "weft_read_ahead_bytes")).toBeLessThanOrEqual(budget + 9 * (eventBytes + 200));
    for (const sub of [...stalled, acking]) sub.close();
  });
});

describe("maxPartialMessageBytes", () => {
  it("ends the stream whose message started longest ago once messages received in part pass the budget", async () => {
    const { records, logger } = capture();
    const budget = 8 * 1024 * 1024;
    const t = await sidecar({ maxMessageBytes: 4 * 1024 * 1024, maxPartialMessageBytes: budget }, { logger });
    const session = http2Connect(`http://${t.address}`);
    session.on("error", () => {});
    cleanup.push(() => void session.destroy());
    // Three publish streams each start a 4 MiB message and send 3 MiB of it: 9 MiB held.
    const prefix = Buffer.alloc(5);
    prefix.writeUInt32BE(4 * 1024 * 1024 - 100, 1);
    const streams = [0, 1, 2].map(() => {
      const s = grpcRequest(session, "/weft.v1.Mesh/Publish");
      const seen: { status?: string; reason?: string; reset?: number } = {};
      s.on("response", (h) => Object.assign(seen, { status: h["grpc-status"], reason: h["weft-reason"] }));
      s.on("close", () => (seen.reset = s.rstCode));
      return { s, seen };
    });
    for (const { s } of streams) s.write(prefix);
    for (const { s } of streams) s.write(Buffer.alloc(3 * 1024 * 1024));

    // Refused: RESOURCE_EXHAUSTED / RECEIVE_BUDGET, or (when the reset overtakes the status)
    // ENHANCE_YOUR_CALM, which gRPC clients report as RESOURCE_EXHAUSTED.
    const refused = ({ seen }: (typeof streams)[number]): boolean => seen.status === String(status.RESOURCE_EXHAUSTED) || seen.reset === h2.NGHTTP2_ENHANCE_YOUR_CALM;
    await eventually(() => streams.some(refused), 20_000, "a stream refused");
    // One of the three goes; the other two stay open, and what is held fits.
    expect(streams.filter(refused)).toHaveLength(1);
    expect(streams.filter(({ seen }) => seen.reason !== undefined).every(({ seen }) => seen.reason === "RECEIVE_BUDGET")).toBe(true);
    const cut = records.find((r) => r.reason === "RECEIVE_BUDGET" && r.level === "warn");
    expect(String(cut?.msg)).toContain("its limit (maxPartialMessageBytes) is 8388608");
    const metrics = await scrape(t.sidecar.httpAddress!);
    const held = sampleValue(metrics, "weft_partial_message_bytes", { listener: "service" });
    expect(sampleValue(metrics, "weft_limit_refusals_total", { reason: "RECEIVE_BUDGET" })).toBe(1);
    expect(held).toBeGreaterThan(4 * 1024 * 1024);
    expect(held).toBeLessThanOrEqual(budget);
    expect(streams.filter((x) => !refused(x)).every(({ s }) => !s.closed)).toBe(true);

    // A stream that finishes its message is served as ever: the publish is stored.
    await t.client().publish({ channel: "limits.after", data: "ok" });
    expect(t.sidecar.log.head("limits.after").last).toBe(1);
  });
});
