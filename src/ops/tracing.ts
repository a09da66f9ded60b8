import {
  type Attributes,
  ProxyTracerProvider,
  ROOT_CONTEXT,
  type Span,
  type SpanContext,
  SpanKind,
  SpanStatusCode,
  type Tracer,
  createTraceState,
  trace,
} from "@opentelemetry/api";
import { BinaryReader, WireType } from "@bufbuild/protobuf/wire";
import type { ObservedDelivery } from "./observer.js";

/** The event attribute holding the W3C trace context (https://www.w3.org/TR/trace-context/). */
export const TRACEPARENT = "traceparent";
/** The event attribute holding vendor trace state, next to {@link TRACEPARENT}. */
export const TRACESTATE = "tracestate";

/** What a publish span needs of one published event. */
export interface PublishedEvent {
  readonly channel: string;
  readonly id: string;
  readonly attributes: Readonly<Record<string, string>>;
}

/** What a publish span reads of an append's outcome for one event (the log's AppendResult is one). */
export interface AppendOutcome {
  readonly sequence: number;
  /** The event was stored before: acked with its original sequence. */
  readonly duplicate: boolean;
}

/** What a forward span reads of one event sent to a peer (a peer frame's ForwardedEvent is one). */
export interface ForwardedCopy {
  readonly channel: string;
  readonly group: string;
  /** The sequence at the origin. */
  readonly sequence: number;
  readonly attempt: number;
  /** The encoded weft.v1.Event, as the origin stored it. */
  readonly bytes: Uint8Array;
}

/**
 * Spans for the trace an event belongs to: the sidecar never changes an event's
 * `traceparent` attribute (the bytes travel as published), and adds spans to that trace
 * where the event passes through it. Called where the events are (the service API and the
 * mesh), because spans need each event's trace context and the end of its append, which the
 * Observer's counting hooks do not carry. Implementations must be cheap when
 * nothing records and must not throw.
 */
export interface EventTracing {
  /**
   * A publish's valid events (before dedup) are about to be appended to the log. Returns
   * what to call once the append is done (each event's result, in order, or the error),
   * or undefined when none of them is traced.
   */
  publishing(events: readonly PublishedEvent[]): ((outcome: readonly AppendOutcome[] | Error) => void) | undefined;
  /** Events leave for a peer in one Forward frame. */
  forwarding(peer: string, events: readonly ForwardedCopy[]): void;
  /** Deliveries leave for a member on this sidecar's Subscribe stream of `channel`/`group`. */
  delivering(channel: string, group: string, deliveries: readonly ObservedDelivery[]): void;
}

/** Traces nothing. */
export const NO_TRACING: EventTracing = {
  publishing: () => undefined,
  forwarding() {},
  delivering() {},
};

const TRACER_NAME = "weft";

/**
 * {@link EventTracing} through `@opentelemetry/api`: spans `weft.publish`, `weft.forward`
 * and `weft.deliver`, each a child of the event's `traceparent`, for events that have one.
 * Records nothing, at the cost of one check per batch, until the process registers an
 * OpenTelemetry SDK (a global tracer provider); which spans are kept is then the SDK's
 * sampler's choice (a parent-based sampler follows the traceparent's sampled flag).
 */
export class OpenTelemetryTracing implements EventTracing {
  constructor(private readonly options: { nodeId: string; version?: string }) {}

  /** The tracer of the registered SDK, or undefined when none is registered. */
  private tracer(): Tracer | undefined {
    const provider = trace.getTracerProvider();
    if (provider instanceof ProxyTracerProvider) return provider.getDelegateTracer(TRACER_NAME, this.options.version);
    return provider.getTracer(TRACER_NAME, this.options.version);
  }

  publishing(events: readonly PublishedEvent[]): ((outcome: readonly AppendOutcome[] | Error) => void) | undefined {
    const tracer = this.tracer();
    if (!tracer) return undefined;
    let spans: (Span | undefined)[] | undefined;
    events.forEach((e, i) => {
      const parent = spanContextOf(e.attributes[TRACEPARENT], e.attributes[TRACESTATE]);
      if (!parent) return;
      spans ??= new Array<Span | undefined>(events.length);
      spans[i] = this.start(tracer, "weft.publish", SpanKind.SERVER, parent, {
        "messaging.operation.name": "publish",
        "messaging.destination.name": e.channel,
        "messaging.message.id": e.id,
      });
    });
    if (!spans) return undefined;
    const started = spans;
    return (outcome) => {
      started.forEach((span, i) => {
        if (!span) return;
        if (outcome instanceof Error) {
          span.setStatus({ code: SpanStatusCode.ERROR, message: `not stored: ${outcome.message}` });
        } else {
          const r = outcome[i];
          if (r) span.setAttributes({ "weft.sequence": r.sequence, "weft.duplicate": r.duplicate });
        }
        span.end();
      });
    };
  }

  forwarding(peer: string, events: readonly ForwardedCopy[]): void {
    const tracer = this.tracer();
    if (!tracer) return;
    for (const f of events) {
      const t = traceContextOf(f.bytes);
      const parent = spanContextOf(t.traceparent, t.tracestate);
      if (!parent) continue;
      this.start(tracer, "weft.forward", SpanKind.PRODUCER, parent, {
        "messaging.operation.name": "forward",
        "messaging.destination.name": f.channel,
        "messaging.message.id": t.id,
        "messaging.consumer.group.name": f.group,
        "weft.peer": peer,
        "weft.sequence": f.sequence,
        "weft.attempt": f.attempt,
      }).end();
    }
  }

  delivering(channel: string, group: string, deliveries: readonly ObservedDelivery[]): void {
    const tracer = this.tracer();
    if (!tracer) return;
    for (const d of deliveries) {
      const t = traceContextOf(d.event.bytes);
      const parent = spanContextOf(t.traceparent, t.tracestate);
      if (!parent) continue;
      this.start(tracer, "weft.deliver", SpanKind.PRODUCER, parent, {
        "messaging.operation.name": "deliver",
        "messaging.destination.name": channel,
        "messaging.message.id": t.id,
        "messaging.consumer.group.name": group,
        "weft.sequence": d.event.sequence,
        "weft.attempt": d.attempt,
        ...(d.event.origin ? { "weft.origin": d.event.origin.node, "weft.origin_sequence": d.event.origin.sequence } : {}),
      }).end();
    }
  }

  private start(tracer: Tracer, name: string, kind: SpanKind, parent: SpanContext, attributes: Attributes): Span {
    return tracer.startSpan(
      name,
      { kind, attributes: { "messaging.system": "weft", "weft.node": this.options.nodeId, ...attributes } },
      trace.setSpanContext(ROOT_CONTEXT, parent),
    );
  }
}

const TRACEPARENT_FORMAT = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$/;

/**
 * The remote span context a W3C `traceparent` (and `tracestate`) names, or undefined when
 * the value is missing or not valid: version "ff", an all-zero trace or span id, or
 * version 00 with trailing fields are refused; a later version's extra fields are ignored.
 */
export function spanContextOf(traceparent: string | undefined, tracestate?: string): SpanContext | undefined {
  if (traceparent === undefined) return undefined;
  const m = TRACEPARENT_FORMAT.exec(traceparent);
  if (!m) return undefined;
  const [, version, traceId, spanId, flags, rest] = m as unknown as [string, string, string, string, string, string | undefined];
  if (version === "ff" || (version === "00" && rest !== undefined)) return undefined;
  if (/^0+$/.test(traceId) || /^0+$/.test(spanId)) return undefined;
  return {
    traceId,
    spanId,
    traceFlags: parseInt(flags, 16),
    isRemote: true,
    ...(tracestate ? { traceState: createTraceState(tracestate) } : {}),
  };
}

/**
 * The id and trace attributes of an encoded weft.v1.Event, read without decoding the rest
 * (fields per proto/weft/v1/event.proto: id = 1, attributes = 8). Bytes it cannot read give
 * what was read before them.
 */
export function traceContextOf(bytes: Uint8Array): { id: string; traceparent?: string; tracestate?: string } {
  const out: { id: string; traceparent?: string; tracestate?: string } = { id: "" };
  try {
    const reader = new BinaryReader(bytes);
    while (reader.pos < reader.len) {
      const [field, wire] = reader.tag();
      if (wire !== WireType.LengthDelimited || (field !== 1 && field !== 8)) {
        reader.skip(wire, field);
        continue;
      }
      const value = reader.bytes();
      if (field === 1) {
        out.id = text.decode(value);
        continue;
      }
      const entry = new BinaryReader(value);
      let key = "";
      let v = "";
      while (entry.pos < entry.len) {
        const [f, w] = entry.tag();
        if (f === 1 && w === WireType.LengthDelimited) key = text.decode(entry.bytes());
        else if (f === 2 && w === WireType.LengthDelimited) v = text.decode(entry.bytes());
        else entry.skip(w, f);
      }
      if (key === TRACEPARENT) out.traceparent = v;
      else if (key === TRACESTATE) out.tracestate = v;
    }
  } catch {
    // Stored events were checked on publish; a copy that cannot be read is simply not traced.
  }
  return out;
}

const text = new TextDecoder();
