import { describe, expect, it } from "vitest";
import type { OutgoingDelivery } from "../src/delivery/types.js";
import type { StoredEvent } from "../src/log/record.js";
import { logObserver } from "../src/ops/log-observer.js";
import { type LogLevel, createLogger } from "../src/ops/logger.js";
import { NO_OBSERVER } from "../src/ops/observer.js";

function capture(level: LogLevel) {
  const records: Record<string, unknown>[] = [];
  const logger = createLogger({ level, destination: { write: (line: string) => records.push(JSON.parse(line)) } });
  return { observer: logObserver(logger), records };
}

const event: StoredEvent = { channel: "orders", sequence: 7, appendedAt: 0, key: "", bytes: new Uint8Array() };
const deliveries: OutgoingDelivery[] = [
  { deliveryId: 1, attempt: 1, deadline: 0, event },
  { deliveryId: 2, attempt: 2, deadline: 0, event },
];

/** Tells the observer one of everything. */
function tellAll(o: ReturnType<typeof logObserver>): void {
  o.published("orders", 3);
  o.stored("orders", 3, 300, { count: 0, bytes: 0 });
  o.deduplicated("orders", false);
  o.forwarded("west", "orders", "billing", 2, 200);
  o.delivered("orders", "billing", deliveries);
  o.acked("orders", "billing", event);
  o.deadLettered("orders", "billing", event);
  o.expired("orders", undefined, 5);
  o.expired("orders", "billing", 2);
  o.peerLink("west", true);
}

describe("the log observer", () => {
  it("logs dead letters and events lost to retention at warn, and nothing else, at the default level", () => {
    const { observer, records } = capture("info");
    tellAll(observer);
    expect(records).toMatchObject([
      { level: "warn", channel: "orders", group: "billing", msg: "an event of orders went to the dead letters of billing after its last attempt" },
      { level: "warn", channel: "orders", group: "billing", count: 2, msg: "retention removed 2 event(s) of orders before billing finished them" },
    ]);
    // The per-event hooks are the no-ops themselves: nothing to pay on the path of an event.
    expect(observer.published).toBe(NO_OBSERVER.published);
    expect(observer.acked).toBe(NO_OBSERVER.acked);
  });

  it("logs retention at debug, and every batch and ack at trace", () => {
    const debug = capture("debug");
    tellAll(debug.observer);
    expect(debug.records.map((r) => r.level)).toEqual(["warn", "debug", "warn"]);
    const trace = capture("trace");
    tellAll(trace.observer);
    expect(trace.records.map((r) => [r.level, r.msg])).toEqual([
      ["trace", "published 3 event(s) to orders"],
      ["trace", "stored 3 event(s) in orders"],
      ["trace", "a duplicate publish to orders, acked with its first sequence"],
      ["trace", "forwarded 2 event(s) of orders to west for billing"],
      ["trace", "delivered 2 event(s) of orders to a member of billing"],
      ["trace", "billing acked orders#7"],
      ["warn", "an event of orders went to the dead letters of billing after its last attempt"],
      ["debug", "retention removed 5 event(s) of orders"],
      ["warn", "retention removed 2 event(s) of orders before billing finished them"],
    ]);
    expect(trace.records[4]).toMatchObject({ count: 2, redeliveries: 1 });
  });

  it("logs a full disk at error and its end at info, each once", () => {
    const { observer, records } = capture("info");
    observer.diskFull("/var/lib/weft", true, "IO error: /var/lib/weft/000005.log: No space left on device");
    observer.diskFull("/var/lib/weft", false, "writable again after 1500 ms");
    expect(records).toMatchObject([
      { level: "error", dataDir: "/var/lib/weft", reason: "DISK_FULL", msg: expect.stringContaining("the disk of /var/lib/weft is full") },
      { level: "info", dataDir: "/var/lib/weft", msg: "the disk of /var/lib/weft has room again: writable again after 1500 ms" },
    ]);
  });

  it("logs only a full disk at error, and is no observer at all above error", () => {
    const error = capture("error");
    tellAll(error.observer);
    error.observer.diskFull("/data", true, "No space left on device");
    expect(error.records.map((r) => [r.level, r.reason])).toEqual([["error", "DISK_FULL"]]);
    expect(error.observer.deadLettered).toBe(NO_OBSERVER.deadLettered);
    expect(capture("fatal").observer).toBe(NO_OBSERVER);
  });
});
