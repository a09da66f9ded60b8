import { afterEach, describe, expect, it } from "vitest";
import type { Delivery } from "../src/client/index.js";
import { NO_OBSERVER } from "../src/ops/observer.js";
import { collect, eventually, take } from "./support/collect.js";
import { settled, startMesh } from "./support/mesh.js";
import { type Family, sampleValue, scrape } from "./support/prometheus.js";
import { type TestSidecar, startSidecar } from "./support/sidecar.js";

/**
 * /metrics of real sidecars after known traffic: the four rates, backlog, in-flight,
 * redeliveries, dead letters, dedup hits, latency and log sizes, on one sidecar and across
 * one mesh hop. Every scrape is parsed strictly (support/prometheus.ts).
 */
describe("/metrics after known traffic", () => {
  const started: TestSidecar[] = [];
  afterEach(async () => {
    for (const s of started.splice(0)) await s.dispose();
  });
  async function sidecar(...args: Parameters<typeof startSidecar>): Promise<TestSidecar> {
    const t = await startSidecar(...args);
    started.push(t);
    return t;
  }
  const metrics = (t: TestSidecar): Promise<Map<string, Family>> => scrape(t.sidecar.httpAddress!);

  it("counts published = stored = N, acked = N once the handler acks, and the backlog goes back to 0", async () => {
    const N = 25;
    const channel = "metrics.orders";
    const t = await sidecar();
    const client = t.client();
    // The group exists before the events, and its member holds them unacked at first.
    const sub = client.subscribe({ channel, group: "billing", from: "earliest", maxInFlight: 10 });
    await sub.subscribed();
    const published = await client.publishMany(Array.from({ length: N }, (_, i) => ({ channel, data: { i } })));
    expect(published).toHaveLength(N);

    const held: Delivery[] = [];
    await collect(sub, (seen) => seen.length >= 10, (d) => void held.push(d));
    let m = await metrics(t);
    expect(sampleValue(m, "weft_events_published_total", { channel })).toBe(N);
    expect(sampleValue(m, "weft_events_stored_total", { channel, relay: "false" })).toBe(N);
    expect(sampleValue(m, "weft_events_acked_total", { channel })).toBe(0);
    expect(sampleValue(m, "weft_group_backlog", { channel, group: "billing", relay: "false" })).toBe(N);
    expect(sampleValue(m, "weft_group_inflight", { channel, group: "billing", relay: "false" })).toBe(10);
    expect(sampleValue(m, "weft_group_members", { channel, group: "billing", relay: "false" })).toBe(1);
    expect(sampleValue(m, "weft_log_events", { channel, relay: "false" })).toBe(N);
    expect(sampleValue(m, "weft_log_bytes", { channel, relay: "false" })).toBeGreaterThan(0);
    expect(sampleValue(m, "weft_log_bytes", { channel, relay: "false" })).toBe(sampleValue(m, "weft_events_stored_bytes_total", { channel }));

    for (const d of held) d.ack();
    await take(sub, N - 10);
    await eventually(async () => sampleValue(await metrics(t), "weft_group_backlog", { channel, group: "billing" }) === 0, 10_000, "backlog back to 0");
    m = await metrics(t);
    expect(sampleValue(m, "weft_events_acked_total", { channel, group: "billing", relay: "false" })).toBe(N);
    expect(sampleValue(m, "weft_group_inflight", { channel, group: "billing" })).toBe(0);
    expect(sampleValue(m, "weft_deliveries_total", { channel, group: "billing" })).toBe(N);
    expect(sampleValue(m, "weft_redeliveries_total", { channel, group: "billing" })).toBe(0);
    expect(sampleValue(m, "weft_publish_to_delivery_seconds_count", { channel, group: "billing" })).toBe(N);
    expect(sampleValue(m, "weft_publish_to_ack_seconds_count", { channel, group: "billing" })).toBe(N);
    expect(sampleValue(m, "weft_publish_to_ack_seconds_bucket", { channel, group: "billing", le: "+Inf" })).toBe(N);
    // Nothing left this sidecar: no peer.
    expect(sampleValue(m, "weft_events_forwarded_total")).toBe(0);
    expect(sampleValue(m, "weft_info", { node_id: t.sidecar.config.nodeId })).toBe(1);
    sub.close();
  });

  it("counts dedup hits, redeliveries and dead letters per channel and group", async () => {
    const channel = "metrics.retries";
    const t = await sidecar();
    const client = t.client({ source: "//metrics-test" });
    for (const id of ["a", "b", "c"]) await client.publish({ channel, id, data: id });
    // Re-published: acked with the original sequence, not stored again.
    for (const id of ["a", "b"]) expect((await client.publish({ channel, id, data: id })).duplicate).toBe(true);

    // Every delivery is nacked: each event goes out twice, then to the dead-letter channel.
    const sub = client.subscribe({ channel, group: "fussy", from: "earliest", maxAttempts: 2 });
    await take(sub, 6, (d) => d.nack());
    const dlq = `${channel}.dlq.fussy`;
    await eventually(async () => sampleValue(await metrics(t), "weft_dead_letters_total", { channel, group: "fussy" }) === 3, 10_000, "3 dead letters");
    const m = await metrics(t);
    expect(sampleValue(m, "weft_events_published_total", { channel })).toBe(5);
    expect(sampleValue(m, "weft_events_stored_total", { channel })).toBe(3);
    expect(sampleValue(m, "weft_dedup_hits_total", { channel })).toBe(2);
    expect(sampleValue(m, "weft_deliveries_total", { channel, group: "fussy" })).toBe(6);
    expect(sampleValue(m, "weft_redeliveries_total", { channel, group: "fussy" })).toBe(3);
    // Only first deliveries are timed.
    expect(sampleValue(m, "weft_publish_to_delivery_seconds_count", { channel, group: "fussy" })).toBe(3);
    // Dead letters are stored events of their own channel, and the group is done with them.
    expect(sampleValue(m, "weft_events_stored_total", { channel: dlq, relay: "false" })).toBe(3);
    expect(sampleValue(m, "weft_events_acked_total", { channel, group: "fussy" })).toBe(0);
    expect(sampleValue(m, "weft_group_backlog", { channel, group: "fussy", relay: "false" })).toBe(0);
    sub.close();
  });

  it("counts forwarded = N across one mesh hop, relay copies stored and acked at B, acks back at A", async () => {
    const N = 40;
    const channel = "metrics.hop";
    const [a, b] = await startMesh(["a", "b"]);
    started.push(a!, b!);
    const sub = b!.client().subscribe({ channel, group: "billing", from: "earliest" });
    await sub.subscribed();
    await settled(a!, [b!], channel, "billing");
    await a!.client().publishMany(Array.from({ length: N }, (_, i) => ({ channel, data: { i } })));
    await take(sub, N);
    await eventually(async () => sampleValue(await metrics(a!), "weft_events_acked_total", { channel, group: "billing" }) === N, 20_000, "acks back at A");

    const ma = await metrics(a!);
    expect(sampleValue(ma, "weft_events_published_total", { channel })).toBe(N);
    expect(sampleValue(ma, "weft_events_stored_total", { channel, relay: "false" })).toBe(N);
    // Re-forwards are counted too: when both sidecars dialed at once and one link replaced the
    // other while the events went out, those sent on the first went again.
    const forwarded = sampleValue(ma, "weft_events_forwarded_total", { channel, peer: "b" });
    const linksUp = sampleValue(ma, "weft_peer_link_changes_total", { peer: "b", state: "up" });
    expect(linksUp).toBeGreaterThanOrEqual(1);
    if (linksUp === 1) expect(forwarded).toBe(N);
    else expect(forwarded).toSatisfy((n: number) => n >= N && n <= N * linksUp);
    expect(sampleValue(ma, "weft_peer_forwarded_bytes_total", { peer: "b" })).toBeGreaterThan(0);
    expect(sampleValue(ma, "weft_events_acked_total", { channel, group: "billing", relay: "false" })).toBe(N);
    expect(sampleValue(ma, "weft_group_backlog", { channel, group: "billing" })).toBe(0);
    expect(sampleValue(ma, "weft_peer_up", { peer: "b" })).toBe(1);
    expect(sampleValue(ma, "weft_peer_inflight", { peer: "b" })).toBe(0);
    expect(sampleValue(ma, "weft_peer_link_changes_total", { peer: "b", state: "up" })).toBeGreaterThanOrEqual(1);

    const mb = await metrics(b!);
    // B's own registry: nothing was published to it, it stored and acked the relay copies.
    expect(sampleValue(mb, "weft_events_published_total")).toBe(0);
    expect(sampleValue(mb, "weft_events_stored_total", { channel, relay: "false" })).toBe(0);
    expect(sampleValue(mb, "weft_events_stored_total", { channel, relay: "true" })).toBe(N);
    expect(sampleValue(mb, "weft_events_acked_total", { channel, group: "billing", relay: "true" })).toBe(N);
    expect(sampleValue(mb, "weft_events_acked_total", { channel, group: "billing", relay: "false" })).toBe(0);
    expect(sampleValue(mb, "weft_deliveries_total", { channel, group: "billing", relay: "true" })).toBe(N);
    expect(sampleValue(mb, "weft_events_forwarded_total")).toBe(0);
    // The copies are events of the channel's own log: its size counts them.
    expect(sampleValue(mb, "weft_log_events", { channel, relay: "false" })).toBe(N);
    expect(sampleValue(mb, "weft_log_bytes", { channel, relay: "false" })).toBe(sampleValue(mb, "weft_events_stored_bytes_total", { channel }));
    expect(sampleValue(mb, "weft_group_backlog", { channel, group: "billing" })).toBe(0);
    expect(sampleValue(mb, "weft_peer_up", { peer: "a" })).toBe(1);
    // Every series of a channel is labelled by the event channel.
    for (const family of mb.values()) for (const s of family.samples) expect(["", channel]).toContain(s.labels.channel ?? "");
    sub.close();
  });

  it("drops a peer's series once the mesh forgets it after the peer timeout", async () => {
    const channel = "metrics.gone";
    const [a, b] = await startMesh(["a", "b"], { peerTimeoutMs: 300 });
    started.push(a!, b!);
    const sub = b!.client().subscribe({ channel, group: "billing", from: "earliest" });
    await sub.subscribed();
    await settled(a!, [b!], channel, "billing");
    await a!.client().publishMany(Array.from({ length: 5 }, (_, i) => ({ channel, data: { i } })));
    await take(sub, 5);
    const peerSamples = (m: Map<string, Family>): string[] =>
      [...m.entries()].flatMap(([name, family]) => family.samples.filter((s) => s.labels.peer === "b").map(() => name));
    const before = peerSamples(await metrics(a!));
    for (const name of ["weft_events_forwarded_total", "weft_peer_forwarded_bytes_total", "weft_peer_link_changes_total", "weft_peer_up"]) {
      expect(before).toContain(name);
    }

    sub.close();
    await b!.stop();
    await eventually(() => !a!.sidecar.mesh.status().some((p) => p.nodeId === "b"), 20_000, "b forgotten at a");
    expect(peerSamples(await metrics(a!))).toEqual([]);
  });

  it("still tells an observer passed to Sidecar.start, besides counting", async () => {
    const channel = "metrics.composed";
    let published = 0;
    const t = await sidecar({}, { observer: { ...NO_OBSERVER, published: (_c, n) => void (published += n) } });
    await t.client().publishMany([{ channel }, { channel }]);
    expect(published).toBe(2);
    expect(sampleValue(await metrics(t), "weft_events_published_total", { channel })).toBe(2);
  });
});
