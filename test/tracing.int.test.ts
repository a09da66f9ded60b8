import { SpanKind, SpanStatusCode, trace } from "@opentelemetry/api";
import { BasicTracerProvider, InMemorySpanExporter, type ReadableSpan, SimpleSpanProcessor } from "@opentelemetry/sdk-trace-base";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { OpenTelemetryTracing } from "../src/ops/tracing.js";
import { eventually, settle, take } from "./support/collect.js";
import { settled, startMesh } from "./support/mesh.js";
import type { TestSidecar } from "./support/sidecar.js";

const TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736";
const PUBLISHER_SPAN = "00f067aa0ba902b7";
const SAMPLED = `00-${TRACE_ID}-${PUBLISHER_SPAN}-01`;
const NOT_SAMPLED = `00-${TRACE_ID}-${PUBLISHER_SPAN}-00`;

const exporter = new InMemorySpanExporter();
const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });

/** The finished spans of one event (by message id), as plain facts. */
function spansOf(id: string): { name: string; node: unknown; kind: SpanKind; traceId: string; parent: string | undefined; attributes: ReadableSpan["attributes"] }[] {
  return exporter
    .getFinishedSpans()
    .filter((s) => s.attributes["messaging.message.id"] === id)
    .map((s) => ({
      name: s.name,
      node: s.attributes["weft.node"],
      kind: s.kind,
      traceId: s.spanContext().traceId,
      parent: s.parentSpanContext?.spanId,
      attributes: s.attributes,
    }));
}

describe("spans through @opentelemetry/api, with an SDK registered", () => {
  let mesh: TestSidecar[] = [];
  beforeAll(() => {
    expect(trace.setGlobalTracerProvider(provider)).toBe(true);
  });
  afterEach(async () => {
    for (const s of mesh.splice(0)) await s.dispose();
  });
  afterAll(async () => {
    trace.disable();
    await provider.shutdown();
  });

  it("records weft.publish and weft.forward at the origin and weft.deliver behind the peer, each a child of the publisher's span", async () => {
    mesh = await startMesh(["a", "b"]);
    const [a, b] = mesh as [TestSidecar, TestSidecar];
    const channel = "traced.payments";
    const sub = b.client().subscribe({ channel, group: "billing", from: "earliest" });
    await sub.subscribed();
    await settled(a, [b], channel, "billing");
    exporter.reset();

    await a.client().publishMany([
      { channel, id: "p-1", source: "//test", data: "x", attributes: { traceparent: SAMPLED } },
      { channel, id: "p-2", source: "//test", data: "y" },
      { channel, id: "p-3", source: "//test", data: "z", attributes: { traceparent: NOT_SAMPLED } },
    ]);
    // p-1 is nacked once: delivered twice.
    let nacked = false;
    await take(sub, 4, (d) => {
      if (d.event.id === "p-1" && !nacked) {
        nacked = true;
        d.nack();
      } else d.ack();
    });
    await eventually(() => spansOf("p-1").length >= 4, 10_000, "the spans of p-1");
    await settle(100);

    const spans = spansOf("p-1").sort((x, y) => x.name.localeCompare(y.name) || Number(x.attributes["weft.attempt"]) - Number(y.attributes["weft.attempt"]));
    for (const s of spans) expect({ traceId: s.traceId, parent: s.parent }).toEqual({ traceId: TRACE_ID, parent: PUBLISHER_SPAN });
    expect(spans.map((s) => [s.name, s.node, s.kind, s.attributes["weft.attempt"]])).toEqual([
      ["weft.deliver", "b", SpanKind.PRODUCER, 1],
      ["weft.deliver", "b", SpanKind.PRODUCER, 2],
      // A forward is sent again after a relink: at least once (settled waits for one link).
      ...spans.filter((s) => s.name === "weft.forward").map(() => ["weft.forward", "a", SpanKind.PRODUCER, 1]),
      ["weft.publish", "a", SpanKind.SERVER, undefined],
    ]);
    const publish = spans.find((s) => s.name === "weft.publish")!;
    expect(publish.attributes).toMatchObject({
      "messaging.system": "weft",
      "messaging.destination.name": channel,
      "weft.sequence": 1,
      "weft.duplicate": false,
    });
    const forward = spans.find((s) => s.name === "weft.forward")!;
    expect(forward.attributes).toMatchObject({ "messaging.consumer.group.name": "billing", "weft.peer": "b", "weft.sequence": 1 });
    const deliver = spans.find((s) => s.name === "weft.deliver")!;
    expect(deliver.attributes).toMatchObject({ "messaging.destination.name": channel, "messaging.consumer.group.name": "billing", "weft.origin": "a", "weft.origin_sequence": 1 });
    expect(exporter.getFinishedSpans().every((s) => s.status.code !== SpanStatusCode.ERROR)).toBe(true);

    // No traceparent: no spans. Not sampled by the publisher: the SDK's parent-based sampler drops them.
    expect(spansOf("p-2")).toEqual([]);
    expect(spansOf("p-3")).toEqual([]);
    sub.close();
  });

  it("marks a duplicate publish on its span", async () => {
    mesh = await startMesh(["solo"]);
    const [s] = mesh as [TestSidecar];
    const event = { channel: "traced.dedup", id: "d-1", source: "//test", attributes: { traceparent: SAMPLED } };
    const client = s.client();
    await client.publish(event);
    await client.publish(event);
    await eventually(() => spansOf("d-1").length === 2, 10_000, "two publish spans");
    expect(spansOf("d-1").map((x) => [x.name, x.attributes["weft.sequence"], x.attributes["weft.duplicate"]])).toEqual([
      ["weft.publish", 1, false],
      ["weft.publish", 1, true],
    ]);
  });

  it("records nothing, and delivers as before, once no SDK is registered", async () => {
    trace.disable();
    exporter.reset();
    expect(new OpenTelemetryTracing({ nodeId: "x" }).publishing([{ channel: "c", id: "i", attributes: { traceparent: SAMPLED } }])).toBeUndefined();
    mesh = await startMesh(["a", "b"]);
    const [a, b] = mesh as [TestSidecar, TestSidecar];
    const channel = "untraced.payments";
    const sub = b.client().subscribe({ channel, group: "billing", from: "earliest" });
    await sub.subscribed();
    await settled(a, [b], channel, "billing");
    await a.client().publish({ channel, id: "u-1", source: "//test", attributes: { traceparent: SAMPLED } });
    const [d] = await take(sub, 1);
    expect(d!.traceparent).toBe(SAMPLED);
    await settle(100);
    expect(exporter.getFinishedSpans()).toEqual([]);
    sub.close();
  });
});
