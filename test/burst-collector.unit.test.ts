import { describe, expect, it } from "vitest";
import { BurstCollector } from "../src/ops/burst-collector.js";

// When the sidecar collects its heap after a burst of appends: a fake clock, stores told by hand.

describe("BurstCollector", () => {
  const setup = () => {
    let now = 0;
    let collections = 0;
    const collector = new BurstCollector({ gc: () => collections++, burstBytes: 1000, quietMs: 1000, now: () => now });
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
});
