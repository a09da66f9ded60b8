import { rm } from "node:fs/promises";
import { create, toBinary } from "@bufbuild/protobuf";
import { afterEach, describe, expect, it } from "vitest";
import { DeliveryEngine } from "../src/delivery/delivery-engine.js";
import type { OutgoingDelivery } from "../src/delivery/types.js";
import { EventSchema } from "../src/gen/weft/v1/event_pb.js";
import { ClassicLevel } from "classic-level";
import { EventLog } from "../src/log/event-log.js";
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
    const log = await EventLog.open(dir, { now, retention: { maxAgeMs: 10_000, maxBytes: 1e9 } });
    const engine = new DeliveryEngine(log, { now });
    await engine.start();
    cleanup.push(() => rm(dir, { recursive: true, force: true }), () => log.close(), () => engine.stop());
    return { log, engine };
  }

  /**
   * Runs `work` with the log in `dir` and an engine on it, then stops the engine and closes
   * the log, as a crash leaves them: what is in flight stays in flight.
   */
  const runIn =
    (dir: string) =>
    async (work: (log: EventLog, engine: DeliveryEngine) => Promise<void>): Promise<void> => {
      const log = await EventLog.open(dir);
      const engine = new DeliveryEngine(log);
      await engine.start();
      try {
        await work(log, engine);
      } finally {
        engine.stop();
        await log.close();
      }
    };

  it("counts first attempts by the group's attempt mark: a crash brings back the unacked at attempt 2, and leaves no record once all are done", async () => {
    const dir = await tempDir();
    cleanup.push(() => rm(dir, { recursive: true, force: true }));
    /** The group-state keys in the data directory, by kind (the log must be closed). */
    const keys = async (): Promise<{ pump: number; inflight: string[]; mark: boolean }> => {
      const db = new ClassicLevel<string, string>(dir);
      const all: string[] = [];
      for await (const k of db.keys()) all.push(k);
      await db.close();
      return { pump: all.filter((k) => k.startsWith("p!")).length, inflight: all.filter((k) => k.startsWith("f!")), mark: all.includes("t!pump!g") };
    };
    const run = runIn(dir);

    await run(async (log, engine) => {
      const got: OutgoingDelivery[] = [];
      const m = await engine.join(settings("pump", "g"), { send: (ds) => got.push(...ds) });
      await log.append(["1", "2", "3", "4", "5"].map((id) => event("pump", id)));
      await eventually(() => got.length === 5);
      expect(got.map((d) => d.attempt)).toEqual([1, 1, 1, 1, 1]);
      m.ack(got.slice(0, 2).map((d) => d.deliveryId));
      await eventually(() => engine.status()[0]?.ackedThrough === 2);
    });
    // Stopped like a crash would leave it: 3, 4 and 5 in flight, counted by the mark alone.
    expect(await keys()).toEqual({ pump: 0, inflight: [], mark: true });

    await run(async (_log, engine) => {
      const got: OutgoingDelivery[] = [];
      const m = await engine.join(settings("pump", "g"), { send: (ds) => got.push(...ds) });
      await eventually(() => got.length === 3);
      expect(got.map((d) => [d.event.sequence, d.attempt])).toEqual([[3, 2], [4, 2], [5, 2]]);
      m.ack(got.map((d) => d.deliveryId));
      await eventually(() => engine.status()[0]?.ackedThrough === 5);
    });
    expect(await keys()).toEqual({ pump: 0, inflight: [], mark: true });

    // A first attempt given back does not count, after a crash either: its record says 0, over the mark.
    await run(async (log, engine) => {
      const got: OutgoingDelivery[] = [];
      const m = await engine.join(settings("pump", "g"), { send: (ds) => got.push(...ds) });
      await log.append([event("pump", "6")]);
      await eventually(() => got.length === 1);
      m.leave(true);
    });
    expect((await keys()).inflight).toEqual(["f!pump!g!0000000000000006"]);
    await run(async (_log, engine) => {
      const got: OutgoingDelivery[] = [];
      const m = await engine.join(settings("pump", "g"), { send: (ds) => got.push(...ds) });
      await eventually(() => got.length === 1);
      expect([got[0]!.event.sequence, got[0]!.attempt]).toEqual([6, 1]);
      m.ack([got[0]!.deliveryId]);
      await eventually(() => engine.status()[0]?.ackedThrough === 6);
    });
    expect(await keys()).toEqual({ pump: 0, inflight: [], mark: true });
  });

  it("leaves no LevelDB batch open when events are delivered and acked one at a time", async () => {
    const { log, engine } = await setup(() => Date.now());
    // Track the real database's batches (only tracked): a batch left neither written nor
    // closed stays held by the database, with its native memory, until the log closes.
    const db = (log as unknown as { db: { batch(): { write(...a: unknown[]): Promise<void>; close(): Promise<void> } } }).db;
    const open = new Set<object>();
    let opened = 0;
    const batch = db.batch.bind(db);
    db.batch = () => {
      const b = batch();
      opened++;
      open.add(b);
      const write = b.write.bind(b);
      const close = b.close.bind(b);
      b.write = (...a: unknown[]) => (open.delete(b), write(...a));
      b.close = () => (open.delete(b), close());
      return b;
    };
    const got: OutgoingDelivery[] = [];
    const m = await engine.join(settings("lone", "g"), { send: (ds) => got.push(...ds) });
    for (let i = 1; i <= 50; i++) {
      await log.append([event("lone", String(i))]);
      await eventually(() => got.length === i);
      m.ack([got[i - 1]!.deliveryId]);
      await eventually(() => engine.status()[0]?.ackedThrough === i);
    }
    expect(opened).toBeGreaterThanOrEqual(100); // each event's append, attempt and ack
    expect(open.size).toBe(0); // a pump with nothing to send left one open per ack
  });

  /** Counts the log's LevelDB writes from now on; `fail` makes the next one fail. */
  function watchWrites(log: EventLog): { writes: number; fail: boolean } {
    const db = (log as unknown as { db: { batch(): { write(...a: unknown[]): Promise<void>; close(): Promise<void> } } }).db;
    const watch = { writes: 0, fail: false };
    const batch = db.batch.bind(db);
    db.batch = () => {
      const b = batch();
      const write = b.write.bind(b);
      b.write = async (...a: unknown[]) => {
        watch.writes++;
        if (!watch.fail) return write(...a);
        watch.fail = false;
        await b.close();
        throw new Error("disk full (test)");
      };
      return b;
    };
    return watch;
  }

  it("sends a first attempt under the group's attempt mark without a write of its own: one write on its way, its append", async () => {
    const { log, engine } = await setup(Date.now);
    const got: OutgoingDelivery[] = [];
    const m = await engine.join(settings("claim", "g"), { send: (ds) => got.push(...ds) });
    // The join raised the mark ahead of the group's credits, in the background.
    await eventually(async () => (await log.db.get("t!claim!g")) !== undefined);
    const watch = watchWrites(log);
    await log.append([event("claim", "1")]);
    await eventually(() => got.length === 1);
    expect(watch.writes).toBe(1);
    expect([got[0]!.event.sequence, got[0]!.attempt]).toEqual([1, 1]);

    // The second event of a key waits for the first, and goes when it is acked, without a write either.
    const keyed = (id: string) => ({ ...event("claim", id), key: "k" });
    await log.append([keyed("2"), keyed("3")]);
    await eventually(() => got.length === 2);
    expect(watch.writes).toBe(2);
    m.ack([got[1]!.deliveryId]);
    await eventually(() => got.length === 3);
    expect(got.map((d) => d.event.sequence)).toEqual([1, 2, 3]);
    expect(watch.writes).toBe(3); // the ack
  });

  it("counts no attempt for an event whose append failed, once its sequence is taken again", async () => {
    const dir = await tempDir();
    cleanup.push(() => rm(dir, { recursive: true, force: true }));
    const run = runIn(dir);
    await run(async (log, engine) => {
      const first = await engine.join(settings("fail", "g"), { send: () => {} });
      watchWrites(log).fail = true;
      await expect(log.append([event("fail", "1")])).rejects.toThrow("disk full");
      first.leave(true);
      // Sequence 1 again, for another event, appended while the group has no member.
      expect(await log.append([event("fail", "2")])).toEqual([{ sequence: 1, duplicate: false }]);
      const got: OutgoingDelivery[] = [];
      await engine.join(settings("fail", "g"), { send: (ds) => got.push(...ds) });
      await eventually(() => got.length === 1);
      expect([got[0]!.event.sequence, got[0]!.attempt]).toEqual([1, 1]);
    });
    // Its first attempt was counted when it went, so it comes back as attempt 2.
    await run(async (_log, engine) => {
      const got: OutgoingDelivery[] = [];
      await engine.join(settings("fail", "g"), { send: (ds) => got.push(...ds) });
      await eventually(() => got.length === 1);
      expect([got[0]!.event.sequence, got[0]!.attempt]).toEqual([1, 2]);
    });
  });

  it("runs a delivery's deadline from when it leaves: an attempt still being stored never expires unsent", async () => {
    let now = 1_000_000;
    const { log, engine } = await setup(() => now);
    const got: OutgoingDelivery[] = [];
    await engine.join({ ...settings("slow", "g"), ackDeadlineMs: 1000, maxAttempts: 3 }, { send: (ds) => got.push(...ds) });
    await log.append([event("slow", "1")]);
    await eventually(() => got.length === 1);
    // From here the log's group-state writes wait (a full disk holds them so).
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const writeState = log.writeState.bind(log);
    log.writeState = (ops) => gate.then(() => writeState(ops));
    now += 2000; // attempt 1 passes its deadline: attempt 2 is made, its write waits
    await eventually(() => engine.status()[0]?.inflight === 1 && got.length === 1);
    await new Promise((r) => setTimeout(r, 200)); // the engine ticks meanwhile (every 50 ms)
    now += 10_000; // long past attempt 2's deadline had it started before it left
    await new Promise((r) => setTimeout(r, 300));
    release();
    await eventually(() => got.length >= 2);
    await new Promise((r) => setTimeout(r, 300));
    // Attempt 2 left once, with a deadline from then; nothing expired unsent or was dead-lettered.
    expect(got.map((d) => d.attempt)).toEqual([1, 2]);
    expect(got[1]!.deadline).toBe(now + 1000);
    expect(log.head("slow.dlq.g").last).toBe(0);
  });

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

  it("does not deliver events that retention removed while they waited for credits", async () => {
    let now = 1_000_000;
    const { log, engine } = await setup(() => now);
    const got: OutgoingDelivery[] = [];
    await engine.join({ ...settings("trim", "g"), maxInFlight: 1 }, { send: (ds) => got.push(...ds) });
    await log.append([event("trim", "1"), event("trim", "2"), event("trim", "3")]);
    await eventually(() => got.length === 1);
    now += 20_000;
    await log.sweep();
    await log.append([event("trim", "4")]);
    await eventually(() => got.length === 2);
    expect(got.map((d) => d.event.sequence)).toEqual([1, 4]);
    expect(engine.status()[0]).toMatchObject({ ackedThrough: 3, expiredUnacked: 3 });
  });

  it("moves a stored cursor that retention passed while the engine was stopped", async () => {
    let now = 1_000_000;
    const dir = await tempDir();
    cleanup.push(() => rm(dir, { recursive: true, force: true }));
    const options = { now: () => now, retention: { maxAgeMs: 10_000, maxBytes: 1e9 } };
    let log = await EventLog.open(dir, options);
    let engine = new DeliveryEngine(log, { now: () => now });
    await engine.start();
    (await engine.join(settings("stuck", "g"), { send: () => {} })).leave();
    await log.append([event("stuck", "1"), event("stuck", "2")]);
    engine.stop(); // the group does not hear about the sweep below
    now += 20_000;
    await log.sweep();
    await log.close();

    log = await EventLog.open(dir, options);
    engine = new DeliveryEngine(log, { now: () => now });
    await engine.start();
    cleanup.push(() => log.close(), () => engine.stop());
    const got: OutgoingDelivery[] = [];
    const m = await engine.join(settings("stuck", "g"), { send: (ds) => got.push(...ds) });
    await log.append([event("stuck", "3")]);
    await eventually(() => got.length === 1);
    m.ack(got.map((d) => d.deliveryId));
    await eventually(() => engine.status()[0]!.ackedThrough === 3);
    expect(engine.status()[0]).toMatchObject({ expiredUnacked: 2, backlog: 0 });
  });

  it("reads ahead within its event and byte bounds, even behind one slow event", async () => {
    const { log, engine } = await setup(Date.now);
    const small = new DeliveryEngine(log, { maxPendingPerGroup: 100, maxPendingBytesPerGroup: 1_000_000 });
    await small.start();
    cleanup.push(() => small.stop());
    let pending: OutgoingDelivery[] = [];
    const m = await small.join({ ...settings("bound", "g"), maxInFlight: 50 }, { send: (ds) => pending.push(...ds) });
    for (let i = 0; i < 5; i++) await log.append(Array.from({ length: 200 }, (_, j) => event("bound", `${i}-${j}`)));
    let handled = 0;
    // Ack everything but sequence 1, until nothing more comes.
    for (;;) {
      await new Promise((r) => setTimeout(r, 100));
      if (pending.length === 0) break;
      const batch = pending.splice(0);
      m.ack(batch.filter((d) => d.event.sequence !== 1).map((d) => d.deliveryId));
      handled += batch.length;
    }
    // Sequences 1..100 at most: the window behind the stuck cursor, not all 1000.
    expect(handled).toBe(100);
    expect(engine.status()).toEqual([]);
  });

  it("restores attempts in flight when a new engine starts on the same log", async () => {
    const now = () => Date.now();
    const dir = await tempDir();
    cleanup.push(() => rm(dir, { recursive: true, force: true }));
    let log = await EventLog.open(dir, { now });
    let engine = new DeliveryEngine(log, { now });
    await engine.start();
    const got: OutgoingDelivery[] = [];
    await engine.join(settings("restore", "g"), { send: (ds) => got.push(...ds) });
    await log.append([event("restore", "a"), event("restore", "b")]);
    await eventually(() => got.length === 2);
    engine.stop();
    await log.close();

    log = await EventLog.open(dir, { now });
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
