import type { Entry } from "./entry.js";

/**
 * Per-key order of one group: of the entries with one order key (see orderKey), only the
 * first may be ready or in flight; the next goes once it is done. Entries without a key are
 * not kept here.
 */
export class KeyOrder {
  private readonly queues = new Map<string, Entry[]>();

  /** True while an entry of `order` is held (the next one of that key would wait). */
  has(order: string): boolean {
    return this.queues.has(order);
  }

  /** Adds an entry; true when it must wait behind an earlier one of its key. */
  add(entry: Entry): boolean {
    if (!entry.order) return false;
    const q = this.queues.get(entry.order);
    if (q) {
      q.push(entry);
      return true;
    }
    this.queues.set(entry.order, [entry]);
    return false;
  }

  /** Removes a done entry; returns the next of its key when that one may go now. */
  remove(entry: Entry): Entry | undefined {
    if (!entry.order) return undefined;
    const q = this.queues.get(entry.order);
    if (!q) return undefined;
    const i = q.indexOf(entry);
    if (i >= 0) q.splice(i, 1);
    if (q.length === 0) {
      this.queues.delete(entry.order);
      return undefined;
    }
    return i === 0 && q[0]!.state === "waiting" ? q[0] : undefined;
  }
}
