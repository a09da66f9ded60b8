import { describe, expect, it } from "vitest";
import { BloomFilter } from "../src/log/bloom-filter.js";
import { DedupFilter } from "../src/log/dedup-filter.js";

const key = (i: number): string => `d!orders!6://shop${i.toString(16).padStart(8, "0")}-7c1e-4b9a-9f3e-5d2a8c6b1e0f`;

describe("BloomFilter", () => {
  it("holds every key added, and few others while within its capacity", () => {
    const f = new BloomFilter(200_000);
    for (let i = 0; i < 200_000; i++) f.add(key(i));
    for (let i = 0; i < 200_000; i++) if (!f.has(key(i))) throw new Error(`lost ${key(i)}`);
    let maybe = 0;
    for (let i = 200_000; i < 300_000; i++) if (f.has(key(i))) maybe++;
    expect(maybe / 100_000).toBeLessThan(0.02);
    expect(f.added).toBe(200_000);
  });

  it("is sized by its capacity, between 128 KiB and 16 MiB", () => {
    expect(new BloomFilter(1).bytes).toBe(128 * 1024);
    expect(new BloomFilter(1_000_000).bytes).toBe(2 * 1024 * 1024);
    expect(new BloomFilter(1e9).bytes).toBe(16 * 1024 * 1024);
  });
});

/** A load the test ends: it adds `keys`, then waits for `finish()`. */
function controlledLoad(keys: string[]) {
  const loads: { into: BloomFilter; finish: (ok?: boolean) => void }[] = [];
  const load = (into: BloomFilter): Promise<void> =>
    new Promise((resolve, reject) => {
      for (const k of keys) into.add(k);
      loads.push({ into, finish: (ok = true) => (ok ? resolve() : reject(new Error("load failed"))) });
    });
  return { load, loads };
}

/** A filter whose first load (of no keys) has ended, and the capacity it was sized for. */
async function loadedEmpty() {
  const { load, loads } = controlledLoad([]);
  const filter = new DedupFilter(load);
  filter.mayHold(key(0));
  loads[0]!.finish();
  await filter.settled();
  return { filter, loads, capacity: loads[0]!.into.capacity };
}

describe("DedupFilter", () => {
  it("may hold any key until its first load ends, and then only what the load and add gave it", async () => {
    const stored = [key(1), key(2)];
    const { load, loads } = controlledLoad(stored);
    const filter = new DedupFilter(load);
    expect(filter.mayHold(key(3))).toBe(true);
    expect(filter.mayHold(key(4))).toBe(true);
    expect(loads).toHaveLength(1); // the first question starts one load
    filter.add(key(5)); // written while the load runs
    loads[0]!.finish();
    await filter.settled();
    expect(filter.mayHold(key(1))).toBe(true);
    expect(filter.mayHold(key(2))).toBe(true);
    expect(filter.mayHold(key(5))).toBe(true);
    let maybe = 0;
    for (let i = 100; i < 1100; i++) if (filter.mayHold(key(i))) maybe++;
    expect(maybe).toBeLessThan(20);
  });

  it("loads a larger filter once more keys were added than it was sized for, answering from the old one meanwhile", async () => {
    const { filter, loads, capacity } = await loadedEmpty();
    for (let i = 0; i <= capacity; i++) filter.add(key(i));
    expect(loads).toHaveLength(2);
    expect(loads[1]!.into.capacity).toBe(4 * (capacity + 1));
    filter.add(key(capacity + 1)); // during the reload: into both
    for (const i of [0, capacity, capacity + 1]) expect(filter.mayHold(key(i))).toBe(true);
    loads[1]!.finish();
    await filter.settled();
    expect(loads[1]!.into.has(key(capacity + 1))).toBe(true);
    expect(filter.mayHold(key(capacity + 1))).toBe(true);
    expect(filter.bytes).toBe(loads[1]!.into.bytes);
  });

  it("sizes the next filter by the keys stored: deleted ones do not count", async () => {
    const { filter, loads, capacity } = await loadedEmpty();
    for (let i = 0; i < capacity; i++) filter.add(key(i));
    filter.deleted(capacity);
    filter.add(key(capacity)); // one more than sized for: a reload, for the one key stored
    expect(loads[1]!.into.capacity).toBe(capacity); // the smallest size, not four times the keys ever added
  });

  it("answers \"may hold\" for every key after a failed first load, and does not load again", async () => {
    const { load, loads } = controlledLoad([]);
    const filter = new DedupFilter(load);
    filter.mayHold(key(0));
    loads[0]!.finish(false);
    await filter.settled();
    expect(filter.mayHold(key(7))).toBe(true);
    expect(loads).toHaveLength(1);
  });
});
