import type { Entry, MemberState } from "./entry.js";
import { spreadHash } from "./hash.js";

/**
 * The entries of one group that are ready to go, and which member may take each: the
 * member its key hashes to, or, without a key, any member. A relay copy (an event with an
 * origin elsewhere) goes to a local member only, never to a peer member: forwarded events
 * are not forwarded again.
 *
 * A key sticks to one member while membership is stable. This sidecar's own events hash by
 * channel and key over every member, local and peer. A relay copy hashes over the local
 * members, salted with its origin's node as well: the origin chose this sidecar for the
 * copy's key by the channel-and-key hash, so all the keys that arrive here share that hash's
 * residue, and hashing them by it again would give them all to one member here.
 */
export class ReadyQueues {
  /** Every member, by id (the round-robin order of the pump). */
  members: MemberState[] = [];
  /** The local members, by id. */
  private locals: MemberState[] = [];
  /** Ready entries without a key that any member may take, in order. */
  private any: Entry[] = [];
  /** Ready relay copies that no member was chosen for yet (no key, or no local member), in order. */
  private anyLocal: Entry[] = [];

  constructor(private readonly channel: string) {}

  /** True when a local member is present. */
  get hasLocal(): boolean {
    return this.locals.length > 0;
  }

  /** True when both a local member and a peer member are present. */
  get mixed(): boolean {
    return this.locals.length > 0 && this.locals.length < this.members.length;
  }

  /** The credits of every member together: the most deliveries out at once. */
  get credits(): number {
    let n = 0;
    for (const m of this.members) n += m.window;
    return n;
  }

  /** Ready entries no member was chosen for. */
  get unassigned(): number {
    return this.any.length + this.anyLocal.length;
  }

  /**
   * Rebuilds the queues for a new membership: the ready entries are queued again in
   * sequence order, each to the member its key hashes to now.
   */
  reset(members: Iterable<MemberState>, ready: Entry[]): void {
    this.members = [...members].sort((a, b) => a.id - b.id);
    this.locals = this.members.filter((m) => m.kind.kind === "local");
    this.any = [];
    this.anyLocal = [];
    for (const m of this.members) m.queue.length = 0;
    ready.sort((a, b) => a.seq - b.seq);
    for (const e of ready) this.push(e, false);
  }

  /** Queues a ready entry: at the end, or, for one that goes again, at the front. */
  push(entry: Entry, front: boolean): void {
    const target = entry.order ? this.memberFor(entry) : undefined;
    const queue = target ? target.queue : entry.event.origin ? this.anyLocal : this.any;
    if (front) queue.unshift(entry);
    else queue.push(entry);
  }

  /** The next entry `member` may take, lowest sequence first, taken off its queue. */
  take(member: MemberState): Entry | undefined {
    const mine = nextReady(member.queue);
    const any = nextReady(this.any);
    const copy = member.kind.kind === "local" ? nextReady(this.anyLocal) : undefined;
    let best = mine;
    if (any && (!best || any.seq < best.seq)) best = any;
    if (copy && (!best || copy.seq < best.seq)) best = copy;
    if (!best) return undefined;
    if (best === mine) member.queue.shift();
    else if (best === any) this.any.shift();
    else this.anyLocal.shift();
    return best;
  }

  /** True when `member` has an entry it may take. */
  hasFor(member: MemberState): boolean {
    return nextReady(member.queue) !== undefined || nextReady(this.any) !== undefined || (member.kind.kind === "local" && nextReady(this.anyLocal) !== undefined);
  }

  /** True when an entry is ready to go, to any member. */
  anyReady(): boolean {
    if (nextReady(this.any) || nextReady(this.anyLocal)) return true;
    for (const m of this.members) if (nextReady(m.queue)) return true;
    return false;
  }

  /** The member an entry with a key goes to; undefined when none may take it. */
  private memberFor(entry: Entry): MemberState | undefined {
    const origin = entry.event.origin;
    const among = origin ? this.locals : this.members;
    if (among.length === 0) return undefined;
    const salted = origin ? `${origin.node}\u0000${this.channel}\u0000${entry.event.key}` : `${this.channel}\u0000${entry.event.key}`;
    return among[spreadHash(salted) % among.length];
  }
}

/** The next deliverable entry of a ready queue, skipping ones dropped or handed on meanwhile. */
export function nextReady(queue: Entry[]): Entry | undefined {
  while (queue.length > 0 && queue[0]!.state !== "ready") queue.shift();
  return queue[0];
}
