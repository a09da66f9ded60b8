import { type ClientTls, connect, type Published, type Subscription, type WeftClient } from "../../src/client/index.js";
import { PUBLISHED, RECEIVED, say } from "./narration.js";
import type { Tally } from "./tally.js";

export const CHANNEL = "orders.created";
/** The event type of orders; warm-up events have another, and handlers skip them. */
export const ORDER_TYPE = "demo.order";
export const WARMUP_TYPE = "demo.warmup";

/** What an order event carries. */
export interface Order {
  order: number;
  customer: string;
  total: number;
}

/** One member of a consumer group: a small service with its own client to its own sidecar. */
export interface MemberSpec {
  group: string;
  /** Names the member within its group ("w1"), or undefined when the group has one member. */
  id?: string;
  /** The sidecar it connects to. */
  node: string;
}

/** How a member is named in the output: "billing" or "shipping[w1]". */
export function memberLabel(m: MemberSpec): string {
  return m.id ? `${m.group}[${m.id}]` : m.group;
}

/**
 * A group member: subscribes to `orders.created`, prints and acks each order, and records it
 * in the tally. Warm-up events are acked silently; `warm` turns true at the first one, which
 * shows that the member's sidecar is linked with the publisher's.
 */
export class GroupMember {
  warm = false;
  private readonly client: WeftClient;
  private readonly subscription: Subscription;
  private readonly done: Promise<void>;

  constructor(
    readonly spec: MemberSpec,
    address: string,
    private readonly tally: Tally,
    /** The CA and this group's service certificate: the sidecar knows the member by it. */
    tls: ClientTls,
  ) {
    this.client = connect(address, { source: `//weft-demo/${spec.group}${spec.id ? `/${spec.id}` : ""}`, tls });
    this.subscription = this.client.subscribe({ channel: CHANNEL, group: spec.group });
    this.done = this.consume();
  }

  /** Resolves when the sidecar has confirmed the subscription. */
  async subscribed(): Promise<void> {
    await this.subscription.subscribed();
  }

  private async consume(): Promise<void> {
    const label = memberLabel(this.spec).padEnd(14);
    try {
      for await (const d of this.subscription) {
        if (d.event.type === WARMUP_TYPE) {
          this.warm = true;
          d.ack();
          continue;
        }
        const o = d.json<Order>();
        const again = this.tally.delivered(this.spec, o, d.attempt);
        d.ack();
        const how = again ? `, again (attempt ${d.attempt})` : "";
        say(this.spec.node, RECEIVED, `${label} got #${o.order} (customer ${o.customer})${how}, acked`);
      }
    } catch (e) {
      say(this.spec.node, RECEIVED, `${label} subscription ended: ${(e as Error).message}`);
    }
  }

  /** Ends the subscription (its acks go first) and the connection. Idempotent. */
  async close(): Promise<void> {
    this.subscription.close();
    await this.done;
    this.client.close();
  }
}

/**
 * The orders service on one sidecar: publishes an order every `intervalMs`, keyed by
 * customer so that a customer's orders keep their order in every group.
 */
export class OrderPublisher {
  private readonly client: WeftClient;
  private readonly pending = new Set<Promise<void>>();
  private nextOrder = 1;
  private nextWarmup = 1;
  private timer: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(
    private readonly node: string,
    address: string,
    private readonly tally: Tally,
    private readonly customers: string[],
    /** The CA and the orders service's certificate. */
    tls: ClientTls,
  ) {
    this.client = connect(address, { source: "//weft-demo/orders", tls });
  }

  /** Publishes warm-up events (one per key given), which members ack without printing. */
  warmUp(count: number): Promise<Published[]> {
    const events = Array.from({ length: count }, () => {
      const n = this.nextWarmup++;
      return { channel: CHANNEL, type: WARMUP_TYPE, key: `warmup-${n}`, data: { warmup: n } };
    });
    return this.client.publishMany(events);
  }

  /** Starts publishing orders. */
  start(intervalMs: number): void {
    this.publishOne();
    this.timer = setInterval(() => this.publishOne(), intervalMs);
  }

  private publishOne(): void {
    const order: Order = {
      order: this.nextOrder++,
      customer: this.customers[Math.floor(Math.random() * this.customers.length)]!,
      total: Math.round(500 + Math.random() * 15_000) / 100,
    };
    // The id makes a retried publish a duplicate the sidecar drops, not a second order.
    const p = this.client
      .publish({ channel: CHANNEL, type: ORDER_TYPE, id: `order-${order.order}`, key: order.customer, data: order })
      .then(
        () => {
          this.tally.published(order);
          say(this.node, PUBLISHED, `published ${CHANNEL} #${order.order} (customer ${order.customer}, total ${order.total.toFixed(2)})`);
        },
        (e: unknown) => {
          if (!this.closed) say(this.node, PUBLISHED, `could not publish #${order.order}: ${(e as Error).message}`);
        },
      )
      .finally(() => this.pending.delete(p));
    this.pending.add(p);
  }

  /** Stops publishing and waits (a while) for the orders already sent to be stored. */
  async stop(timeoutMs: number): Promise<void> {
    clearInterval(this.timer);
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([Promise.all(this.pending), new Promise((r) => (timer = setTimeout(r, timeoutMs)))]);
    clearTimeout(timer);
  }

  /** Stops publishing and closes the connection; orders not yet stored are dropped quietly. */
  close(): void {
    this.closed = true;
    clearInterval(this.timer);
    this.client.close();
  }
}
