import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { type ClientDuplexStream, type ServiceError, status } from "@grpc/grpc-js";
import type { Event } from "../gen/weft/v1/event_pb.js";
import {
  type Delivery as DeliveryMessage,
  StartPosition_Kind,
  type Subscribed,
  type SubscribeRequest,
  SubscribeRequestSchema,
  type SubscribeResponse,
} from "../gen/weft/v1/mesh_pb.js";
import { Backoff, ClientError, isRetryable, toClientError } from "./errors.js";

/**
 * Where a new group starts; an existing group resumes and ignores it. A sequence is 1 to
 * 2^53 - 1 and a time 1970-01-01T00:00:00Z to 9999-12-31T23:59:59Z: the sidecar refuses
 * anything else (INVALID_START).
 */
export type From = "latest" | "earliest" | { sequence: bigint | number } | { time: Date };

export interface SubscribeOptions {
  channel: string;
  group: string;
  /** Default "latest". */
  from?: From;
  /** Most unacked deliveries at once. Default 100 (the sidecar's). */
  maxInFlight?: number;
  /** Default 30000 (the sidecar's). */
  ackDeadlineMs?: number;
  /** Default 5 (the sidecar's). */
  maxAttempts?: number;
  /** Default "<channel>.dlq.<group>". */
  deadLetterChannel?: string;
  /** Aborting closes the subscription. */
  signal?: AbortSignal;
  /** Reconnect and resume when the sidecar goes away. Default true. */
  reconnect?: boolean;
  /**
   * Told when the subscription loses its sidecar and when it is subscribed again, once per
   * outage however many reconnects fail in between (see SubscriptionStatus). Called outside
   * the stream's handlers, so it cannot disturb the subscription; what it throws is thrown
   * like any event handler's. Not called for the first subscribe, nor at the end (see `closed`).
   */
  onStatus?: (status: SubscriptionStatus) => void;
}

/** A change in a subscription's connection to its sidecar, for `SubscribeOptions.onStatus`. */
export type SubscriptionStatus =
  /**
   * The stream to the sidecar broke (the sidecar stopped, restarted or cannot be reached);
   * the subscription reconnects with backoff. `error` says why, when the stream said.
   */
  | { type: "disconnected"; error: ClientError | undefined }
  /** The sidecar confirmed the subscription again after a disconnection; the group resumes. */
  | { type: "reconnected"; subscribed: Subscribed };

/** One delivery of one event. Ack it when handled; nack it to have it redelivered. */
export interface Delivery {
  readonly event: Event;
  readonly sequence: bigint;
  /** 1 on first delivery, more on redelivery. */
  readonly attempt: number;
  readonly deliveryId: bigint;
  /** The payload. */
  readonly data: Uint8Array;
  /** The payload as UTF-8 text. */
  text(): string;
  /** The payload parsed as JSON. */
  json<T = unknown>(): T;
  /**
   * The W3C trace context the publisher attached (the event's "traceparent" attribute,
   * unchanged across every hop and redelivery), or undefined. Continue the trace with
   * `propagation.extract(context.active(), delivery.event.attributes)` of
   * `@opentelemetry/api`, or parse it as https://www.w3.org/TR/trace-context/ says.
   */
  readonly traceparent: string | undefined;
  /** The vendor trace state next to `traceparent` (the "tracestate" attribute), or undefined. */
  readonly tracestate: string | undefined;
  /** Marks the event handled. Idempotent; a no-op after the stream it came on was replaced. */
  ack(): void;
  /** Asks for redelivery, after `delayMs` if given. Idempotent like `ack`. */
  nack(options?: { delayMs?: number }): void;
  /** Gives the handler `ms` more before the delivery expires. */
  extend(ms: number): void;
}

type OpenStream = () => ClientDuplexStream<SubscribeRequest, SubscribeResponse>;

/**
 * A subscription as an async iterator of deliveries. It reconnects by itself when the
 * sidecar goes away, re-opening the same group, which resumes where it left off; deliveries
 * that were unacked when the stream broke come again with attempt > 1.
 *
 * `closed` resolves (never rejects) when the subscription ends: with undefined after
 * `close()` or an abort, with the error when the sidecar refused it for good.
 */
export class Subscription implements AsyncIterable<Delivery>, AsyncDisposable {
  readonly closed: Promise<ClientError | undefined>;
  private resolveClosed!: (e: ClientError | undefined) => void;
  private readonly buffer: Delivery[] = [];
  private wake: (() => void) | undefined;
  private stream: ClientDuplexStream<SubscribeRequest, SubscribeResponse> | undefined;
  private generation = 0;
  private ended = false;
  private error: ClientError | undefined;
  private finalError: ClientError | undefined;
  private acks: bigint[] = [];
  private ackScheduled = false;
  private readonly backoff = new Backoff();
  private timer: NodeJS.Timeout | undefined;
  private confirmations: { resolve: (s: Subscribed) => void; reject: (e: ClientError) => void }[] = [];
  private lastSubscribed: Subscribed | undefined;
  /** Lost the sidecar and not subscribed again yet (onStatus was told "disconnected"). */
  private disconnected = false;

  constructor(
    private readonly openStream: OpenStream,
    private readonly options: SubscribeOptions,
  ) {
    this.closed = new Promise((r) => (this.resolveClosed = r));
    options.signal?.addEventListener("abort", () => this.close(), { once: true });
    if (options.signal?.aborted) this.close();
    else this.connect();
  }

  /**
   * Resolves when the sidecar confirms the subscription (again after each reconnect); rejects
   * when the subscription ends first (refused by the sidecar, closed or aborted).
   */
  subscribed(): Promise<Subscribed> {
    if (this.lastSubscribed) return Promise.resolve(this.lastSubscribed);
    if (this.ended) return Promise.reject(this.endError());
    return new Promise((resolve, reject) => this.confirmations.push({ resolve, reject }));
  }

  private endError(): ClientError {
    return this.finalError ?? new ClientError(status.CANCELLED, "CLIENT_CLOSED", "the subscription was closed");
  }

  /** Ends the subscription. Unacked deliveries are redelivered to the group. Idempotent. */
  close(): void {
    this.finish(undefined);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.close();
    await this.closed;
  }

  [Symbol.asyncIterator](): AsyncIterator<Delivery> {
    return {
      next: async () => {
        for (;;) {
          const d = this.buffer.shift();
          if (d) return { value: d, done: false };
          if (this.ended) {
            if (this.error) {
              const e = this.error;
              this.error = undefined;
              throw e;
            }
            return { value: undefined, done: true };
          }
          await new Promise<void>((r) => (this.wake = r));
        }
      },
      return: async () => {
        this.close();
        return { value: undefined, done: true };
      },
    };
  }

  private connect(): void {
    const generation = ++this.generation;
    this.lastSubscribed = undefined;
    const stream = this.openStream();
    this.stream = stream;
    stream.on("data", (response: SubscribeResponse) => {
      if (generation !== this.generation) return;
      const r = response.response;
      if (r.case === "subscribed") {
        this.backoff.reset();
        this.lastSubscribed = r.value;
        for (const c of this.confirmations.splice(0)) c.resolve(r.value);
        if (this.disconnected) {
          this.disconnected = false;
          this.report({ type: "reconnected", subscribed: r.value });
        }
      } else if (r.case === "deliveries") {
        for (const d of r.value.deliveries) this.buffer.push(this.delivery(d, generation));
        this.notify();
      }
    });
    stream.on("error", (e: ServiceError) => this.broken(generation, toClientError(e)));
    stream.on("end", () => this.broken(generation, undefined));
    stream.write(create(SubscribeRequestSchema, { request: { case: "open", value: this.openRequest() } }));
  }

  private openRequest() {
    const o = this.options;
    const from = o.from ?? "latest";
    let start;
    if (from === "latest") start = { kind: StartPosition_Kind.LATEST };
    else if (from === "earliest") start = { kind: StartPosition_Kind.EARLIEST };
    else if ("sequence" in from) start = { kind: StartPosition_Kind.SEQUENCE, sequence: BigInt(from.sequence) };
    else start = { kind: StartPosition_Kind.TIME, time: timestampFromDate(from.time) };
    return {
      channel: o.channel,
      group: o.group,
      start,
      maxInFlight: o.maxInFlight ?? 0,
      ackDeadlineMs: o.ackDeadlineMs ?? 0,
      maxAttempts: o.maxAttempts ?? 0,
      deadLetterChannel: o.deadLetterChannel ?? "",
    };
  }

  private delivery(d: DeliveryMessage, generation: number): Delivery {
    return new ReceivedDelivery(d, generation, this);
  }

  /** @internal Sends a nack or extend of a delivery, unless its stream was replaced or closed. */
  sendFor(generation: number, request: SubscribeRequest["request"]): void {
    if (generation !== this.generation || this.ended) return;
    this.stream?.write(create(SubscribeRequestSchema, { request }));
  }

  /** @internal Queues the ack of a delivery for this tick's ack request, unless its stream was replaced. */
  ackFor(generation: number, deliveryId: bigint): void {
    if (generation !== this.generation) return;
    this.acks.push(deliveryId);
    this.scheduleAcks();
  }

  /** Acks of one tick go out in one request. */
  private scheduleAcks(): void {
    if (this.ackScheduled) return;
    this.ackScheduled = true;
    const generation = this.generation;
    setImmediate(() => {
      this.ackScheduled = false;
      if (generation !== this.generation || this.ended || !this.stream) return;
      this.writeAcks(this.stream);
    });
  }

  /** Sends the queued acks, if any, in one request. */
  private writeAcks(stream: ClientDuplexStream<SubscribeRequest, SubscribeResponse>): void {
    const ids = this.acks.splice(0);
    if (ids.length > 0) stream.write(create(SubscribeRequestSchema, { request: { case: "ack", value: { deliveryIds: ids } } }));
  }

  private broken(generation: number, error: ClientError | undefined): void {
    if (generation !== this.generation || this.ended) return;
    this.stream = undefined;
    this.generation++; // deliveries and acks of the broken stream are void from here
    this.acks = [];
    this.buffer.length = 0; // they come again from the sidecar
    const retry = this.options.reconnect ?? true;
    if (error && !isRetryable(error.code)) {
      this.finish(error);
      return;
    }
    if (!retry) {
      this.finish(error ?? new ClientError(status.UNAVAILABLE, "STREAM_ENDED", "the sidecar ended the subscription"));
      return;
    }
    if (!this.disconnected) {
      this.disconnected = true;
      this.report({ type: "disconnected", error });
    }
    this.timer = setTimeout(() => {
      this.timer = undefined;
      if (!this.ended) this.connect();
    }, this.backoff.next());
  }

  /** Tells onStatus, after the current handler: its code never runs inside the stream's. */
  private report(status: SubscriptionStatus): void {
    const listener = this.options.onStatus;
    if (listener) queueMicrotask(() => listener(status));
  }

  private finish(error: ClientError | undefined): void {
    if (this.ended) return;
    this.ended = true;
    this.error = error;
    this.finalError = error;
    for (const c of this.confirmations.splice(0)) c.reject(this.endError());
    clearTimeout(this.timer);
    const stream = this.stream;
    this.stream = undefined;
    if (stream) {
      this.writeAcks(stream); // the acks of this tick go before the goodbye
      stream.end(); // the sidecar ends the call after handling the acks before it
    }
    this.notify();
    this.resolveClosed(error);
  }

  private notify(): void {
    const w = this.wake;
    this.wake = undefined;
    w?.();
  }
}

/**
 * A delivery as the iterator hands it out. A class rather than an object of closures: a
 * subscriber receives thousands a second, and closures made per delivery cost more than
 * decoding it (under tsx each is also wrapped to keep its name).
 */
class ReceivedDelivery implements Delivery {
  readonly event: Event;
  readonly sequence: bigint;
  readonly attempt: number;
  readonly deliveryId: bigint;
  readonly data: Uint8Array;
  private settled = false;

  constructor(
    d: DeliveryMessage,
    private readonly generation: number,
    private readonly subscription: Subscription,
  ) {
    this.event = d.event!;
    this.sequence = d.sequence;
    this.attempt = d.attempt;
    this.deliveryId = d.deliveryId;
    this.data = this.event.data;
  }

  get traceparent(): string | undefined {
    return this.event.attributes.traceparent;
  }
  get tracestate(): string | undefined {
    return this.event.attributes.tracestate;
  }
  text(): string {
    return Buffer.from(this.event.data).toString("utf8");
  }
  json<T = unknown>(): T {
    return JSON.parse(this.text()) as T;
  }
  ack(): void {
    if (this.settled) return;
    this.settled = true;
    this.subscription.ackFor(this.generation, this.deliveryId);
  }
  nack(options?: { delayMs?: number }): void {
    if (this.settled) return;
    this.settled = true;
    this.subscription.sendFor(this.generation, { case: "nack", value: { deliveryIds: [this.deliveryId], delayMs: options?.delayMs ?? 0 } } as SubscribeRequest["request"]);
  }
  extend(ms: number): void {
    if (!this.settled) this.subscription.sendFor(this.generation, { case: "extend", value: { deliveryIds: [this.deliveryId], extensionMs: ms } } as SubscribeRequest["request"]);
  }
}
