import { afterEach, describe, expect, it } from "vitest";
import { take } from "./support/collect.js";
import { settled, startMesh } from "./support/mesh.js";
import type { TestSidecar } from "./support/sidecar.js";

// The example of https://www.w3.org/TR/trace-context/.
const TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const TRACESTATE = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7";

describe("a W3C trace context published with an event (no OpenTelemetry SDK registered)", () => {
  let mesh: TestSidecar[] = [];
  afterEach(async () => {
    for (const s of mesh.splice(0)) await s.dispose();
  });

  it("arrives unchanged at a subscriber on another sidecar, on the origin, on redelivery and in the dead letters", async () => {
    mesh = await startMesh(["a", "b"]);
    const [a, b] = mesh as [TestSidecar, TestSidecar];
    const channel = "traced.orders";
    // billing is behind the peer (one hop); audit is on the origin (zero hops).
    const remote = b.client().subscribe({ channel, group: "billing", from: "earliest", maxAttempts: 2 });
    const local = a.client().subscribe({ channel, group: "audit", from: "earliest" });
    await Promise.all([remote.subscribed(), local.subscribed()]);
    await settled(a, [b], channel, "billing");

    const attributes = { traceparent: TRACEPARENT, tracestate: TRACESTATE, tenant: "t1" };
    await a.client().publish({ channel, id: "order-1", source: "//test", data: { order: 1 }, attributes });

    const [here] = await take(local, 1);
    expect({ traceparent: here!.traceparent, tracestate: here!.tracestate }).toEqual({ traceparent: TRACEPARENT, tracestate: TRACESTATE });

    // Nacked twice: redelivered once, then dead-lettered (max attempts 2) at b.
    const [first, second] = await take(remote, 2, (d) => d.nack());
    for (const d of [first!, second!]) {
      expect(d.traceparent).toBe(TRACEPARENT);
      expect(d.tracestate).toBe(TRACESTATE);
      expect({ ...d.event.attributes }).toEqual(attributes);
    }
    expect([first!.attempt, second!.attempt]).toEqual([1, 2]);

    // The dead letter is re-encoded with weft.dead_letter.* added; the trace context stays.
    const dlq = b.client().subscribe({ channel: `${channel}.dlq.billing`, group: "ops", from: "earliest" });
    const [dead] = await take(dlq, 1);
    expect(dead!.traceparent).toBe(TRACEPARENT);
    expect(dead!.tracestate).toBe(TRACESTATE);
    expect(dead!.event.attributes).toMatchObject({ ...attributes, "weft.dead_letter.reason": "max_attempts", "weft.dead_letter.origin": "a" });

    // An event without one has none.
    await a.client().publish({ channel, id: "order-2", source: "//test", data: { order: 2 } });
    const [plain] = await take(remote, 1);
    expect({ traceparent: plain!.traceparent, tracestate: plain!.tracestate }).toEqual({ traceparent: undefined, tracestate: undefined });
    for (const s of [remote, local, dlq]) s.close();
  });
});
