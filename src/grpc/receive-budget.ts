import { type Http2Server, type Http2Stream, type ServerHttp2Stream, constants } from "node:http2";
import type { Server } from "@grpc/grpc-js";
import { Reason } from "../contract/errors.js";

/** What a listener tells about the streams it cut. */
export interface ReceiveBudgetOptions {
  /** Most bytes of request messages received in part, over every stream of the listener. */
  limit: number;
  /** Which listener, for messages ("the service API", "the peer API"). */
  listener: string;
  /** Told of each stream cut, with what the log should say. */
  cut?: (message: string, held: number) => void;
}

/** Where a stream is in its gRPC message frames (5-byte prefix: flag, 4-byte length). */
interface StreamState {
  /** Bytes of the prefix still to come; 0 while a message's body comes. */
  prefix: number;
  prefixBytes: Buffer;
  /** Bytes of the current message's body still to come. */
  body: number;
  /** Bytes of the message received so far, prefix included: what the budget counts. */
  held: number;
  /** When its incomplete message started, as an order among all of them (smaller is older). */
  since: number;
}

/**
 * The bytes of request messages a listener has received in part: grpc-js reads every byte
 * of a stream as it comes, and keeps a message's bytes until its last one has come (up to
 * `grpc.max_receive_message_length`), whatever the HTTP/2 windows, so without a bound a
 * client that starts many large messages and never finishes them has the sidecar hold
 * every one of them.
 *
 * Every stream of the listener is watched below grpc-js; when the bytes held in incomplete
 * messages pass the limit, the stream whose incomplete message is the oldest is cut (the
 * one a client stalls; a message that is being sent completes soon after it started) until
 * they fit again. A stream cut before its response started gets RESOURCE_EXHAUSTED /
 * RECEIVE_BUDGET as a trailers-only response; one whose response had started is reset with
 * ENHANCE_YOUR_CALM, which gRPC clients report as RESOURCE_EXHAUSTED.
 */
export class ReceiveBudget {
  private used = 0;
  private order = 0;
  private readonly streams = new Map<Http2Stream, StreamState>();

  constructor(private readonly options: ReceiveBudgetOptions) {}

  /** Bytes held in incomplete messages now. */
  get bytes(): number {
    return this.used;
  }

  /**
   * Watches every stream of a bound grpc-js server. grpc-js has no option for it, so this
   * reaches its HTTP/2 servers through its internals.
   * @throws Error when they are not there (another grpc-js): the limit must not silently go.
   */
  watch(server: Server): void {
    const servers = (server as unknown as { http2Servers?: Map<Http2Server, unknown> }).http2Servers;
    if (!(servers instanceof Map) || servers.size === 0) {
      throw new Error("cannot watch the listener's HTTP/2 sessions (grpc-js's internal http2Servers is not there): maxPartialMessageBytes cannot be enforced with this grpc-js");
    }
    for (const http2 of servers.keys()) {
      // Before grpc-js's own listener: each chunk is counted before grpc-js keeps it.
      http2.prependListener("stream", (stream: ServerHttp2Stream) => this.track(stream));
    }
  }

  private track(stream: ServerHttp2Stream): void {
    const state: StreamState = { prefix: 5, prefixBytes: Buffer.alloc(5), body: 0, held: 0, since: 0 };
    this.streams.set(stream, state);
    stream.on("data", (chunk: Buffer) => this.received(stream, state, chunk));
    stream.once("close", () => this.forget(stream));
  }

  private received(stream: ServerHttp2Stream, state: StreamState, chunk: Buffer): void {
    if (!this.streams.has(stream)) return;
    let at = 0;
    let held = state.held;
    while (at < chunk.length) {
      if (state.prefix > 0) {
        if (held === 0) state.since = ++this.order;
        const n = Math.min(state.prefix, chunk.length - at);
        chunk.copy(state.prefixBytes, 5 - state.prefix, at, at + n);
        state.prefix -= n;
        held += n;
        at += n;
        if (state.prefix === 0) state.body = state.prefixBytes.readUInt32BE(1);
      } else {
        const n = Math.min(state.body, chunk.length - at);
        state.body -= n;
        held += n;
        at += n;
      }
      if (state.prefix === 0 && state.body === 0) {
        // A whole message: grpc-js hands it on, and its own flow control bounds it from here.
        state.prefix = 5;
        held = 0;
      }
    }
    this.used += held - state.held;
    state.held = held;
    while (this.used > this.options.limit) {
      let oldest: [Http2Stream, StreamState] | undefined;
      for (const entry of this.streams) if (entry[1].held > 0 && (!oldest || entry[1].since < oldest[1].since)) oldest = entry;
      if (!oldest) break;
      this.cut(oldest[0] as ServerHttp2Stream, oldest[1]);
    }
  }

  private cut(stream: ServerHttp2Stream, state: StreamState): void {
    const { limit, listener } = this.options;
    const message = `${Reason.RECEIVE_BUDGET}: ${listener} holds ${this.used} bytes of request messages received in part, its limit (maxPartialMessageBytes) is ${limit}; the stream whose message started longest ago (${state.held} bytes of it received) is ended: finish messages once started, or raise maxPartialMessageBytes`;
    this.options.cut?.(message, state.held);
    this.forget(stream);
    try {
      // A reset, never a status: grpc-js does not know of this answer, and its own later
      // response on the stream would then throw (ERR_HTTP2_HEADERS_SENT) where nothing
      // catches it. gRPC clients report the reset as RESOURCE_EXHAUSTED; the reason is logged.
      stream.close(constants.NGHTTP2_ENHANCE_YOUR_CALM);
    } catch {
      stream.destroy();
    }
  }

  private forget(stream: Http2Stream): void {
    const state = this.streams.get(stream);
    if (!state) return;
    this.streams.delete(stream);
    this.used -= state.held;
  }
}
