import { randomUUID } from "node:crypto";
import { type ClientDuplexStream, type ServiceError, status } from "@grpc/grpc-js";
import type { PublishResponse } from "../gen/weft/v1/mesh_pb.js";
import { type EventFields, writeEvent, writePublishRequest } from "../wire/messages.js";
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
          this.queue.push({ id: event.id, bytes: writeEvent(event), resolve, reject }),
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
      stream.write(writePublishRequest(batchId, batch.map((p) => p.bytes)));
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
