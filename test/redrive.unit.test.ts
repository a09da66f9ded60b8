import { rm } from "node:fs/promises";
import { create, toBinary } from "@bufbuild/protobuf";
import { afterEach, describe, expect, it } from "vitest";
import { DeliveryEngine } from "../src/delivery/delivery-engine.js";
import type { OutgoingDelivery } from "../src/delivery/types.js";
import { EventSchema } from "../src/gen/weft/v1/event_pb.js";
import { EventLog } from "../src/log/event-log.js";
import { decodeRecord, encodeRecord, recordSize } from "../src/log/record.js";
import { eventually, settle } from "./support/collect.js";
import { tempDir } from "./support/sidecar.js";

// Events addressed to one group (how a dead letter is redriven): stored like any event of
// the channel, delivered to that group only, skipped by every other group, also by groups
// created later and after a restart.

const bytes = (channel: string, id: string, attributes: Record<string, string> = {}): Uint8Array =>
  toBinary(EventSchema, create(EventSchema, { channel, id, source: "//unit", type: "t", attributes }));
const settings = (channel: string, group: string) => ({
  channel,
  group,
  start: { kind: "earliest" as const },
  maxInFlight: 10,
  ackDeadlineMs: 30_000,
  maxAttempts: 5,
  deadLetterChannel: `${channel}.dlq.${group}`,
});
const sink = (into: OutgoingDelivery[]) => ({ send: (ds: OutgoingDelivery[]) => void into.push(...ds) });

describe("events addressed to one group", () => {
  const cleanup: (() => Promise<void> | void)[] = [];
  afterEach(async () => {
    for (const c of cleanup.splice(0).reverse()) await c();
  });

  it("keeps the group in the stored record, and counts its bytes", () => {
    const event = bytes("c", "1");
    const record = encodeRecord(1234, "key", event, { onlyGroup: "billing" });
    const decoded = decodeRecord("c", 7, record);
    expect(decoded).toMatchObject({ sequence: 7, appendedAt: 1234, key: "key", onlyGroup: "billing" });
    expect(Buffer.from(decoded.bytes).equals(Buffer.from(event))).toBe(true);
    expect(recordSize(decoded)).toBe(record.length);
    expect(decodeRecord("c", 1, encodeRecord(1, "", event)).onlyGroup).toBeUndefined();
  });

  it("are delivered to their group only; other groups skip them, with or without members, also after a restart", async () => {
    const dir = await tempDir();
    cleanup.push(() => rm(dir, { recursive: true, force: true }));
    let log = await EventLog.open(dir);
    let engine = new DeliveryEngine(log);
    await engine.start();
    const toA: OutgoingDelivery[] = [];
    const toB: OutgoingDelivery[] = [];
    const a = await engine.join(settings("ch", "a"), sink(toA));
    const b = await engine.join(settings("ch", "b"), sink(toB));
    await engine.ensure(settings("ch", "idle")); // a group without members
    await log.append([{ channel: "ch", source: "//unit", id: "1", key: "", bytes: bytes("ch", "1") }]);
    const [redriven] = await engine.appendForGroup("ch", "a", [{ source: "weft-redrive:a", id: "x#1", key: "", bytes: bytes("ch", "1", { "weft.redrive.group": "a" }) }]);
    expect(redriven).toEqual({ sequence: 2, duplicate: false });
    // The same redrive again is a duplicate, stored once.
    expect(await engine.appendForGroup("ch", "a", [{ source: "weft-redrive:a", id: "x#1", key: "", bytes: bytes("ch", "1") }])).toEqual([{ sequence: 2, duplicate: true }]);
    await eventually(() => toA.length === 2 && toB.length === 1);
    await settle(100);
    expect(toA.map((d) => d.event.sequence)).toEqual([1, 2]);
    expect(toB.map((d) => d.event.sequence)).toEqual([1]);
    a.ack([1, 2]);
    b.ack([1]);
    const status = () => Object.fromEntries(engine.describeGroups().map((g) => [g.group, [g.ackedThrough, g.backlog]]));
    await eventually(() => status().a?.[1] === 0 && status().b?.[1] === 0);
    expect(status()).toEqual({ a: [2, 0], b: [2, 0], idle: [0, 1] }); // idle skipped it at once: only event 1 waits

    // A group created later from the earliest event skips it when it reads it.
    const toLate: OutgoingDelivery[] = [];
    const late = await engine.join(settings("ch", "late"), sink(toLate));
    await eventually(() => toLate.length === 1);
    await settle(100);
    expect(toLate.map((d) => d.event.sequence)).toEqual([1]);
    late.leave();

    // After a restart, the record still says whose it is.
    await engine.appendForGroup("ch", "a", [{ source: "weft-redrive:a", id: "x#2", key: "", bytes: bytes("ch", "2") }]);
    a.leave();
    b.leave();
    engine.stop();
    await log.close();
    log = await EventLog.open(dir);
    engine = new DeliveryEngine(log);
    await engine.start();
    cleanup.push(
      () => log.close(),
      () => engine.stop(),
    );
    const toB2: OutgoingDelivery[] = [];
    const toA2: OutgoingDelivery[] = [];
    await engine.join(settings("ch", "b"), sink(toB2));
    await engine.join(settings("ch", "a"), sink(toA2));
    await eventually(() => toA2.length === 1);
    await settle(100);
    expect(toA2.map((d) => d.event.sequence)).toEqual([3]);
    expect(toB2).toEqual([]);
  });
});
