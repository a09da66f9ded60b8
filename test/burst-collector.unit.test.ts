import { describe, expect, it } from "vitest";
import { BurstCollector, collectAllGarbage } from "../src/ops/burst-collector.js";
import { loadMallocTrim } from "../src/ops/malloc-trim.js";

// When the sidecar collects its heap after a burst of appends: a fake clock, stores told by hand.

describe("BurstCollector", () => {
  const setup = () => {
    let now = 0;
    let collections = 0;
    const collector = new BurstCollector({ gc: () => collections++, trim: null, burstBytes: 1000, quietMs: 1000, now: () => now });
    return {
      collector,
      store: (bytes: number) => collector.observer.stored("c", 1, bytes),
      advance: (ms: number) => (now += ms),
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

  it("trims malloc once the collection it follows is done, and not before", async () => {
    let done: () => void = () => {};
    let trims = 0;
    const collector = new BurstCollector({ gc: (d) => (done = d), trim: () => trims++, trimDelayMs: 0, burstBytes: 1, quietMs: 0, now: () => 0 });
    collector.observer.stored("c", 1, 10);
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
