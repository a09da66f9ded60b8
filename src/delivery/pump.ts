import type { Observer } from "../ops/observer.js";
import type { AttemptRecords } from "./attempt-records.js";
import type { Deadlines } from "./deadlines.js";
import type { Entry, MemberState } from "./entry.js";
import type { GroupBatch } from "./group-state.js";
import type { ReadyQueues } from "./ready-queues.js";
import type { OutgoingDelivery } from "./types.js";

/** Deliveries handed out in one pump, per member, and the highest first attempt among them. */
export interface HandedOut {
  out: Map<MemberState, OutgoingDelivery[]>;
  /** The highest sequence whose first attempt was handed out (the attempt mark counts it); 0 for none. */
  highest: number;
  /** Where the next pump starts its round. */
  rr: number;
}

/**
 * Hands ready entries to members with free credits, round-robin from member `rr`, until
 * none can take more. The records of later attempts (and of those recorded one by one) go
 * into `batch`; first attempts are counted by the group's attempt mark (see AttemptRecords).
 */
export function handOut(queues: ReadyQueues, attempts: AttemptRecords, batch: GroupBatch, rr: number): HandedOut {
  const out = new Map<MemberState, OutgoingDelivery[]>();
  const order = queues.members;
  let highest = 0;
  let progress = true;
  while (progress) {
    progress = false;
    for (let i = 0; i < order.length; i++) {
      const member = order[(rr + i) % order.length]!;
      if (member.deliveries.size >= member.window) continue;
      const entry = queues.take(member);
      if (!entry) continue;
      progress = true;
      entry.attempt++;
      entry.state = "inflight";
      entry.member = member;
      entry.deliveryId = ++member.lastDeliveryId;
      // The deadline runs from when the delivery leaves (send), not from here: an attempt
      // still being stored (a full disk holds it) must not expire unsent.
      entry.due = Infinity;
      member.deliveries.set(entry.deliveryId, entry);
      if (entry.attempt > 1 || entry.perEvent) attempts.record(entry, batch);
      else if (entry.seq > highest) highest = entry.seq;
      let list = out.get(member);
      if (!list) out.set(member, (list = []));
      list.push({ deliveryId: entry.deliveryId, attempt: entry.attempt, deadline: entry.due, event: entry.event });
    }
    rr = (rr + 1) % Math.max(1, order.length);
  }
  return { out, highest, rr };
}

/**
 * Sends what was handed out, once its attempts are stored. Only deliveries still in flight
 * to their member leave: one given back or handed on while its attempt was being stored is
 * no longer this delivery. A local member's deliveries are due back by its ack deadline,
 * from now (`deadlines` holds them); a peer member's have none: they end by the peer's report.
 */
export function send(out: Map<MemberState, OutgoingDelivery[]>, at: number, deadlines: Deadlines, observer: Observer, channel: string, group: string): void {
  for (const [member, deliveries] of out) {
    if (member.gone) continue;
    const deadline = member.kind.kind === "local" ? at + member.kind.ackDeadlineMs : Infinity;
    const leaving = deliveries.filter((d) => {
      const entry = member.deliveries.get(d.deliveryId);
      if (!entry || entry.state !== "inflight") return false;
      entry.due = deadline;
      if (Number.isFinite(deadline)) deadlines.add(entry);
      d.deadline = deadline;
      return true;
    });
    if (leaving.length === 0) continue;
    observer.delivered(channel, group, leaving);
    member.sink.send(leaving);
  }
}
