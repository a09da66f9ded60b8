import { TraceFlags } from "@opentelemetry/api";
import { describe, expect, it } from "vitest";
import { writeEvent } from "../src/wire/messages.js";
import { spanContextOf, traceContextOf } from "../src/ops/tracing.js";

const TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736";
const SPAN_ID = "00f067aa0ba902b7";

describe("reading a W3C traceparent", () => {
  it("gives the remote parent it names, with its flags and trace state", () => {
    const parent = spanContextOf(`00-${TRACE_ID}-${SPAN_ID}-01`, "congo=t61rcWkgMzE");
    expect(parent).toMatchObject({ traceId: TRACE_ID, spanId: SPAN_ID, traceFlags: TraceFlags.SAMPLED, isRemote: true });
    expect(parent!.traceState!.get("congo")).toBe("t61rcWkgMzE");
    expect(spanContextOf(`00-${TRACE_ID}-${SPAN_ID}-00`)).toMatchObject({ traceFlags: TraceFlags.NONE });
    // A later version may add fields: they are ignored.
    expect(spanContextOf(`01-${TRACE_ID}-${SPAN_ID}-01-more`)).toMatchObject({ traceId: TRACE_ID, spanId: SPAN_ID });
  });

  it.each([
    ["missing", undefined],
    ["empty", ""],
    ["version ff", `ff-${TRACE_ID}-${SPAN_ID}-01`],
    ["version 00 with more fields", `00-${TRACE_ID}-${SPAN_ID}-01-more`],
    ["an all-zero trace id", `00-${"0".repeat(32)}-${SPAN_ID}-01`],
    ["an all-zero span id", `00-${TRACE_ID}-${"0".repeat(16)}-01`],
    ["upper case", `00-${TRACE_ID.toUpperCase()}-${SPAN_ID}-01`],
    ["a short trace id", `00-${TRACE_ID.slice(1)}-${SPAN_ID}-01`],
    ["surrounding space", ` 00-${TRACE_ID}-${SPAN_ID}-01`],
  ])("gives no parent for %s", (_, value) => {
    expect(spanContextOf(value)).toBeUndefined();
  });
});

describe("reading the trace context of an encoded event", () => {
  const fields = { id: "e-1", source: "//s", type: "t", subject: "", time: undefined, datacontenttype: "", data: new Uint8Array([1, 2]), channel: "c.d", key: "k" };

  it("finds the id, traceparent and tracestate among the other attributes", () => {
    const bytes = writeEvent({ ...fields, attributes: { a: "1", traceparent: "tp", tracestate: "ts", z: "2" } });
    expect(traceContextOf(bytes)).toEqual({ id: "e-1", traceparent: "tp", tracestate: "ts" });
  });

  it("gives only the id for an event without them, and what it read of bytes it cannot read", () => {
    expect(traceContextOf(writeEvent({ ...fields, attributes: {} }))).toEqual({ id: "e-1" });
    const bytes = writeEvent({ ...fields, attributes: { traceparent: "tp" } });
    expect(traceContextOf(bytes.subarray(0, 4))).toEqual({ id: "" });
    expect(() => traceContextOf(new Uint8Array([0xff, 0xff, 0xff]))).not.toThrow();
  });
});
