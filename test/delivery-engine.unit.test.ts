import { rm } from "node:fs/promises";
import { create, toBinary } from "@bufbuild/protobuf";
import { afterEach, describe, expect, it } from "vitest";
import { DeliveryEngine } from "../src/delivery/delivery-engine.js";
import type { OutgoingDelivery } from "../src/delivery/types.js";
import { EventSchema } from "../src/gen/weft/v1/event_pb.js";
import { OriginLog } from "../src/log/origin-log.js";
import { eventually } from "./support/collect.js";
import { tempDir } from "./support/sidecar.js";

const event = (channel: string, id: string) => {
  const bytes = toBinary(EventSchema, create(EventSchema, { channel, id, source: "//unit", type: "t" }));
  return { channel, source: "//unit", id, key: "", bytes };
};
const settings = (channel: string, group: string) => ({
  channel,
  group,
  start: { kind: "earliest" as const },
  maxInFlight: 10,
  ackDeadlineMs: 30_000,
  maxAttempts: 5,
  deadLetterChannel: `${channel}.dlq.${group}`,
});

describe("DeliveryEngine", () => {
  const cleanup: (() => Promise<void> | void)[] = [];
  afterEach(async () => {
    for (const c of cleanup.splice(0).reverse()) await c();
  });
  async function setup(now: () => number) {
    const dir = await tempDir();
    const log = await OriginLog.open(dir, { now, retention: { maxAgeMs: 10_000, maxBytes: 1e9 } });
    const engine = new DeliveryEngine(log, { now });
    await engine.start();
    cleanup.push(() => rm(dir, { recursive: true, force: true }), () => log.close(), () => engine.stop());
    return { log, engine };
  }

  it("counts events that retention removed before a group finished them, and moves its cursor", async () => {
    let now = 1_000_000;
    const { log, engine } = await setup(() => now);
    const m = await engine.join(settings("ret", "slow"), { send: () => {} });
    m.leave(); // the group exists, with nobody consuming
    await log.append([event("ret", "1"), event("ret", "2"), event("ret", "3")]);
    now += 20_000;
    await log.sweep();
    const [g] = engine.status();
    expect(g).toMatchObject({ channel: "ret", group: "slow", ackedThrough: 3, expiredUnacked: 3, backlog: 0 });
  });

  it("restores attempts in flight when a new engine starts on the same log", async () => {
    const now = () => Date.now();
    const dir = await tempDir();
    cleanup.push(() => rm(dir, { recursive: true, force: true }));
    let log = await OriginLog.open(dir, { now });
    let engine = new DeliveryEngine(log, { now });
    await engine.start();
    const got: OutgoingDelivery[] = [];
    await engine.join(settings("restore", "g"), { send: (ds) => got.push(...ds) });
    await log.append([event("restore", "a"), event("restore", "b")]);
    await eventually(() => got.length === 2);
    engine.stop();
    await log.close();

    log = await OriginLog.open(dir, { now });
    engine = new DeliveryEngine(log, { now });
    await engine.start();
    cleanup.push(() => log.close(), () => engine.stop());
    const again: OutgoingDelivery[] = [];
    await engine.join(settings("restore", "g"), { send: (ds) => again.push(...ds) });
    await eventually(() => again.length === 2);
    expect(again.map((d) => [d.event.sequence, d.attempt])).toEqual([
      [1, 2],
      [2, 2],
    ]);
  });
});
