import { rm } from "node:fs/promises";
import { afterEach, describe, expect, it } from "vitest";
import { type Delivery, type Subscription, type WeftClient, connect } from "../src/client/index.js";
import { type HandledDelivery, account, assertNoLoss, perKeyOrderViolations, printAccounting } from "./support/accounting.js";
import { eventually } from "./support/collect.js";
import { type LogContents, auditLogs, readLog, unfinished } from "./support/log-audit.js";
import { type SidecarProcess, freePorts, spawnSidecar } from "./support/process.js";
import { tempDir } from "./support/sidecar.js";
import { TcpProxy } from "./support/tcp-proxy.js";

/**
 * Faults in a mesh of real `weft sidecar` processes on loopback: a receiving sidecar killed
 * with SIGKILL and restarted, one killed for good, the only member of a group away longer
 * than the peer timeout, and a peer link cut and refused through a TCP proxy. Each run is
 * accounted Jepsen style (acked publishes against handled deliveries), and every sidecar's
 * log is audited for duplicates after the processes stop.
 */

const KEYS = 20;
const PEER_TIMEOUT = "2s";

/** One delivery as a subscriber saw it. */
interface Received {
  id: string;
  key: string;
  sequence: bigint;
  attempt: number;
  /** The handler acked it (false: held). */
  handled: boolean;
}

/** Reads a subscription in the background; `ack` decides per delivery whether to ack or hold it. */
class Consumer {
  readonly received: Received[] = [];
  readonly held: Delivery[] = [];
  readonly handled = new Set<string>();
  error: unknown;
  readonly done: Promise<void>;

  constructor(
    readonly sub: Subscription,
    readonly by: string,
    ack: (d: Delivery, c: Consumer) => boolean = () => true,
  ) {
    this.done = (async () => {
      try {
        for await (const d of sub) {
          const handled = ack(d, this);
          this.received.push({ id: d.event.id, key: d.event.key, sequence: d.sequence, attempt: d.attempt, handled });
          if (handled) {
            this.handled.add(d.event.id);
            d.ack();
          } else this.held.push(d);
        }
      } catch (e) {
        this.error = e;
      }
    })();
  }

  /** Handled deliveries, for the accounting. */
  deliveries(from = 0): HandledDelivery[] {
    return this.received.slice(from).filter((r) => r.handled).map((r) => ({ id: r.id, by: this.by }));
  }
}

/** Publishes numbered events ("<run>-<i>", key "k<i mod KEYS>" unless unkeyed) and keeps score. */
class Feed {
  readonly acked: string[] = [];
  readonly inDoubt: string[] = [];
  private next = 0;

  constructor(
    private readonly run: string,
    private readonly channel: string,
    private readonly keyed = true,
  ) {}

  /** Publishes `count` more events in batches, pausing between batches. */
  async publish(client: WeftClient, count: number, { batch = 100, pauseMs = 0 } = {}): Promise<void> {
    for (let sent = 0; sent < count; ) {
      const n = Math.min(batch, count - sent);
      sent += n;
      const events = Array.from({ length: n }, () => {
        const i = this.next++;
        return { channel: this.channel, id: `${this.run}-${i}`, data: { i }, ...(this.keyed ? { key: `k${i % KEYS}` } : {}) };
      });
      try {
        for (const p of await client.publishMany(events)) this.acked.push(p.id);
      } catch {
        this.inDoubt.push(...events.map((e) => e.id));
      }
      if (pauseMs > 0) await sleep(pauseMs);
    }
  }

  /** True when every acked event was handled by one of `consumers`. */
  allHandled(...consumers: Consumer[]): boolean {
    return this.acked.every((id) => consumers.some((c) => c.handled.has(id)));
  }
}

/**
 * Waits until `check` holds or `timeoutMs` passed (a safety net), without failing: the
 * accounting that follows says what is missing.
 */
async function waitFor(check: () => boolean, timeoutMs: number): Promise<void> {
  await eventually(check, timeoutMs).catch(() => {});
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

const node = (id: string, peerPort: number, ...extra: string[]): string[] => [
  "--node-id",
  id,
  "--peer-listen",
  `127.0.0.1:${peerPort}`,
  "--peer-timeout",
  PEER_TIMEOUT,
  ...extra,
];

/** `npm run soak` repeats every scenario (WEFT_SOAK_ROUNDS times); CI runs them once. */
const ROUNDS = Math.max(1, Number(process.env["WEFT_SOAK_ROUNDS"] ?? 1) || 1);

for (let round = 1; round <= ROUNDS; round++)
describe(ROUNDS > 1 ? `mesh faults (real processes), round ${round} of ${ROUNDS}` : "mesh faults (real processes)", () => {
  const cleanup: (() => Promise<void> | void)[] = [];
  afterEach(async () => {
    for (const c of cleanup.splice(0).reverse()) await c();
  });

  async function dataDir(): Promise<string> {
    const dir = await tempDir("weft-mesh-faults-");
    cleanup.push(() => rm(dir, { recursive: true, force: true }));
    return dir;
  }
  async function start(dir: string, port: number, flags: string[]): Promise<SidecarProcess> {
    const p = await spawnSidecar(dir, port, flags);
    cleanup.push(() => p.kill9());
    return p;
  }
  function client(address: string): WeftClient {
    const c = connect(address);
    cleanup.push(() => c.close());
    return c;
  }

  it("kill -9 of a receiving sidecar mid-stream, restarted on its data dir: nothing lost, no log duplicates, per-key order", async () => {
    const channel = "faults.kill";
    const [dirA, dirB] = await Promise.all([dataDir(), dataDir()]);
    const [portA, portB, peerA, peerB] = (await freePorts(4)) as [number, number, number, number];
    // The subscriber's reconnect backoff (up to 5 s) may bring it back after B's 2 s peer
    // timeout: B then withdraws the group meanwhile, and must still deliver what it holds.
    const flagsB = ["--node-id", "b", "--peer-listen", `127.0.0.1:${peerB}`, "--peer-timeout", "2s"];
    let b = await start(dirB, portB, flagsB);
    const a = await start(dirA, portA, node("a", peerA, "--peers", `127.0.0.1:${peerB}`));

    // B is killed from inside the handler, between handling the 400th delivery and acking it:
    // that one, at least, was handled and never acked at B, so it must come again.
    let killing: Promise<void> | undefined;
    let killedOn = "";
    const sub = client(b.address).subscribe({ channel, group: "g", from: "earliest", maxInFlight: 50 });
    const consumer = new Consumer(sub, "B", (d, self) => {
      if (!killing && self.handled.size >= 400) {
        killedOn = d.event.id;
        killing = b.kill9();
      }
      return true;
    });
    const pub = client(a.address);
    const feed = new Feed("kill", channel);

    // Warm-up: A knows B's interest once events published at A reach B's subscriber.
    await feed.publish(pub, 5);
    await eventually(() => feed.allHandled(consumer), 30_000, "warm-up events at B");

    // Publish in batches; B dies mid-stream; keep publishing while it is down and restarting.
    const phase1 = feed.publish(pub, 1200, { batch: 100, pauseMs: 10 });
    await eventually(() => killing !== undefined, 30_000, "400 handled at B before the kill");
    await killing;
    const phase2 = feed.publish(pub, 1000, { batch: 100, pauseMs: 10 });

    // What B held at the kill: relay copies stored and not done for the group.
    const pending = unfinished(await readLog(dirB), channel, "g").map((r) => r.id);
    const handledAtKill = consumer.handled.size;
    const beforeRestart = consumer.received.length;
    b = await start(dirB, portB, flagsB);
    const restarted = Date.now();
    await eventually(() => consumer.received.length > beforeRestart, 30_000, "a delivery from the restarted B");
    console.log(
      `kill -9 B: handled ${handledAtKill} before the kill; B held ${pending.length} relay copies not done; ` +
        `first delivery ${Date.now() - restarted} ms after the restart`,
    );
    await Promise.all([phase1, phase2]);
    await feed.publish(pub, 800, { batch: 100, pauseMs: 10 });
    await waitFor(() => feed.allHandled(consumer), 45_000);

    const result = printAccounting(account("kill -9 B", { acked: feed.acked, inDoubt: feed.inDoubt, deliveries: consumer.deliveries() }));
    // Stop, then audit every log, before judging: a failure still shows the whole picture.
    sub.close();
    pub.close();
    await Promise.all([a.terminate(), b.terminate()]);
    const duplicates = await auditLogs({ A: dirA, B: dirB });
    assertNoLoss(result);
    expect(result.unexpected).toEqual([]);
    const afterRestart = consumer.received.slice(beforeRestart).filter((r) => r.handled);
    const redelivered = new Set(afterRestart.map((r) => r.id));
    expect(pending.filter((id) => !redelivered.has(id))).toEqual([]); // what B held came after the restart
    expect(afterRestart.find((r) => r.id === killedOn)?.attempt).toBeGreaterThan(1); // handled, never acked: again
    expect(perKeyOrderViolations(consumer.received)).toEqual([]);
    expect(consumer.error).toBeUndefined();
    expect(duplicates).toEqual({ A: [], B: [] });
  }, 90_000);

  it("a receiving sidecar gone for good: after the peer timeout the group's other member gets its unacked share", async () => {
    const channel = "faults.gone";
    const [dirA, dirB, dirC] = await Promise.all([dataDir(), dataDir(), dataDir()]);
    const [portA, portB, portC, peerA, peerB, peerC] = (await freePorts(6)) as [number, number, number, number, number, number];
    const [b, c] = await Promise.all([start(dirB, portB, node("b", peerB)), start(dirC, portC, node("c", peerC))]);
    const a = await start(dirA, portA, node("a", peerA, "--peers", `127.0.0.1:${peerB},127.0.0.1:${peerC}`, "--peer-window", "100"));

    // B's subscriber handles its first 50 deliveries, then holds every later one unacked.
    const clientB = client(b.address);
    const subB = clientB.subscribe({ channel, group: "g", from: "earliest", maxInFlight: 20 });
    const onB = new Consumer(subB, "B", (_, self) => self.handled.size < 50);
    const subC = client(c.address).subscribe({ channel, group: "g", from: "earliest", maxInFlight: 50 });
    const onC = new Consumer(subC, "C");
    const pub = client(a.address);
    const feed = new Feed("gone", channel, false);

    // Warm-up until both members receive: A then knows the interest of B and of C.
    await eventually(
      async () => {
        await feed.publish(pub, 10);
        await sleep(100);
        return onB.received.length > 0 && onC.received.length > 0;
      },
      30_000,
      "warm-up events at B and at C",
    ).catch((e: Error) => {
      throw new Error(
        `${e.message}: B received ${onB.received.length}, C received ${onC.received.length} of ${feed.acked.length}\n` +
          `A: ${a.stderr()}\nB: ${b.stderr()}\nC: ${c.stderr()}`,
      );
    });

    const phase1 = feed.publish(pub, 1500, { batch: 100, pauseMs: 10 });
    await eventually(() => onB.held.length >= 20, 30_000, "B's subscriber holding a full window");
    await b.kill9();
    clientB.close();
    const phase2 = feed.publish(pub, 500, { batch: 100, pauseMs: 10 });

    const pending = unfinished(await readLog(dirB), channel, "g").map((r) => r.id);
    const held = onB.held.map((d) => d.event.id);
    console.log(`B gone: B handled ${onB.handled.size}, held ${held.length} unacked, had ${pending.length} relay copies not done`);

    await Promise.all([phase1, phase2]);
    await waitFor(() => feed.allHandled(onB, onC), 45_000);

    const result = printAccounting(
      account("B gone for good", { acked: feed.acked, inDoubt: feed.inDoubt, deliveries: [...onB.deliveries(), ...onC.deliveries()] }),
    );
    // Stop, then audit every log, before judging: a failure still shows the whole picture.
    subC.close();
    pub.close();
    await Promise.all([a.terminate(), c.terminate()]);
    const duplicates = await auditLogs({ A: dirA, B: dirB, C: dirC });
    assertNoLoss(result);
    expect(result.unexpected).toEqual([]);
    expect(held.filter((id) => !onC.handled.has(id))).toEqual([]); // B's unacked share went to C
    expect(pending.filter((id) => !onC.handled.has(id))).toEqual([]);
    expect(onC.error).toBeUndefined();
    expect(duplicates).toEqual({ A: [], B: [], C: [] });
  }, 90_000);

  it("the only member of a group away longer than the peer timeout, then back: nothing lost", async () => {
    const channel = "faults.away";
    const [dirA, dirB] = await Promise.all([dataDir(), dataDir()]);
    const [portA, portB, peerA, peerB] = (await freePorts(4)) as [number, number, number, number];
    const b = await start(dirB, portB, node("b", peerB));
    const a = await start(dirA, portA, node("a", peerA, "--peers", `127.0.0.1:${peerB}`));

    // The service behind B handles 100 deliveries, holds the next ones, and goes away (its
    // client closes) while B holds the rest of what A forwarded as relay copies.
    const first = client(b.address);
    const sub1 = first.subscribe({ channel, group: "g", from: "earliest", maxInFlight: 20 });
    const before = new Consumer(sub1, "B", (_, self) => self.handled.size < 100);
    const pub = client(a.address);
    const feed = new Feed("away", channel, false);
    await feed.publish(pub, 5);
    await eventually(() => feed.allHandled(before), 30_000, "warm-up events at B");
    await feed.publish(pub, 495);
    await eventually(() => before.held.length >= 20, 30_000, "the service holding a full window");
    first.close();
    // The group stays durable at A: events published while nobody listens are for it too.
    await feed.publish(pub, 500, { batch: 100, pauseMs: 10 });
    await sleep(3000); // longer than --peer-timeout 2s: the group's interest lapses meanwhile
    const lapsed = feed.acked.length;
    await feed.publish(pub, 200, { batch: 100, pauseMs: 10 });

    // The service comes back to the same group on the same sidecar.
    const sub2 = client(b.address).subscribe({ channel, group: "g", from: "earliest", maxInFlight: 50 });
    const after = new Consumer(sub2, "B");
    await waitFor(() => feed.allHandled(before, after), 15_000);

    const result = printAccounting(
      account("member away 3 s", { acked: feed.acked, inDoubt: feed.inDoubt, deliveries: [...before.deliveries(), ...after.deliveries()] }),
    );
    const lostAfterLapse = result.lost.filter((id) => feed.acked.indexOf(id) >= lapsed).length;
    console.log(
      `member away: the service handled ${before.handled.size} and held ${before.held.length} before leaving; ` +
        `lost ${result.lost.length - lostAfterLapse} published before the interest lapsed, ${lostAfterLapse} after`,
    );
    // Stop, then audit every log, before judging: a failure still shows the whole picture.
    sub2.close();
    pub.close();
    await Promise.all([a.terminate(), b.terminate()]);
    const duplicates = await auditLogs({ A: dirA, B: dirB });
    // Where the lost events went: A's cursor says done, B's cursor passed them.
    const [logA, logB] = await Promise.all([readLog(dirA), readLog(dirB)]);
    const cursor = (log: LogContents, ch: string): number | undefined =>
      log.groups.find((g) => g.record.channel === ch && g.record.group === "g")?.record.ackedThrough;
    console.log(
      `member away: A's cursor of ${channel}/g at ${cursor(logA, channel)} of ${logA.channels.get(channel)?.length ?? 0}; ` +
        `B's cursor of ${channel}/g at ${cursor(logB, channel)} of ${logB.channels.get(channel)?.length ?? 0} relay copies; ` +
        `channels at A: ${[...logA.channels.keys()].join(", ")}`,
    );
    assertNoLoss(result);
    expect(result.unexpected).toEqual([]);
    expect(duplicates).toEqual({ A: [], B: [] });
  }, 90_000);

  it("a peer link cut and refused several times: nothing lost, no log duplicates, per-key order", async () => {
    const channel = "faults.link";
    const [dirA, dirB] = await Promise.all([dataDir(), dataDir()]);
    const [portA, portB, peerA, peerB] = (await freePorts(4)) as [number, number, number, number];
    // Only A dials, through the proxy: the proxy carries the only link between A and B.
    const b = await start(dirB, portB, node("b", peerB));
    const proxy = await TcpProxy.start(`127.0.0.1:${peerB}`);
    cleanup.push(() => proxy.close());
    const a = await start(dirA, portA, node("a", peerA, "--peers", proxy.address));

    const sub = client(b.address).subscribe({ channel, group: "g", from: "earliest", maxInFlight: 50 });
    const consumer = new Consumer(sub, "B");
    const pub = client(a.address);
    const feed = new Feed("link", channel);
    await feed.publish(pub, 5);
    await eventually(() => feed.allHandled(consumer), 30_000, "warm-up events at B");

    // Publish continuously while the link is cut five times and refused once (shorter than the peer timeout).
    const publishing = feed.publish(pub, 3000, { batch: 100, pauseMs: 60 });
    let cuts = 0;
    for (let i = 0; i < 6; i++) {
      await sleep(350);
      if (i === 3) {
        proxy.pause();
        cuts += proxy.cut() > 0 ? 1 : 0;
        await sleep(600);
        proxy.resume();
      } else cuts += proxy.cut() > 0 ? 1 : 0;
    }
    await publishing;
    await waitFor(() => feed.allHandled(consumer), 45_000);
    console.log(`link faults: ${cuts} cuts of a live link, ${proxy.accepted} connections, ${proxy.refused} refused while paused`);

    const result = printAccounting(account("link cut", { acked: feed.acked, inDoubt: feed.inDoubt, deliveries: consumer.deliveries() }));
    // Stop, then audit every log, before judging: a failure still shows the whole picture.
    sub.close();
    pub.close();
    await Promise.all([a.terminate(), b.terminate()]);
    const duplicates = await auditLogs({ A: dirA, B: dirB });
    assertNoLoss(result);
    expect(result.unexpected).toEqual([]);
    expect(perKeyOrderViolations(consumer.received)).toEqual([]);
    expect(consumer.error).toBeUndefined();
    expect(cuts).toBeGreaterThan(0);
    expect(duplicates).toEqual({ A: [], B: [] });
  }, 90_000);
});
