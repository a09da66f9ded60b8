import { hostname } from "node:os";
import { type ChannelOptions, Client, type ClientDuplexStream, makeGenericClientConstructor } from "@grpc/grpc-js";
import { Mesh } from "../gen/weft/v1/mesh_pb.js";
import type { PublishResponse, SubscribeRequest, SubscribeResponse } from "../gen/weft/v1/mesh_pb.js";
import { typedServiceDefinition } from "../wire/service-definitions.js";
import { WIDE_RECEIVE_WINDOW } from "../wire/receive-window.js";
import { readSubscribeResponse } from "../wire/messages.js";
import { type ClientTls, clientCredentials } from "./credentials.js";
import { type EventInput, type Published, Publisher } from "./publisher.js";
import { type SubscribeOptions, Subscription } from "./subscription.js";

export interface ConnectOptions {
  /** The producer identity put in `source` when an event has none. Default "//weft-client/HOST/PID". */
  source?: string;
  /** Most events per publish request. Default 500. */
  maxBatch?: number;
  /** Most events published but not yet acked; `publish` waits beyond it. Default 10000. */
  maxOutstanding?: number;
  /** Most encoded event bytes per publish request. Default 4 MiB (the sidecar takes 16). */
  maxBatchBytes?: number;
  /** TLS to the sidecar (its service API has TLS on); plaintext without. */
  tls?: ClientTls;
  /** A bearer token for a sidecar with a policy (`weft token` makes one). */
  token?: string;
  /** Extra grpc-js channel options. */
  channelOptions?: ChannelOptions;
}

const MeshClient = makeGenericClientConstructor(typedServiceDefinition(Mesh, { Subscribe: readSubscribeResponse }), "Mesh");

/**
 * A connection to a Weft sidecar. Publishing and subscribing survive sidecar restarts:
 * the client reconnects with backoff and resumes. `close()` is idempotent.
 */
export class WeftClient {
  private readonly client: Client;
  private readonly publisher: Publisher;
  private readonly subscriptions = new Set<Subscription>();

  /** @param address "host:port", "unix:/path" or an absolute unix socket path. */
  constructor(
    readonly address: string,
    options: ConnectOptions = {},
  ) {
    const target = address.startsWith("/") ? `unix:${address}` : address;
    const secure = clientCredentials(options.tls, options.token);
    this.client = new MeshClient(target, secure.credentials, {
      "grpc.max_receive_message_length": -1,
      // Deliveries arrive in batches of up to 3 MiB: a 64 KiB HTTP/2 window would stall them.
      ...WIDE_RECEIVE_WINDOW,
      "grpc.initial_reconnect_backoff_ms": 100,
      "grpc.max_reconnect_backoff_ms": 2000,
      ...secure.options,
      ...options.channelOptions,
    });
    this.publisher = new Publisher(
      () => (this.client as unknown as { Publish(): ClientDuplexStream<Uint8Array, PublishResponse> }).Publish(),
      {
        source: options.source ?? `//weft-client/${hostname()}/${process.pid}`,
        maxBatch: options.maxBatch ?? 500,
        maxOutstanding: options.maxOutstanding ?? 10_000,
        maxBatchBytes: options.maxBatchBytes ?? 4 * 1024 * 1024,
      },
    );
  }

  /** Publishes one event; resolves once the sidecar has stored it. */
  async publish(event: EventInput): Promise<Published> {
    const [result] = await this.publisher.publish([event]);
    return result!;
  }

  /** Publishes events; resolves with a result per event, in order, once all are stored. */
  publishMany(events: EventInput[]): Promise<Published[]> {
    return this.publisher.publish(events);
  }

  /** Subscribes one member of a group. Iterate it with `for await`. */
  subscribe(options: SubscribeOptions): Subscription {
    const sub = new Subscription(
      () => (this.client as unknown as { Subscribe(): ClientDuplexStream<SubscribeRequest, SubscribeResponse> }).Subscribe(),
      options,
    );
    this.subscriptions.add(sub);
    void sub.closed.then(() => this.subscriptions.delete(sub));
    return sub;
  }

  /** Closes subscriptions and the connection; unacked publishes are rejected. */
  close(): void {
    for (const s of this.subscriptions) s.close();
    this.publisher.close();
    this.client.close();
  }
}

/**
 * Connects to the sidecar at `address`: "host:port", "unix:/path" or an absolute socket
 * path. Default: the environment variable WEFT_ADDRESS (which `weft run` sets for the
 * service it runs), else 127.0.0.1:7420.
 */
export function connect(address = process.env.WEFT_ADDRESS || "127.0.0.1:7420", options: ConnectOptions = {}): WeftClient {
  return new WeftClient(address, options);
}
