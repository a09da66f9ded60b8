import type { StoredEvent } from "./record.js";

/** What one cached event is counted as besides its bytes (the object, its key, its slot). */
const EVENT_OVERHEAD = 128;

interface Tail {
  /** Consecutive sequences; the live ones start at `skip`. */
  events: StoredEvent[];
  skip: number;
  bytes: number;
}

/**
 * The newest events of each channel, kept in memory as they are written, so a reader that
 * keeps up with the log (a dispatcher waiting for the next event) gets them without a
 * LevelDB iterator: an iterator costs two trips to LevelDB's threads and their wake-ups,
 * which at a low rate is most of an event's way through the sidecar.
 *
 * Bounded: at most `maxEventsPerChannel` per channel and `maxBytes` in all; the channels
 * written longest ago lose theirs first. A channel written to keeps only events appended
 * within `maxAgeMs` of its newest: a reader that keeps up takes an event within
 * milliseconds, and an event held for a second or more outlives young-generation
 * collections and dies in the old generation, which costs full collections. A read it
 * cannot serve whole is left to LevelDB.
 */
export class TailCache {
  private readonly tails = new Map<string, Tail>();
  private bytes = 0;

  constructor(
    private readonly maxBytes: number,
    private readonly maxEventsPerChannel: number,
    private readonly maxAgeMs = Infinity,
  ) {}

  /** Adds events just stored in `channel`, in sequence order, following what is cached. */
  add(channel: string, events: readonly StoredEvent[]): void {
    if (events.length === 0) return;
    let tail = this.tails.get(channel);
    const last = tail && tail.events.length > tail.skip ? tail.events[tail.events.length - 1]!.sequence : undefined;
    if (tail && last !== undefined && last + 1 !== events[0]!.sequence) {
      this.drop(channel, tail);
      tail = undefined;
    }
    if (tail) this.tails.delete(channel); // re-inserted below: the map is in order of last write
    else tail = { events: [], skip: 0, bytes: 0 };
    this.tails.set(channel, tail);
    for (const e of events) {
      tail.events.push(e);
      const size = e.bytes.length + EVENT_OVERHEAD;
      tail.bytes += size;
      this.bytes += size;
    }
    this.trimFront(tail, tail.events.length - tail.skip - this.maxEventsPerChannel);
    const oldest = tail.events[tail.events.length - 1]!.appendedAt - this.maxAgeMs;
    let aged = 0;
    while (tail.skip + aged < tail.events.length && tail.events[tail.skip + aged]!.appendedAt < oldest) aged++;
    this.trimFront(tail, aged);
    for (const [other, t] of this.tails) {
      if (this.bytes <= this.maxBytes || other === channel) break;
      this.drop(other, t);
    }
    while (this.bytes > this.maxBytes && tail.events.length > tail.skip) this.trimFront(tail, 1);
  }

  /**
   * Up to `limit` events from sequence `from` on, stopping once `maxBytes` of event bytes
   * are taken (at least one), like EventStore.read; undefined when `from` is not cached.
   */
  read(channel: string, from: number, limit: number, maxBytes: number): StoredEvent[] | undefined {
    const tail = this.tails.get(channel);
    if (!tail || tail.events.length === tail.skip) return undefined;
    const first = tail.events[tail.skip]!.sequence;
    const index = tail.skip + (from - first);
    if (from < first || index >= tail.events.length) return undefined;
    const out: StoredEvent[] = [];
    let bytes = 0;
    for (let i = index; i < tail.events.length && out.length < limit && bytes < maxBytes; i++) {
      const e = tail.events[i]!;
      out.push(e);
      bytes += e.bytes.length;
    }
    return out;
  }

  clear(): void {
    this.tails.clear();
    this.bytes = 0;
  }

  private drop(channel: string, tail: Tail): void {
    this.bytes -= tail.bytes;
    this.tails.delete(channel);
  }

  private trimFront(tail: Tail, count: number): void {
    for (let i = 0; i < count && tail.skip < tail.events.length; i++) {
      const size = tail.events[tail.skip]!.bytes.length + EVENT_OVERHEAD;
      tail.bytes -= size;
      this.bytes -= size;
      tail.skip++;
    }
    if (tail.skip > 0 && tail.skip * 2 >= tail.events.length) {
      tail.events = tail.events.slice(tail.skip);
      tail.skip = 0;
    }
  }
}
