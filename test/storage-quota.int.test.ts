import { status } from "@grpc/grpc-js";
import { afterEach, describe, expect, it } from "vitest";
import { ClientError } from "../src/client/index.js";
import { take } from "./support/collect.js";
import { type TestSidecar, startSidecar } from "./support/sidecar.js";

/**
 * maxStoredBytes on a real sidecar: once the log's events take the quota, a publish is
 * refused with RESOURCE_EXHAUSTED / STORAGE_QUOTA and nothing of it is stored; once retention
 * has removed old events, publishes are stored again. Relay copies and dead letters are not
 * counted against it (they carry events already accepted), so only Publish is exercised.
 */
describe("the stored-bytes quota (maxStoredBytes)", () => {
  let t: TestSidecar | undefined;
  afterEach(async () => {
    await t?.dispose();
    t = undefined;
  });

  it("refuses publishes with STORAGE_QUOTA while the log holds the quota, and takes them again once retention frees room", async () => {
    const channel = "quota.orders";
    const quota = 8 * 1024;
    // Retention runs only when the test says (sweep below), as the sidecar's interval would.
    t = await startSidecar({ maxStoredBytes: quota, sweepIntervalMs: 86_400_000, channels: { [channel]: { maxAgeMs: 86_400_000, maxBytes: 2048 } } });
    const client = t.client({ source: "//quota-test" });
    const data = "x".repeat(500);

    let stored = 0;
    let refused: unknown;
    for (let i = 0; i < 100 && refused === undefined; i++) {
      try {
        await client.publish({ channel, id: `e${i}`, data });
        stored++;
      } catch (e) {
        refused = e;
      }
    }
    expect(refused).toBeInstanceOf(ClientError);
    const error = refused as ClientError;
    expect({ code: status[error.code], reason: error.reason }).toEqual({ code: "RESOURCE_EXHAUSTED", reason: "STORAGE_QUOTA" });
    expect(error.message).toMatch(/^STORAGE_QUOTA: the log holds \d+ bytes of events, its quota \(maxStoredBytes\) is 8192/);
    // Stored up to the quota, not a byte of the refused one.
    const head = t.sidecar.log.head(channel);
    expect(head.last).toBe(stored);
    expect(head.bytes).toBeGreaterThanOrEqual(quota);
    expect(t.sidecar.log.storedBytes).toBe(head.bytes);
    // Still refused, on the same client: it does not get in by trying again.
    await expect(client.publish({ channel, id: "again", data })).rejects.toMatchObject({ reason: "STORAGE_QUOTA" });
    expect(t.sidecar.log.head(channel).last).toBe(stored);
    // The sidecar stays ready: a quota is a limit on publishers, not a fault.
    expect(t.sidecar.notReady()).toBeUndefined();

    // Retention removes the oldest events down to the channel's 2 KiB: room again.
    await t.sidecar.log.sweep();
    expect(t.sidecar.log.storedBytes).toBeLessThan(quota);
    const sequence = (await client.publish({ channel, id: "after", data })).sequence;
    expect(sequence).toBe(BigInt(stored + 1));

    // What was stored is delivered, the refused events are not.
    const head2 = t.sidecar.log.head(channel);
    const sub = client.subscribe({ channel, group: "audit", from: "earliest" });
    const got = await take(sub, head2.last - head2.first + 1, (d) => d.ack());
    expect(got.map((d) => d.event.id).at(-1)).toBe("after");
    expect(got.map((d) => d.event.id)).not.toContain("again");
    sub.close();
  });
});
