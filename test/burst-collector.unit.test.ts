import { describe, expect, it } from "vitest";
import { BurstCollector, collectAllGarbage } from "../src/ops/burst-collector.js";
import { loadMallocTrim } from "../src/ops/malloc-trim.js";

// When the sidecar collects its heap after a burst of appends: a fake clock, stores told by hand.

describe("BurstCollector", () => {
  const setup = () => {
    let now = 0;
    let rss = 50_000;
    let collections = 0;
    // A collection gives back half of what the process holds over 50 000 bytes.
    const gc = (done: () => void): void => {
      collections++;
      rss -= (rss - 50_000) / 2;
      done();
    };
    const collector = new BurstCollector({ gc, trim: null, burstBytes: 1000, quietMs: 1000, now: () => now, rss: () => rss });
    collector.start();
    collector.stop(); // checked by hand below
    return {
      collector,
      store: (bytes: number) => collector.observer.stored("c", 1, bytes, { count: 0, bytes: 0 }),
      advance: (ms: number) => (now += ms),
      grow: (bytes: number) => (rss += bytes),
      collections: () => collections,
    };
  };

  it("collects once a burst is followed by a quiet second, and once only", () => {
    const t = setup();
    t.store(600);
    t.store(600);
    t.advance(999);
    expect(t.collector.check()).toBe(false); // not quiet long enough
    t.advance(1);
    expect(t.collector.check()).toBe(true);
    t.advance(5000);
    expect(t.collector.check()).toBe(false); // nothing stored since
    expect(t.collections()).toBe(1);
  });

  it("waits while stores go on, and leaves less than a burst alone", () => {
    const t = setup();
    for (let i = 0; i < 10; i++) {
      t.store(500);
      t.advance(500);
      expect(t.collector.check()).toBe(false);
    }
    t.advance(500);
    expect(t.collector.check()).toBe(true);
    t.store(999);
    t.advance(10_000);
    expect(t.collector.check()).toBe(false);
    expect(t.collections()).toBe(1);
  });

  it("collects again when a burst goes on after a pause: the process grew by a burst, though less was stored", () => {
    const t = setup();
    t.store(1200);
    t.grow(3000);
    t.advance(1000); // a pause in the burst (LevelDB stalling writes while it compacts)
    expect(t.collector.check()).toBe(true);
    t.store(400); // the rest of the burst: less than a burst stored, as much grown again
    t.grow(1000);
    t.advance(1000);
    expect(t.collector.check()).toBe(true);
    expect(t.collections()).toBe(2);
  });

  it("leaves growth alone while nothing is stored (a drain reads, it does not store)", () => {
    const t = setup();
    t.grow(5000);
    t.advance(10_000);
    expect(t.collector.check()).toBe(false);
    t.store(10);
    t.advance(999);
    expect(t.collector.check()).toBe(false); // not quiet yet
    t.advance(1);
    expect(t.collector.check()).toBe(true); // grown by a burst since start(), and something stored
    t.store(10);
    t.advance(1000);
    expect(t.collector.check()).toBe(false); // no growth since the collection
    expect(t.collections()).toBe(1);
  });

  it("trims malloc once the collection it follows is done, and not before", async () => {
    let done: () => void = () => {};
    let trims = 0;
    const collector = new BurstCollector({ gc: (d) => (done = d), trim: () => trims++, trimDelayMs: 0, burstBytes: 1, quietMs: 0, now: () => 0 });
    collector.observer.stored("c", 1, 10, { count: 0, bytes: 0 });
    expect(collector.check()).toBe(true);
    await new Promise((r) => setTimeout(r, 20));
    expect(trims).toBe(0); // the collection has not finished
    done();
    await new Promise((r) => setTimeout(r, 20));
    expect(trims).toBe(1);
  });
});

describe("loadMallocTrim", () => {
  it.runIf(process.platform === "linux")("hands memory malloc kept after a burst back to the system (glibc)", async () => {
    const trim = loadMallocTrim();
    expect(trim).toBeTypeOf("function");
    const rssMiB = (): number => process.memoryUsage().rss / 2 ** 20;
    // A burst of ~200 MiB of small buffers (malloc'd one by one), of which one in eight stays:
    // what is freed lies between what stays, where free() cannot give it back.
    let burst: (Buffer | undefined)[] = [];
    for (let i = 0; i < 200_000; i++) burst.push(Buffer.allocUnsafeSlow(1000).fill(i));
    const kept = burst.filter((_, i) => i % 8 === 0);
    burst = [];
    await new Promise<void>((r) => collectAllGarbage(r));
    await new Promise((r) => setTimeout(r, 200));
    const before = rssMiB();
    trim!();
    const after = rssMiB();
    expect(kept).toHaveLength(25_000);
    expect(before - after).toBeGreaterThan(50);
  });
});
