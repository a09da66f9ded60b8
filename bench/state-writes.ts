/**
 * Counts the LevelDB writes an event costs on its way through one sidecar's log and
 * delivery engine (no gRPC): a count, not a timing, so it is the same on any machine and
 * under any load. Writes are counted per database: `main` (heads, dedup entries, group
 * state) and `events` (the events themselves).
 *
 * - low rate: one event appended, delivered, acked, and its ack stored, then the next;
 *   also counts the deliveries that waited on a write of the main database after their
 *   append was stored (a delivery that leaves with its append waits on none).
 * - burst: every event appended at once (in appends of 100), delivered within the member's
 *   credits and acked as the deliveries arrive: each batch of deliveries in one ack, or
 *   each delivery in an ack of its own (a handler that acks as it goes).
 *
 *   npx tsx bench/state-writes.ts [events=1000] [credits=100]
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DeliveryEngine } from "../src/delivery/delivery-engine.js";
import type { Membership, OutgoingDelivery } from "../src/delivery/types.js";
import { type AppendEntry, EventLog } from "../src/log/event-log.js";

const events = Number(process.argv[2] ?? 1000);
const credits = Number(process.argv[3] ?? 100);

interface Counted {
  main: number;
  events: number;
}

type Batchable = { batch(): { write(...a: unknown[]): Promise<void> }; put(...a: unknown[]): Promise<void>; del(...a: unknown[]): Promise<void> };

/** Counts every write made on `db` from now on (batches, puts and deletes) into `count[name]`. */
function countWrites(db: Batchable, count: Counted, name: keyof Counted): void {
  const batch = db.batch.bind(db);
  db.batch = () => {
    const b = batch();
    const write = b.write.bind(b);
    b.write = (...a: unknown[]) => (count[name]++, write(...a));
    return b;
  };
  for (const op of ["put", "del"] as const) {
    const f = db[op].bind(db);
    db[op] = (...a: unknown[]) => (count[name]++, f(...a));
  }
}

const entry = (i: number): AppendEntry => ({ channel: "writes", source: "//bench", id: String(i), key: "", bytes: Buffer.from(`event ${i}`) });

async function withEngine(run: (log: EventLog, engine: DeliveryEngine, count: Counted) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), "weft-writes-"));
  const log = await EventLog.open(dir);
  const engine = new DeliveryEngine(log);
  await engine.start();
  try {
    const count = { main: 0, events: 0 };
    const internal = log as unknown as { db: Batchable; events: Batchable };
    countWrites(internal.db, count, "main");
    countWrites(internal.events, count, "events");
    await run(log, engine, count);
  } finally {
    engine.stop();
    await log.close();
    await rm(dir, { recursive: true, force: true });
  }
}

const settings = { channel: "writes", group: "g", start: { kind: "latest" as const }, maxInFlight: credits, ackDeadlineMs: 60_000, maxAttempts: 5, deadLetterChannel: "writes.dlq.g" };

async function until(done: () => boolean): Promise<void> {
  while (!done()) await new Promise((r) => setImmediate(r));
}

async function lowRate(): Promise<string> {
  let line = "";
  await withEngine(async (log, engine, count) => {
    let got: OutgoingDelivery | undefined;
    let writesAtDelivery = 0;
    const m: Membership = await engine.join(settings, {
      send: (ds) => {
        got = ds[0];
        writesAtDelivery = count.main;
      },
    });
    const before = { ...count };
    let waited = 0;
    for (let i = 1; i <= events; i++) {
      got = undefined;
      await log.append([entry(i)]);
      const stored = count.main;
      await until(() => got !== undefined);
      if (writesAtDelivery > stored) waited++;
      m.ack([got!.deliveryId]);
      await until(() => engine.status()[0]!.ackedThrough === i);
    }
    const main = (count.main - before.main) / events;
    const ev = (count.events - before.events) / events;
    line = `low rate: ${events} events, credits ${credits}: main ${main.toFixed(3)} writes/event, events ${ev.toFixed(3)}; deliveries that waited on a main write after their append: ${waited}`;
  });
  return line;
}

async function burst(oneByOne: boolean): Promise<string> {
  let line = "";
  await withEngine(async (log, engine, count) => {
    let delivered = 0;
    let m: Membership | undefined;
    m = await engine.join(settings, {
      send: (ds) => {
        delivered += ds.length;
        const ids = ds.map((d) => d.deliveryId);
        if (oneByOne) for (const id of ids) setImmediate(() => m!.ack([id]));
        else setImmediate(() => m!.ack(ids));
      },
    });
    const before = { ...count };
    const appends: Promise<unknown>[] = [];
    for (let i = 0; i < events; i += 100) appends.push(log.append(Array.from({ length: Math.min(100, events - i) }, (_, j) => entry(i + j + 1))));
    await Promise.all(appends);
    await until(() => engine.status()[0]!.ackedThrough === events);
    const main = (count.main - before.main) / events;
    const ev = (count.events - before.events) / events;
    line = `burst, ${oneByOne ? "each delivery acked alone" : "each batch in one ack"}: ${events} events in appends of 100, credits ${credits}: main ${main.toFixed(3)} writes/event, events ${ev.toFixed(3)}; delivered ${delivered}`;
  });
  return line;
}

console.log(await lowRate());
for (const oneByOne of [false, true]) for (let i = 0; i < 3; i++) console.log(await burst(oneByOne));
