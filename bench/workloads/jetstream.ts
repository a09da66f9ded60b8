/**
 * Row J: NATS JetStream on loopback, the alternative a user would pick.
 *
 * Starts Debian's `nats-server -js` as a child process (free loopback port, store dir in
 * options.scratch, file storage), then with the nats.js client (`nats` 2.x, two connections:
 * publisher and consumer, in this process like Weft's W1 bench):
 *
 * - a stream on one subject, file storage, limits retention;
 * - a durable pull consumer with explicit acks, read with `consume()` in batches, each
 *   message acked on its own;
 * - async JetStream publish (each publish waits for its PubAck = stored) with at most
 *   WINDOW publish acks outstanding; 256 B payloads whose first 8 bytes carry the publish
 *   time (performance.now(), same process), so the consumer measures publish-to-delivery.
 *   The publisher yields to the event loop every WINDOW publishes so that the consumer,
 *   sharing this process, keeps up instead of draining everything after the last publish.
 *
 * events/s is end to end: from the first publish until every event was delivered and its ack
 * reached the server (consumer info shows nothing pending). rssMiB is the nats-server
 * process's peak RSS (VmHWM from /proc). Skips, saying why, where nats-server is missing.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { access, mkdir, readFile } from "node:fs/promises";
import { constants } from "node:fs";
import { delimiter, join } from "node:path";
import { AckPolicy, DeliverPolicy, RetentionPolicy, StorageType, connect, type NatsConnection } from "nats";
import { freePort } from "./child-process.js";
import type { BenchRow, Workload } from "./types.js";

const ID = "J";
const TITLE = "NATS JetStream, loopback, file storage, async publish (window 1000), durable pull consumer, ack each, 256 B";
const PAYLOAD_BYTES = 256;
const WINDOW = 1000;
const STREAM = "WEFTBENCH";
const SUBJECT = "weftbench.j";
const DURABLE = "bench";

export const workload: Workload = async (options) => {
  const binary = await findNatsServer();
  if (!binary) return [{ id: ID, title: TITLE, skipped: "nats-server is not installed (apt-get install nats-server)" }];

  const total = options.quick ? 5_000 : 200_000;
  const storeDir = join(options.scratch, "jetstream");
  await mkdir(storeDir, { recursive: true });
  const server = await startServer(binary, storeDir);
  let pub: NatsConnection | undefined;
  let subConn: NatsConnection | undefined;
  let sampler: NodeJS.Timeout | undefined;
  let stopConsuming: (() => void) | undefined;
  try {
    const servers = `127.0.0.1:${server.port}`;
    pub = await connect({ servers, name: "weft-bench-pub" });
    subConn = await connect({ servers, name: "weft-bench-sub" });
    const jsm = await pub.jetstreamManager();
    await jsm.streams.add({ name: STREAM, subjects: [SUBJECT], storage: StorageType.File, retention: RetentionPolicy.Limits });
    await jsm.consumers.add(STREAM, {
      durable_name: DURABLE,
      ack_policy: AckPolicy.Explicit,
      deliver_policy: DeliverPolicy.All,
      max_ack_pending: 20_000,
    });

    const latencies = new Float64Array(total);
    let received = 0;
    let consumed!: () => void;
    const allConsumed = new Promise<void>((r) => (consumed = r));
    const consumer = await subConn.jetstream().consumers.get(STREAM, DURABLE);
    const messages = await consumer.consume({ max_messages: 1000 });
    stopConsuming = () => messages.stop();
    const consumeLoop = (async () => {
      for await (const m of messages) {
        const now = performance.now();
        if (received < total) latencies[received] = now - Buffer.from(m.data.buffer, m.data.byteOffset, 8).readDoubleLE(0);
        m.ack();
        if (++received === total) consumed();
      }
    })();

    const rssSamples: number[] = [];
    sampler = setInterval(() => void readRss(server.pid).then((r) => r && rssSamples.push(r.rss)), 200);

    const js = pub.jetstream();
    const template = Buffer.alloc(PAYLOAD_BYTES, 120);
    let outstanding = 0;
    let wake: (() => void) | undefined;
    let failure: unknown;
    const start = performance.now();
    for (let i = 0; i < total; i++) {
      while (outstanding >= WINDOW) await new Promise<void>((r) => (wake = r));
      // Publisher and consumer share this event loop: without a turn of it now and then,
      // the publish loop (resumed by each PubAck's promise) starves the consumer's socket,
      // nearly every event waits until publishing ends, and p50/p99 measure that backlog.
      if (i % WINDOW === 0) await new Promise((r) => setImmediate(r));
      if (failure) throw failure;
      const data = Buffer.from(template);
      data.writeDoubleLE(performance.now(), 0);
      outstanding++;
      js.publish(SUBJECT, data).then(
        () => {
          outstanding--;
          wake?.();
          wake = undefined;
        },
        (e: unknown) => {
          failure ??= e;
          outstanding--;
          wake?.();
          wake = undefined;
        },
      );
    }
    while (outstanding > 0) await new Promise<void>((r) => (wake = r));
    if (failure) throw failure;
    const published = performance.now();
    const receivedAtPublishEnd = received;
    await withTimeout(allConsumed, 120_000, "the consumer did not receive every event");
    // Acks are fire and forget: end when the server has them all.
    await subConn.flush();
    for (const deadline = Date.now() + 30_000; ; ) {
      const info = await jsm.consumers.info(STREAM, DURABLE);
      if (info.num_ack_pending === 0 && info.num_pending === 0) break;
      if (Date.now() > deadline) throw new Error(`acks still pending after 30 s: ${info.num_ack_pending}`);
      await new Promise((r) => setTimeout(r, 5));
    }
    const done = performance.now();
    clearInterval(sampler);
    const rss = await readRss(server.pid);
    messages.stop();
    await consumeLoop.catch(() => undefined);

    const seconds = (done - start) / 1000;
    const eventsPerSecond = total / seconds;
    latencies.sort();
    return [
      {
        id: ID,
        title: TITLE,
        eventsPerSecond: Math.round(eventsPerSecond),
        megabytesPerSecond: round((eventsPerSecond * PAYLOAD_BYTES) / 1e6, 2),
        p50Ms: round(percentile(latencies, 0.5), 2),
        p99Ms: round(percentile(latencies, 0.99), 2),
        p999Ms: round(percentile(latencies, 0.999), 2),
        rssMiB: rss ? round(rss.hwm, 1) : undefined,
        extra: {
          events: total,
          publishAckedPerSecond: Math.round(total / ((published - start) / 1000)),
          publishWindow: WINDOW,
          // The backlog the consumer had when the last publish was acked (about a window when
          // it keeps up), and how fast it drained it.
          backlogAtPublishEnd: total - receivedAtPublishEnd,
          drainPerSecond: Math.round((total - receivedAtPublishEnd) / ((done - published) / 1000)),
          serverRssEndMiB: rss ? round(rss.rss, 1) : "n/a",
          serverRssMaxSampledMiB: rssSamples.length ? round(Math.max(...rssSamples), 1) : "n/a",
          natsServer: server.version,
        },
      },
    ];
  } finally {
    clearInterval(sampler);
    stopConsuming?.();
    await subConn?.close().catch(() => undefined);
    await pub?.close().catch(() => undefined);
    await stopServer(server.child);
  }
};

async function findNatsServer(): Promise<string | undefined> {
  // Debian installs it in /usr/sbin, which a non-root PATH may lack.
  const dirs = [...(process.env.PATH ?? "").split(delimiter), "/usr/sbin", "/usr/local/sbin", "/usr/local/bin", "/usr/bin"];
  for (const dir of dirs) {
    if (!dir) continue;
    const candidate = join(dir, "nats-server");
    try {
      await access(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  return undefined;
}

interface Server {
  child: ChildProcess;
  pid: number;
  port: number;
  version: string;
}

async function startServer(binary: string, storeDir: string): Promise<Server> {
  const port = await freePort();
  const child = spawn(binary, ["-js", "-a", "127.0.0.1", "-p", String(port), "-sd", storeDir], { stdio: ["ignore", "ignore", "pipe"] });
  let log = "";
  const ready = new Promise<string>((resolve, reject) => {
    child.stderr!.setEncoding("utf8");
    child.stderr!.on("data", (chunk: string) => {
      if (log.length < 64_000) log += chunk;
      if (/Server is ready/.test(log)) resolve(/Version:\s+(\S+)/.exec(log)?.[1] ?? "?");
    });
    child.once("error", reject);
    child.once("exit", (code, signal) => reject(new Error(`nats-server exited (${code ?? signal}) before it was ready:\n${log.slice(-2000)}`)));
  });
  try {
    const version = await withTimeout(ready, 15_000, "nats-server was not ready within 15 s");
    child.stderr!.removeAllListeners("data");
    child.stderr!.resume();
    return { child, pid: child.pid!, port, version };
  } catch (e) {
    await stopServer(child);
    throw e;
  }
}

async function stopServer(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((r) => child.once("exit", () => r()));
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), 5_000);
  await exited;
  clearTimeout(timer);
}

/** RSS and peak RSS (VmHWM) of a process, MiB. */
async function readRss(pid: number): Promise<{ rss: number; hwm: number } | undefined> {
  try {
    const status = await readFile(`/proc/${pid}/status`, "utf8");
    const kib = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, "m").exec(status)?.[1] ?? NaN);
    return { rss: kib("VmRSS") / 1024, hwm: kib("VmHWM") / 1024 };
  } catch {
    return undefined;
  }
}

function withTimeout<T>(p: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([p, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(message)), ms)))]).finally(() =>
    clearTimeout(timer),
  );
}

function percentile(sorted: Float64Array, q: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)]!;
}

function round(x: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}
