import { BloomFilter } from "./bloom-filter.js";

/** A filter is sized for at least this many keys (128 KiB). */
const MIN_KEYS = 100_000;
/**
 * A new filter is sized for this many times the keys stored: each load reads every stored
 * key, so while keys pile up (a burst, a dedup window filling) the loads read about a third
 * of what is added, not as much again (with twice).
 */
const GROWTH = 4;

/**
 * The dedup identities the log may hold entries for (their dedupKey; an entry in either dedup
 * table counts as its identity), in memory, so that an append looks up in LevelDB only the ids
 * it may have seen: most published ids are new, and looking up an absent key costs
 * LevelDB's CPU to find nothing.
 *
 * It says "not stored" only once loaded. The first question starts `load`, which must add
 * every key stored at one point in time to the filter it is given, while `add` is called
 * with every key before it is written from that point on (the log takes its snapshot in the
 * write loop, between groups). Until the load ends every key "may" be stored.
 *
 * Keys deleted from the log stay in the filter (a "maybe" more). Once more keys were added
 * than the filter was sized for, a new one is loaded the same way, sized for GROWTH times the
 * keys stored, and the old one answers until it is ready. A load that fails leaves the filter as
 * it is: without a loaded filter, every key is looked up.
 */
export class DedupFilter {
  private current: BloomFilter | undefined;
  private loading: Promise<void> | undefined;
  private next: BloomFilter | undefined;
  /** Keys stored, about: what the last load found, plus added, minus deleted since. */
  private stored = 0;
  private failed = false;

  constructor(private readonly load: (into: BloomFilter) => Promise<void>) {}

  /** False only if no such key is stored. The first call starts loading. */
  mayHold(key: string): boolean {
    if (this.current) return this.current.has(key);
    if (!this.loading && !this.failed) this.reload();
    return true;
  }

  /** A key about to be written (a write that then fails leaves one "maybe" more). */
  add(key: string): void {
    this.stored++;
    this.next?.add(key);
    const current = this.current;
    if (!current) return;
    current.add(key);
    if (current.added > current.capacity && !this.loading && !this.failed) this.reload();
  }

  /** `count` keys were deleted from the log. */
  deleted(count: number): void {
    this.stored = Math.max(0, this.stored - count);
  }

  /** Settles when the load under way, if any, has ended. */
  async settled(): Promise<void> {
    await this.loading;
  }

  /** Bytes of memory the filters take. */
  get bytes(): number {
    return (this.current?.bytes ?? 0) + (this.next?.bytes ?? 0);
  }

  private reload(): void {
    const next = new BloomFilter(Math.max(MIN_KEYS, GROWTH * this.stored));
    this.next = next;
    this.loading = this.load(next).then(
      () => {
        this.current = next;
        this.stored = next.added;
      },
      () => {
        this.failed = true;
      },
    ).finally(() => {
      this.next = undefined;
      this.loading = undefined;
    });
  }
}
