import { type MemberSpec, type Order } from "./services.js";

/** What happened to one order. */
interface OrderRecord {
  customer: string;
  /** Set once its publish was acked (stored at the origin). */
  published: boolean;
  /** Per group: the members that got it, once per delivery (so a redelivery shows twice). */
  deliveries: Map<string, MemberSpec[]>;
}

/** What the final tally found. */
export interface Verdict {
  ok: boolean;
  lines: string[];
}

/**
 * Counts what the demo's services did: orders published, and each delivery per group and
 * member. A delivery of an order the group already got, or with attempt > 1, counts as a
 * redelivery (at least once means a handler can see an event twice).
 */
export class Tally {
  private readonly orders = new Map<number, OrderRecord>();
  private redeliveries = 0;

  constructor(
    private readonly origin: string,
    private readonly groups: string[],
    private readonly members: MemberSpec[],
  ) {}

  published(o: Order): void {
    this.record(o.order, o.customer).published = true;
  }

  /** Records a delivery; true when the group had it before (or the sidecar says it is a retry). */
  delivered(member: MemberSpec, o: Order, attempt: number): boolean {
    const r = this.record(o.order, o.customer);
    const got = r.deliveries.get(member.group) ?? [];
    const again = got.length > 0 || attempt > 1;
    got.push(member);
    r.deliveries.set(member.group, got);
    if (again) this.redeliveries++;
    return again;
  }

  /** True when every published order has reached every group. */
  complete(): boolean {
    return this.publishedOrders().every(([, r]) => this.groups.every((g) => (r.deliveries.get(g)?.length ?? 0) > 0));
  }

  /** One line: published, delivered per group and per member, redeliveries. */
  summary(seconds: number): string {
    const published = this.publishedOrders().length;
    const parts = [`published ${published}`];
    for (const g of this.groups) {
      const perMember = this.members.filter((m) => m.group === g).map((m) => `${m.id ? `${m.id} on ` : ""}${m.node} ${this.count(m)}`);
      parts.push(`${g} ${this.groupCount(g)} (${perMember.join(", ")})`);
    }
    parts.push(`redelivered ${this.redeliveries}`);
    return `── after ${seconds} s: ${parts.join(" · ")}`;
  }

  /**
   * The final tally: did every order reach every group, once? After an interrupted run,
   * orders still on their way are reported as such (they wait in the origin's log), not as
   * a failure.
   */
  verdict(interrupted: boolean): Verdict {
    const orders = this.publishedOrders();
    const lines: string[] = [];
    let missingAny = false;
    const numbers = orders.map(([n]) => n);
    const range = numbers.length > 0 ? ` (#${Math.min(...numbers)} to #${Math.max(...numbers)})` : "";
    lines.push(`  ${"published".padEnd(12)} ${orders.length} orders on ${this.origin}${range}`);
    for (const g of this.groups) {
      const missing = orders.filter(([, r]) => !r.deliveries.get(g)?.length).map(([n]) => n);
      const twice = orders.filter(([, r]) => (r.deliveries.get(g)?.length ?? 0) > 1).map(([n]) => n);
      const reached = orders.length - missing.length;
      let how = twice.length === 0 ? "each once" : `${twice.length} more than once (${list(twice)})`;
      if (missing.length > 0) {
        missingAny = true;
        how += interrupted ? `; still on the way when the run stopped: ${list(missing)}` : `; MISSING ${list(missing)}`;
      }
      const perMember = this.members.filter((m) => m.group === g).map((m) => `${m.id ? `${m.id} on ` : ""}${m.node} ${this.count(m)}`);
      lines.push(`  ${g.padEnd(12)} ${reached} of ${orders.length} orders, ${how}; by member: ${perMember.join(", ")}`);
      if (this.members.filter((m) => m.group === g).length > 1) lines.push(`  ${"".padEnd(12)} ${g} by customer: ${this.stickiness(g)}`);
    }
    lines.push(`  ${"redelivered".padEnd(12)} ${this.redeliveries}`);
    const redelivered = this.redeliveries === 0 ? "" : `; ${this.redeliveries} redelivered (at least once: handlers dedupe by event id)`;
    if (orders.length === 0) {
      lines.push("FAILED: no order was published.");
      return { ok: false, lines };
    }
    if (missingAny && !interrupted) {
      lines.push("FAILED: some orders did not reach every group (see MISSING above).");
      return { ok: false, lines };
    }
    if (missingAny) {
      lines.push(`Interrupted: the orders on the way stay in ${this.origin}'s log until every group has them (here the demo's temporary data is removed)${redelivered}.`);
    } else if (this.redeliveries === 0) {
      lines.push(`OK: every order reached ${this.groups.join(" once and ")} once.`);
    } else {
      lines.push(`OK: every order reached ${this.groups.join(" and ")}${redelivered}.`);
    }
    return { ok: true, lines };
  }

  /** Which member each customer's orders went to in group `g`: one each while membership is stable. */
  private stickiness(g: string): string {
    const byCustomer = new Map<string, Set<string>>();
    for (const [, r] of this.publishedOrders()) {
      for (const m of r.deliveries.get(g) ?? []) {
        const set = byCustomer.get(r.customer) ?? new Set<string>();
        set.add(m.id ?? m.node);
        byCustomer.set(r.customer, set);
      }
    }
    const customers = [...byCustomer.keys()].sort((a, b) => a.localeCompare(b, "en", { numeric: true }));
    const mapping = customers.map((c) => `${c} → ${[...byCustomer.get(c)!].sort().join("+")}`).join(", ");
    const sticky = [...byCustomer.values()].every((s) => s.size === 1);
    return `${mapping} (${sticky ? "each customer stayed with one member" : "some customers moved between members"})`;
  }

  private publishedOrders(): [number, OrderRecord][] {
    return [...this.orders].filter(([, r]) => r.published).sort(([a], [b]) => a - b);
  }

  private groupCount(g: string): number {
    return this.publishedOrders().filter(([, r]) => (r.deliveries.get(g)?.length ?? 0) > 0).length;
  }

  private count(m: MemberSpec): number {
    let n = 0;
    for (const r of this.orders.values()) n += (r.deliveries.get(m.group) ?? []).filter((x) => x === m).length;
    return n;
  }

  private record(order: number, customer: string): OrderRecord {
    let r = this.orders.get(order);
    if (!r) {
      r = { customer, published: false, deliveries: new Map() };
      this.orders.set(order, r);
    }
    return r;
  }
}

/** "#3, #7, #9" (at most ten, then "and N more"). */
function list(numbers: number[]): string {
  const shown = numbers.slice(0, 10).map((n) => `#${n}`).join(", ");
  return numbers.length > 10 ? `${shown} and ${numbers.length - 10} more` : shown;
}
