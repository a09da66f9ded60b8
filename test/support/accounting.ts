/**
 * Jepsen-style accounting of one run: what the publisher was told was stored, against what
 * the subscribers handled. At least once means nothing acked is lost; duplicates are allowed
 * (redeliveries) and counted; an event handled but never acked is only explainable when its
 * publish was in doubt (sent, then the publisher lost the answer).
 */

/** One delivery a subscriber handled (acked). */
export interface HandledDelivery {
  id: string;
  /** Which subscriber or sidecar handled it, e.g. "B" or "C". */
  by: string;
}

export interface AccountingInput {
  /** Ids whose publish was acked. */
  acked: Iterable<string>;
  /** Ids sent whose publish neither succeeded nor surely failed. */
  inDoubt?: Iterable<string>;
  /** Every handled delivery, redeliveries included, in any order. */
  deliveries: Iterable<HandledDelivery>;
}

export interface Accounting {
  name: string;
  acked: number;
  /** Distinct ids handled. */
  delivered: number;
  /** Acked and never handled: must be empty. */
  lost: string[];
  /** Handlings beyond the first per id. */
  duplicated: number;
  /** Handled but never acked. */
  unexpected: string[];
  /** Of `unexpected`, those whose publish was not in doubt either: must be empty. */
  unexplained: string[];
  /** Distinct ids handled, per subscriber. */
  byHandler: Map<string, number>;
}

export function account(name: string, input: AccountingInput): Accounting {
  const acked = new Set(input.acked);
  const inDoubt = new Set(input.inDoubt ?? []);
  const seen = new Set<string>();
  const byHandler = new Map<string, Set<string>>();
  let duplicated = 0;
  for (const d of input.deliveries) {
    if (seen.has(d.id)) duplicated++;
    else seen.add(d.id);
    let mine = byHandler.get(d.by);
    if (!mine) byHandler.set(d.by, (mine = new Set()));
    mine.add(d.id);
  }
  const lost = [...acked].filter((id) => !seen.has(id));
  const unexpected = [...seen].filter((id) => !acked.has(id));
  return {
    name,
    acked: acked.size,
    delivered: seen.size,
    lost,
    duplicated,
    unexpected,
    unexplained: unexpected.filter((id) => !inDoubt.has(id)),
    byHandler: new Map([...byHandler].map(([k, v]) => [k, v.size])),
  };
}

/** `jepsen[name]: acked 3000, delivered 3000, lost 0, duplicated 12, unexpected 0 (B 1800, C 1200)` */
export function formatAccounting(a: Accounting): string {
  const handlers = a.byHandler.size > 1 ? ` (${[...a.byHandler].map(([k, n]) => `${k} ${n}`).join(", ")})` : "";
  return `jepsen[${a.name}]: acked ${a.acked}, delivered ${a.delivered}, lost ${a.lost.length}, duplicated ${a.duplicated}, unexpected ${a.unexpected.length}${handlers}`;
}

/** Prints the accounting line and returns the accounting. */
export function printAccounting(a: Accounting): Accounting {
  console.log(formatAccounting(a));
  return a;
}

/** Throws unless nothing acked was lost and nothing handled is unexplained. */
export function assertNoLoss(a: Accounting): void {
  const sample = (ids: string[]): string => ids.slice(0, 20).join(", ") + (ids.length > 20 ? ", ..." : "");
  if (a.lost.length > 0) throw new Error(`${formatAccounting(a)}: lost ${a.lost.length} acked events: ${sample(a.lost)}`);
  if (a.unexplained.length > 0) {
    throw new Error(`${formatAccounting(a)}: ${a.unexplained.length} handled events were never published: ${sample(a.unexplained)}`);
  }
}

/** One delivery as a subscriber saw it, for order checks. */
export interface OrderedDelivery {
  id: string;
  key: string;
  /** The sequence at the origin. */
  sequence: bigint;
}

/**
 * Order per key, on first deliveries: walking the deliveries in the order one subscriber
 * saw them, and skipping ids seen before (redeliveries may repeat an earlier event), each
 * key's sequences must increase. Returns one message per violation.
 */
export function perKeyOrderViolations(deliveries: Iterable<OrderedDelivery>): string[] {
  const seen = new Set<string>();
  const last = new Map<string, { sequence: bigint; id: string }>();
  const out: string[] = [];
  for (const d of deliveries) {
    if (seen.has(d.id)) continue;
    seen.add(d.id);
    if (!d.key) continue;
    const before = last.get(d.key);
    if (before && d.sequence <= before.sequence) {
      out.push(`key ${d.key}: ${d.id} (sequence ${d.sequence}) first delivered after ${before.id} (sequence ${before.sequence})`);
    }
    if (!before || d.sequence > before.sequence) last.set(d.key, { sequence: d.sequence, id: d.id });
  }
  return out;
}
