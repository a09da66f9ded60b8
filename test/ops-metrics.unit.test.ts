import { describe, expect, it } from "vitest";
import type { OutgoingDelivery } from "../src/delivery/types.js";
import { type StoredEvent, recordSize } from "../src/log/record.js";
import { SidecarMetrics } from "../src/ops/metrics.js";
import { NO_OBSERVER, type Observer, composeObservers } from "../src/ops/observer.js";
import { parseExposition, sampleValue } from "./support/prometheus.js";

const NOW = 1_700_000_000_000;

function event(channel: string, sequence: number, appendedAt: number): StoredEvent {
  return { channel, sequence, appendedAt, key: "", bytes: new Uint8Array(10) };
}

/** A relay copy held for `group`: an event of `channel` that another sidecar published. */
function copy(channel: string, sequence: number, appendedAt: number, group: string): StoredEvent {
  return { ...event(channel, sequence, appendedAt), origin: { node: "far", log: "00ff", sequence: sequence + 100 }, onlyGroup: group, copyEpoch: 0 };
}

function delivery(channel: string, sequence: number, attempt: number, appendedAt: number): OutgoingDelivery {
  return { deliveryId: sequence, attempt, deadline: NOW + 30_000, event: event(channel, sequence, appendedAt) };
}

async function render(metrics: SidecarMetrics) {
  return parseExposition(await metrics.render());
}

describe("the exposition parser of the tests", () => {
  it("accepts the format and reads labels, escapes and special values", () => {
    const families = parseExposition(
      [
        "# HELP a_total Text with \\\\ and \\n escapes.",
        "# TYPE a_total counter",
        'a_total{x="q\\"uote",y="back\\\\slash",z="new\\nline"} 3',
        "a_total 1.5e3",
        "# a free comment",
        "# TYPE h histogram",
        'h_bucket{le="0.5"} 1',
        'h_bucket{le="+Inf"} 2',
        "h_sum 0.7",
        "h_count 2",
        "g NaN",
        "",
      ].join("\n"),
    );
    expect(families.get("a_total")!.help).toBe("Text with \\ and \n escapes.");
    expect(families.get("a_total")!.samples[0]!.labels).toEqual({ x: 'q"uote', y: "back\\slash", z: "new\nline" });
    expect(sampleValue(families, "a_total")).toBe(1503);
    expect(families.get("h")!.samples).toHaveLength(4);
    expect(families.get("g")!.type).toBe("untyped");
  });

  it.each([
    ["a{x=\"1\"} 1", undefined],
    ["a{x=\"1\"}  1", /single space/],
    ["a{x=1} 1", /without ="value"/],
    ['a{x="1} 1', /not closed/],
    ['a{x="\\t"} 1', /invalid escape/],
    ['a{1x="1"} 1', /not a label name/],
    ['a{x="1",x="2"} 1', /the label x twice/],
    ["a one", /not a sample value/],
    ["9a 1", /without a metric name/],
    ["# TYPE a gauges", /not a metric type/],
    ["# TYPE a-b gauge", /not a metric name/],
    ["#TYPE a gauge", /malformed HELP or TYPE/],
    ["a 1\n# TYPE a gauge", /TYPE of a after its samples/],
    ["a 1\nb 1\na 2", /appears again after another family/],
    ["a 1\na 1", /duplicate series/],
    ["# TYPE c counter\nc -1", /negative counter/],
    ['# TYPE h histogram\nh_bucket{le="1"} 2\nh_bucket{le="+Inf"} 1\nh_count 1', /not cumulative/],
    ['# TYPE h histogram\nh_bucket{le="1"} 1\nh_count 1', /no \+Inf bucket/],
  ])("refuses %j", (text, problem) => {
    if (problem === undefined) expect(() => parseExposition(`${text}\n`)).not.toThrow();
    else expect(() => parseExposition(`${text}\n`)).toThrow(problem);
  });
});

describe("SidecarMetrics", () => {
  it("counts what the observer is told, labelling relay copies relay=\"true\" by the events' origin", async () => {
    const metrics = new SidecarMetrics({ nodeId: "n1", version: "0.1.0", now: () => NOW });
    metrics.published("orders", 3);
    // One append of two of this sidecar's own events and three relay copies (for two groups).
    const mixed = [event("orders", 4, NOW), copy("orders", 5, NOW, "billing"), copy("orders", 6, NOW, "billing"), event("orders", 7, NOW), copy("orders", 8, NOW, "shipping")];
    const copyBytes = mixed.filter((e) => e.origin).reduce((n, e) => n + recordSize(e), 0);
    metrics.stored("orders", 3, 300, { count: 0, bytes: 0 });
    metrics.stored("orders", 5, 200 + copyBytes, { count: mixed.filter((e) => e.origin).length, bytes: copyBytes });
    metrics.deduplicated("orders", false);
    metrics.deduplicated("orders", true);
    metrics.forwarded("b", "orders", "billing", 2, 50);
    metrics.forwarded("c", "orders", "billing", 1, 25);
    metrics.delivered("orders", "billing", [delivery("orders", 1, 1, NOW - 20), delivery("orders", 2, 2, NOW - 5_000)]);
    metrics.delivered("orders", "billing", [{ attempt: 1, event: copy("orders", 5, NOW - 3, "billing") }]);
    metrics.acked("orders", "billing", event("orders", 1, NOW - 40));
    metrics.acked("orders", "billing", copy("orders", 5, NOW - 2, "billing"));
    metrics.deadLettered("orders", "billing", event("orders", 2, NOW));
    metrics.deadLettered("orders", "billing", copy("orders", 6, NOW, "billing"));
    metrics.expired("orders", undefined, 4);
    metrics.expired("orders", "billing", 1);
    metrics.peerLink("b", true);
    metrics.peerLink("b", false);

    const f = await render(metrics);
    expect(sampleValue(f, "weft_info", { node_id: "n1", version: "0.1.0" })).toBe(1);
    expect(sampleValue(f, "weft_events_published_total", { channel: "orders" })).toBe(3);
    expect(sampleValue(f, "weft_events_stored_total", { channel: "orders", relay: "false" })).toBe(5);
    expect(sampleValue(f, "weft_events_stored_total", { channel: "orders", relay: "true" })).toBe(3);
    expect(sampleValue(f, "weft_events_stored_bytes_total", { channel: "orders", relay: "false" })).toBe(500);
    expect(sampleValue(f, "weft_events_stored_bytes_total", { channel: "orders", relay: "true" })).toBe(copyBytes);
    expect(sampleValue(f, "weft_dedup_hits_total", { channel: "orders", relay: "false" })).toBe(1);
    expect(sampleValue(f, "weft_dedup_hits_total", { channel: "orders", relay: "true" })).toBe(1);
    expect(sampleValue(f, "weft_events_forwarded_total", { channel: "orders", peer: "b" })).toBe(2);
    expect(sampleValue(f, "weft_events_forwarded_total", { channel: "orders" })).toBe(3);
    expect(sampleValue(f, "weft_peer_forwarded_bytes_total", { peer: "c" })).toBe(25);
    expect(sampleValue(f, "weft_deliveries_total", { channel: "orders", group: "billing", relay: "false" })).toBe(2);
    expect(sampleValue(f, "weft_deliveries_total", { channel: "orders", group: "billing", relay: "true" })).toBe(1);
    expect(sampleValue(f, "weft_redeliveries_total", { channel: "orders", group: "billing" })).toBe(1);
    expect(sampleValue(f, "weft_events_acked_total", { channel: "orders", group: "billing", relay: "false" })).toBe(1);
    expect(sampleValue(f, "weft_events_acked_total", { channel: "orders", group: "billing", relay: "true" })).toBe(1);
    expect(sampleValue(f, "weft_dead_letters_total", { group: "billing", relay: "false" })).toBe(1);
    expect(sampleValue(f, "weft_dead_letters_total", { group: "billing", relay: "true" })).toBe(1);
    expect(sampleValue(f, "weft_events_expired_total", { channel: "orders" })).toBe(4);
    expect(sampleValue(f, "weft_group_events_expired_total", { group: "billing" })).toBe(1);
    expect(sampleValue(f, "weft_peer_link_changes_total", { peer: "b", state: "down" })).toBe(1);
    // Latency: only first deliveries, from the append time, in seconds.
    expect(sampleValue(f, "weft_publish_to_delivery_seconds_count", { group: "billing", relay: "false" })).toBe(1);
    expect(sampleValue(f, "weft_publish_to_delivery_seconds_sum", { group: "billing", relay: "false" })).toBeCloseTo(0.02);
    expect(sampleValue(f, "weft_publish_to_delivery_seconds_bucket", { group: "billing", relay: "false", le: "0.025" })).toBe(1);
    expect(sampleValue(f, "weft_publish_to_delivery_seconds_sum", { group: "billing", relay: "true" })).toBeCloseTo(0.003);
    expect(sampleValue(f, "weft_publish_to_ack_seconds_sum", { relay: "false" })).toBeCloseTo(0.04);
    expect(sampleValue(f, "weft_publish_to_ack_seconds_count", { relay: "true" })).toBe(1);
    // Every series is labelled by an event channel.
    for (const family of f.values()) for (const s of family.samples) expect(["", "orders"]).toContain(s.labels.channel ?? "");
  });

  it("reads backlog, in-flight, members, peer links and log sizes from the sidecar at scrape time", async () => {
    const metrics = new SidecarMetrics({ nodeId: "n1", version: "0.1.0" });
    let backlog = 7;
    const heads: Record<string, { first: number; last: number; bytes: number; expired: number }> = {
      orders: { first: 3, last: 10, bytes: 800, expired: 2 },
    };
    // Before watch: the gauges have no series.
    expect(sampleValue(await render(metrics), "weft_group_backlog")).toBe(0);
    metrics.watch({
      log: { channels: () => Object.keys(heads), head: (c) => heads[c]! },
      engine: {
        status: () => [{ channel: "orders", group: "billing", backlog, inflight: 3, inflightCopies: 1, members: 2 }],
        readAheadBytes: 4096,
      },
      mesh: { status: () => [{ nodeId: "b", connected: true, groups: [], inflight: 4 }, { nodeId: "c", connected: false, groups: [], inflight: 0 }] },
    });
    let f = await render(metrics);
    // The backlog and members of the whole group (relay copies held for it included).
    expect(sampleValue(f, "weft_group_backlog", { channel: "orders", group: "billing", relay: "false" })).toBe(7);
    expect(sampleValue(f, "weft_read_ahead_bytes")).toBe(4096);
    expect(sampleValue(f, "weft_group_backlog", { channel: "orders", group: "billing", relay: "true" })).toBe(0);
    expect(sampleValue(f, "weft_group_inflight", { relay: "false" })).toBe(2);
    expect(sampleValue(f, "weft_group_inflight", { relay: "true" })).toBe(1);
    expect(sampleValue(f, "weft_group_members", { relay: "false" })).toBe(2);
    expect(sampleValue(f, "weft_group_members", { relay: "true" })).toBe(0);
    expect(sampleValue(f, "weft_peer_up", { peer: "b" })).toBe(1);
    expect(f.get("weft_peer_up")!.samples.find((s) => s.labels.peer === "c")!.value).toBe(0);
    expect(sampleValue(f, "weft_peer_inflight", { peer: "b" })).toBe(4);
    // The whole channel's log (relay copies included).
    expect(sampleValue(f, "weft_log_bytes", { channel: "orders", relay: "false" })).toBe(800);
    expect(sampleValue(f, "weft_log_events", { channel: "orders", relay: "false" })).toBe(8);

    backlog = 0;
    f = await render(metrics);
    expect(sampleValue(f, "weft_group_backlog", { relay: "false" })).toBe(0);
  });

  it("escapes label values and keeps sidecars in one process apart", async () => {
    const a = new SidecarMetrics({ nodeId: "a", version: "0.1.0" });
    const b = new SidecarMetrics({ nodeId: "b", version: "0.1.0" });
    const odd = 'we"ird\\chan\nnel';
    a.published(odd, 2);
    b.published("plain", 5);
    const fa = await render(a);
    expect(sampleValue(fa, "weft_events_published_total", { channel: odd })).toBe(2);
    expect(sampleValue(fa, "weft_events_published_total", { channel: "plain" })).toBe(0);
    expect(sampleValue(await render(b), "weft_events_published_total", { channel: "plain" })).toBe(5);
    // The process metrics are in both.
    expect(fa.has("process_cpu_user_seconds_total")).toBe(true);
    expect(a.contentType).toMatch(/^text\/plain; version=0\.0\.4/);
  });

  it("composes with other observers, each told everything", () => {
    const told: string[] = [];
    const spy = new Proxy({} as Observer, { get: (_, name: string) => () => told.push(name) });
    const metrics = new SidecarMetrics({ nodeId: "a", version: "0.1.0" });
    const both = composeObservers(metrics, undefined, spy, NO_OBSERVER);
    both.published("x", 1);
    both.peerLink("p", true);
    expect(told).toEqual(["published", "peerLink"]);
    expect(composeObservers(undefined, NO_OBSERVER)).toBe(NO_OBSERVER);
    expect(composeObservers(metrics)).toBe(metrics);
  });
});
