import { randomUUID } from "node:crypto";
import { BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { type ClientDuplexStream, type ServiceError, status } from "@grpc/grpc-js";
import type { PublishResponse } from "../gen/weft/v1/mesh_pb.js";
import { Backoff, ClientError, isRetryable, toClientError } from "./errors.js";

/** An event to publish. Only `channel` is required; the rest have defaults. */
export interface EventInput {
  channel: string;
  /** Bytes as they are, a string as UTF-8, anything else as JSON. */
  data?: Uint8Array | string | unknown;
  /** Default: a random UUID. Re-publishing the same id and source is deduplicated. */
  id?: string;
  /** Default: the client's `source` option. */
  source?: string;
  /** Default: "weft.event". */
  type?: string;
  subject?: string;
  /** Default: "application/json" for JSON data, "text/plain" for strings, none for bytes. */
  datacontenttype?: string;
  time?: Date;
  key?: string;
  attributes?: Record<string, string>;
}

/** The sidecar's answer for one published event. */
export interface Published {
  /** The event's sequence in its channel at the origin sidecar. */
  sequence: bigint;
  /** True when the event was a re-publish within the dedup window. */
  duplicate: boolean;
  /** The event id (useful when the client chose it). */
  id: string;
}

export interface PublisherOptions {
  source: string;
  /** Most events in one request. Default 500. */
  maxBatch: number;
  /** Most events published but not yet acked; `publish` waits beyond it. Default 10000. */
  maxOutstanding: number;
  /** Most encoded event bytes in one request (a larger single event goes alone). Default 4 MiB. */
  maxBatchBytes: number;
}

/**
 * Encodes a weft.v1.PublishRequest from events encoded once, when they were published:
 * the batch id, then each event as a length-delimited field 2, copied into one buffer.
 */
function encodePublishRequest(batchId: bigint, batch: readonly Pending[]): Uint8Array {
  let size = 1 + varint64Size(batchId);
  for (const p of batch) size += 1 + varintSize(p.bytes.length) + p.bytes.length;
  const out = Buffer.allocUnsafe(size);
  out[0] = 0x08; // field 1 (batch_id), varint
  let at = writeVarint64(out, 1, batchId);
  for (const p of batch) {
    out[at++] = 0x12; // field 2 (events), length-delimited
    at = writeVarint(out, at, p.bytes.length);
    out.set(p.bytes, at);
    at += p.bytes.length;
  }
  return out;
}

/** The fields of a weft.v1.Event as they go on the wire; strings empty when unset. */
interface EventFields {
  id: string;
  source: string;
  type: string;
  subject: string;
  time: Date | undefined;
  datacontenttype: string;
  data: Uint8Array;
  attributes: Record<string, string>;
  channel: string;
  key: string;
}

/**
 * Encodes a weft.v1.Event (proto/weft/v1/event.proto) straight from its fields, in field
 * order, leaving out empty strings and bytes as proto3 does. Building a message with
 * `create` and encoding it with `toBinary` cost more than everything else the client does
 * per event; the result is the same bytes. No closures inside: under tsx (esbuild's
 * keepNames) each closure made per event costs a defineProperty call.
 */
function encodeEvent(e: EventFields): Uint8Array {
  const lengths = [e.id, e.source, e.type, e.subject, e.datacontenttype, e.channel, e.key].map(utf8Length);
  let size = 0;
  for (const length of lengths) if (length > 0) size += fieldSize(length);
  let time: Uint8Array | undefined;
  if (e.time) {
    const t = timestampFromDate(e.time);
    const w = new BinaryWriter();
    if (t.seconds !== 0n) w.tag(1, WireType.Varint).int64(t.seconds);
    if (t.nanos !== 0) w.tag(2, WireType.Varint).int32(t.nanos);
    time = w.finish();
    size += fieldSize(time.length);
  }
  if (e.data.length > 0) size += fieldSize(e.data.length);
  const attributes = Object.entries(e.attributes);
  for (const [name, value] of attributes) size += fieldSize(entrySize(name, value));

  const out = Buffer.allocUnsafe(size);
  let at = 0;
  at = putString(out, at, 1, e.id, lengths[0]!);
  at = putString(out, at, 2, e.source, lengths[1]!);
  at = putString(out, at, 3, e.type, lengths[2]!);
  at = putString(out, at, 4, e.subject, lengths[3]!);
  if (time) at = putBytes(out, at, 5, time);
  at = putString(out, at, 6, e.datacontenttype, lengths[4]!);
  if (e.data.length > 0) at = putBytes(out, at, 7, e.data);
  for (const [name, value] of attributes) {
    out[at++] = (8 << 3) | WireType.LengthDelimited;
    at = writeVarint(out, at, entrySize(name, value));
    // A map entry carries its key and value even when empty, as toBinary writes it.
    at = putString(out, at, 1, name, utf8Length(name), true);
    at = putString(out, at, 2, value, utf8Length(value), true);
  }
  at = putString(out, at, 9, e.channel, lengths[5]!);
  at = putString(out, at, 10, e.key, lengths[6]!);
  return out;
}

const utf8Length = (s: string): number => Buffer.byteLength(s, "utf8");

/** The size of a length-delimited field (tag, length, body) with a body of `length` bytes. */
const fieldSize = (length: number): number => 1 + varintSize(length) + length;

const entrySize = (name: string, value: string): number => fieldSize(utf8Length(name)) + fieldSize(utf8Length(value));

/** Writes a string field unless it is empty (or `always`); returns the position after it. */
function putString(out: Buffer, at: number, field: number, value: string, length: number, always = false): number {
  if (length === 0 && !always) return at;
  out[at++] = (field << 3) | WireType.LengthDelimited;
  at = writeVarint(out, at, length);
  return at + out.write(value, at, "utf8");
}

function putBytes(out: Buffer, at: number, field: number, value: Uint8Array): number {
  out[at++] = (field << 3) | WireType.LengthDelimited;
  at = writeVarint(out, at, value.length);
  out.set(value, at);
  return at + value.length;
}

function varintSize(n: number): number {
  let size = 1;
  while (n >= 0x80) {
    n = Math.floor(n / 128);
    size++;
  }
  return size;
}

/** Writes a non-negative integer as a varint at `at`; returns the position after it. */
function writeVarint(out: Uint8Array, at: number, n: number): number {
  while (n >= 0x80) {
    out[at++] = (n % 128) | 0x80;
    n = Math.floor(n / 128);
  }
  out[at++] = n;
  return at;
}

function varint64Size(n: bigint): number {
  let size = 1;
  while (n >= 0x80n) {
    n >>= 7n;
    size++;
  }
  return size;
}

function writeVarint64(out: Uint8Array, at: number, n: bigint): number {
  while (n >= 0x80n) {
    out[at++] = Number(n & 0x7fn) | 0x80;
    n >>= 7n;
  }
  out[at++] = Number(n);
  return at;
}

interface Pending {
  id: string;
  /** The encoded event, made once. */
  bytes: Uint8Array;
  resolve: (p: Published) => void;
  reject: (e: Error) => void;
}

type OpenStream = () => ClientDuplexStream<Uint8Array, PublishResponse>;

/**
 * Batches publishes onto one Publish stream. Events published in the same tick go out in
 * one request (up to `maxBatch`). Unacked batches are re-sent after a reconnect: the
 * sidecar's dedup makes that safe, so an event is stored once and acked once.
 */
export class Publisher {
  private queue: Pending[] = [];
  private readonly inflight = new Map<bigint, Pending[]>();
  private outstanding = 0;
  private nextBatch = 1n;
  private stream: ClientDuplexStream<Uint8Array, PublishResponse> | undefined;
  private scheduled = false;
  private waiters: (() => void)[] = [];
  private closed = false;
  private readonly backoff = new Backoff();
  private reconnectTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly open: OpenStream,
    private readonly options: PublisherOptions,
  ) {}

  /** Publishes events; resolves with one result per event once each is stored. */
  async publish(inputs: EventInput[]): Promise<Published[]> {
    if (this.closed) throw new ClientError(status.CANCELLED, "CLIENT_CLOSED", "the client is closed");
    const events = inputs.map((i) => this.toEvent(i));
    while (this.outstanding + events.length > this.options.maxOutstanding && this.outstanding > 0) {
      await new Promise<void>((r) => this.waiters.push(r));
      if (this.closed) throw new ClientError(status.CANCELLED, "CLIENT_CLOSED", "the client is closed");
    }
    this.outstanding += events.length;
    const results = events.map(
      (event) =>
        new Promise<Published>((resolve, reject) =>
          this.queue.push({ id: event.id, bytes: encodeEvent(event), resolve, reject }),
        ),
    );
    this.schedule();
    return Promise.all(results);
  }

  /** Rejects everything unacked and closes the stream. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.reconnectTimer);
    const error = new ClientError(status.CANCELLED, "CLIENT_CLOSED", "the client was closed before the sidecar acked");
    for (const batch of this.inflight.values()) for (const p of batch) p.reject(error);
    for (const p of this.queue) p.reject(error);
    this.inflight.clear();
    this.queue = [];
    this.stream?.end();
    this.stream = undefined;
    for (const w of this.waiters.splice(0)) w();
  }

  private toEvent(i: EventInput): EventFields {
    let data: Uint8Array = new Uint8Array(0);
    let contentType = i.datacontenttype ?? "";
    if (i.data instanceof Uint8Array) data = i.data;
    else if (typeof i.data === "string") {
      data = Buffer.from(i.data, "utf8");
      contentType ||= "text/plain";
    } else if (i.data !== undefined) {
      data = Buffer.from(JSON.stringify(i.data), "utf8");
      contentType ||= "application/json";
    }
    return {
      channel: i.channel,
      id: i.id ?? randomUUID(),
      source: i.source ?? this.options.source,
      type: i.type ?? "weft.event",
      subject: i.subject ?? "",
      datacontenttype: contentType,
      data,
      key: i.key ?? "",
      attributes: i.attributes ?? {},
      time: i.time,
    };
  }

  private schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      this.flush();
    });
  }

  private ensureStream(): ClientDuplexStream<Uint8Array, PublishResponse> {
    if (this.stream) return this.stream;
    const stream = this.open();
    this.stream = stream;
    stream.on("data", (response: PublishResponse) => {
      this.backoff.reset();
      this.settle(response);
    });
    stream.on("error", (e: ServiceError) => this.broken(stream, e));
    stream.on("end", () => this.broken(stream, undefined));
    return stream;
  }

  private flush(): void {
    if (this.closed || this.reconnectTimer || this.queue.length === 0) return;
    const stream = this.ensureStream();
    while (this.queue.length > 0) {
      // A batch ends at maxBatch events or maxBatchBytes, whichever comes first (at least one).
      let n = 0;
      let bytes = 0;
      while (n < this.queue.length && n < this.options.maxBatch) {
        const size = this.queue[n]!.bytes.length;
        if (n > 0 && bytes + size > this.options.maxBatchBytes) break;
        bytes += size;
        n++;
      }
      const batch = this.queue.splice(0, n);
      const batchId = this.nextBatch++;
      this.inflight.set(batchId, batch);
      stream.write(encodePublishRequest(batchId, batch));
    }
  }

  private settle(response: PublishResponse): void {
    const batch = this.inflight.get(response.batchId);
    if (!batch) return;
    this.inflight.delete(response.batchId);
    batch.forEach((p, i) => {
      const r = response.results[i];
      if (!r) p.reject(new ClientError(status.INTERNAL, "MISSING_RESULT", "the sidecar sent no result for this event"));
      else if (r.error) p.reject(new ClientError(r.error.code, r.error.reason, r.error.message, r.error.field));
      else p.resolve({ sequence: r.sequence, duplicate: r.duplicate, id: p.id });
    });
    this.outstanding -= batch.length;
    for (const w of this.waiters.splice(0)) w();
  }

  /** The stream ended: retry unacked batches on a new stream, or fail them for good. */
  private broken(stream: ClientDuplexStream<Uint8Array, PublishResponse>, e: ServiceError | undefined): void {
    if (this.stream !== stream) return;
    this.stream = undefined;
    if (this.closed) return;
    const error = e ? toClientError(e) : undefined;
    if (error && !isRetryable(error.code)) {
      for (const batch of this.inflight.values()) {
        for (const p of batch) p.reject(error);
        this.outstanding -= batch.length;
      }
      this.inflight.clear();
      for (const w of this.waiters.splice(0)) w();
      this.schedule();
      return;
    }
    // Re-queue unacked batches, oldest first, ahead of anything new.
    const unacked = [...this.inflight.values()].flat();
    this.inflight.clear();
    this.queue = [...unacked, ...this.queue];
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = undefined;
      this.flush();
    }, this.backoff.next());
  }
}
