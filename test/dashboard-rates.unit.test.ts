import { describe, expect, it } from "vitest";
import type { EventCounts } from "../src/admin/index.js";
import { RateHistory, drainSeconds } from "../src/dashboard/index.js";

// The dashboard's rate history and drain estimate, without sockets or timers: a fake clock
// and counters moved by hand.

describe("RateHistory", () => {
  it("keeps per-second rates of the four counters in a ring of the last `capacity` samples", async () => {
    let now = 1_000_000;
    const counts: EventCounts = { published: 0, stored: 0, forwarded: 0, acked: 0 };
    const history = new RateHistory({ read: () => ({ ...counts }), capacity: 3, now: () => now });
    await history.sample(); // the first reading records nothing
    expect(history.samples()).toEqual([]);
    for (let i = 1; i <= 5; i++) {
      now += 2000;
      counts.published += 10 * i;
      counts.stored += 10 * i;
      counts.forwarded += 4;
      counts.acked += 2 * i;
      await history.sample();
    }
    // Oldest first; only the last three (i = 3, 4, 5) are kept; rates are per second over 2 s.
    expect(history.samples()).toEqual([3, 4, 5].map((i) => ({ time: 1_000_000 + 2000 * i, published: 5 * i, stored: 5 * i, forwarded: 2, acked: i })));
  });

  it("measures a channel's published and a group's processed rate over the drain window", async () => {
    let now = 0;
    const published = new Map<string, number>();
    const acked = new Map<string, number>();
    const history = new RateHistory({
      read: () => ({ published: 0, stored: 0, forwarded: 0, acked: 0 }),
      readGroups: async () => ({ published: new Map(published), acked: new Map(acked) }),
      groupWindow: 2,
      now: () => now,
    });
    expect(history.groupRates().seconds).toBe(0);
    await history.sample();
    for (let i = 1; i <= 4; i++) {
      now += 1000;
      published.set("orders", 100 * i);
      // The group's counter appears only now: it counted 0 before.
      if (i >= 3) acked.set("orders billing", 30 * (i - 2));
      await history.sample();
    }
    const rates = history.groupRates();
    expect(rates.seconds).toBe(2); // the last two intervals
    expect(rates.published("orders")).toBe(100);
    expect(rates.acked("orders", "billing")).toBe(30);
    expect(rates.acked("orders", "nobody")).toBe(0);
    expect(rates.published("nothing")).toBe(0);
  });
});

describe("drainSeconds", () => {
  it("is backlog ÷ (processed − published) when positive, undefined (not draining) otherwise, 0 without a backlog", () => {
    expect(drainSeconds(1000, 150, 50)).toBe(10);
    expect(drainSeconds(1000, 50, 50)).toBeUndefined();
    expect(drainSeconds(1000, 20, 50)).toBeUndefined();
    expect(drainSeconds(0, 0, 50)).toBe(0);
  });
});
