import { describe, expect, it } from "vitest";
import type { StoredEvent } from "../src/log/record.js";
import { TailCache } from "../src/log/tail-cache.js";

function events(channel: string, from: number, count: number, size = 10): StoredEvent[] {
  return Array.from({ length: count }, (_, i) => ({ channel, sequence: from + i, appendedAt: 0, key: "", bytes: new Uint8Array(size) }));
}
const seqs = (r: StoredEvent[] | undefined): number[] | undefined => r?.map((e) => e.sequence);

describe("TailCache", () => {
  it("serves reads from a cached sequence on, within the limit and the byte budget", () => {
    const cache = new TailCache(1 << 20, 100);
    cache.add("a", events("a", 1, 5, 10));
    expect(seqs(cache.read("a", 1, 10, Infinity))).toEqual([1, 2, 3, 4, 5]);
    expect(seqs(cache.read("a", 3, 2, Infinity))).toEqual([3, 4]);
    // Stops once the byte budget is reached, always with at least one event.
    expect(seqs(cache.read("a", 2, 10, 15))).toEqual([2, 3]);
    expect(seqs(cache.read("a", 2, 10, 1))).toEqual([2]);
  });

  it("leaves to LevelDB what it does not hold: before its first, after its last, other channels", () => {
    const cache = new TailCache(1 << 20, 100);
    cache.add("a", events("a", 10, 3));
    expect(cache.read("a", 9, 10, Infinity)).toBeUndefined();
    expect(cache.read("a", 13, 10, Infinity)).toBeUndefined();
    expect(cache.read("b", 1, 10, Infinity)).toBeUndefined();
  });

  it("extends a channel's tail with the next sequences and starts over after a gap", () => {
    const cache = new TailCache(1 << 20, 100);
    cache.add("a", events("a", 1, 3));
    cache.add("a", events("a", 4, 2));
    expect(seqs(cache.read("a", 1, 10, Infinity))).toEqual([1, 2, 3, 4, 5]);
    cache.add("a", events("a", 9, 2));
    expect(cache.read("a", 1, 10, Infinity)).toBeUndefined();
    expect(seqs(cache.read("a", 9, 10, Infinity))).toEqual([9, 10]);
  });

  it("keeps of a channel written to only the events appended within maxAgeMs of its newest", () => {
    const cache = new TailCache(1 << 20, 100, 100);
    const at = (list: StoredEvent[], appendedAt: number): StoredEvent[] => list.map((e) => ({ ...e, appendedAt }));
    cache.add("a", at(events("a", 1, 3), 1000));
    cache.add("b", at(events("b", 1, 2), 1000));
    cache.add("a", at(events("a", 4, 2), 1100)); // 1000 is within 100 ms of 1100
    expect(seqs(cache.read("a", 1, 10, Infinity))).toEqual([1, 2, 3, 4, 5]);
    cache.add("a", at(events("a", 6, 1), 1150));
    expect(cache.read("a", 1, 10, Infinity)).toBeUndefined(); // 1, 2 and 3 were appended at 1000
    expect(seqs(cache.read("a", 4, 10, Infinity))).toEqual([4, 5, 6]);
    // A channel not written to keeps what it has.
    expect(seqs(cache.read("b", 1, 10, Infinity))).toEqual([1, 2]);
  });

  it("keeps at most maxEventsPerChannel of a channel, the newest", () => {
    const cache = new TailCache(1 << 20, 4);
    for (let s = 1; s <= 20; s += 2) cache.add("a", events("a", s, 2));
    expect(cache.read("a", 16, 10, Infinity)).toBeUndefined();
    expect(seqs(cache.read("a", 17, 10, Infinity))).toEqual([17, 18, 19, 20]);
  });

  it("stays within maxBytes: the channel written longest ago goes first, then the oldest of the newest", () => {
    // Each event counts its bytes plus a fixed overhead, so 10 events of 1000 bytes are over 10 000.
    const cache = new TailCache(10_000, 1000);
    cache.add("old", events("old", 1, 4, 1000));
    cache.add("new", events("new", 1, 4, 1000));
    expect(cache.read("old", 1, 10, Infinity)).toBeDefined();
    cache.add("new", events("new", 5, 2, 1000));
    expect(cache.read("old", 1, 10, Infinity)).toBeUndefined();
    expect(seqs(cache.read("new", 1, 10, Infinity))).toEqual([1, 2, 3, 4, 5, 6]);
    cache.add("new", events("new", 7, 8, 1000));
    const kept = seqs(cache.read("new", 15 - 8, 100, Infinity)) ?? [];
    expect(kept.at(-1)).toBe(14);
    expect(cache.read("new", 1, 10, Infinity)).toBeUndefined();
    expect(kept.length).toBeLessThan(10);
  });

  it("holds nothing after clear", () => {
    const cache = new TailCache(1 << 20, 100);
    cache.add("a", events("a", 1, 3));
    cache.clear();
    expect(cache.read("a", 1, 10, Infinity)).toBeUndefined();
  });
});
