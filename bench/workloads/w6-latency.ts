/**
 * W6: latency at a fixed load, open loop, without coordinated omission. Events are sent on
 * a schedule (event i is due at t0 + i/rate); each carries its intended send time, and its
 * latency is delivery time − intended time, so a stall of the sender, the sidecar or the
 * subscriber counts for every event it delays. At 1k and 10k events/s, 256 B:
 *
 * - raw: a grpc-js bidi stream to an echo server in a child process (the ceiling);
 * - 1hop: publish and subscribe on one `weft sidecar` process (durable, ack each);
 * - 2hop: publish on sidecar A, subscribe on sidecar B (two processes, linked);
 * - raw-2hop (1k only): the path of two hops without Weft: a grpc-js stream to a relay
 *   process, which writes each message to a stream to a sink process, which writes it to the
 *   subscriber's stream (support/w6-hop-server.ts); not a ceiling of any target, it shows
 *   what a third process and a second hop cost on this machine;
 * - 2hop-aged (1k only): 2hop on sidecars with a 5 s dedup window, so their sweeps forget
 *   dedup entries while it is measured (each sweep, every 10 s, clears the dedup table past
 *   the window), as every sidecar older than its window (10 min by default) does; the other
 *   rows measure sidecars younger than that.
 *
 * The sender's timer lateness (setTimeout granularity, ~1 ms) is in every row alike, the
 * raw one included; `extra.addedP99Ms` is a row's p99 minus raw's at the same rate. Raw at
 * 1k runs twice, before the sidecars and after them, and the lower p99 is the ceiling
 * (`extra.rawP99RunsMs` has both).
 *
 * The 1k rows are measured after 10 s at the rate: a fresh sidecar's first seconds at 1k/s
 * have a p99 several times its later one (V8 still compiling and sizing its heap), and a
 * sidecar runs for days. What that start costs is not hidden: `extra.warmupP99Ms` is the p99
 * of the warm-up's events. The 10k rows run on the same processes after the 1k rows.
 */
import { spawn } from "node:child_process";
import { once } from "node:events";
import { fileURLToPath } from "node:url";
import { type ClientDuplexStream, Metadata, credentials } from "@grpc/grpc-js";
import { connect } from "../../src/client/index.js";
import { startScript } from "./child-process.js";
import { Histogram, type WeftProcess, cpuTicks, stealPercent, procMemory, round3, sleep, stampOf, stamped, startOne, startPair, warmUp } from "./support/hop-procs.js";
import { EchoClient } from "./support/w6-echo.js";
import type { BenchRow, Workload } from "./types.js";

const PAYLOAD = 256;
const ECHO_SERVER = fileURLToPath(new URL("./support/w6-echo-server.ts", import.meta.url));
const HOP_SERVER = fileURLToPath(new URL("./support/w6-hop-server.ts", import.meta.url));
const NO_LOG_SERVER = fileURLToPath(new URL("./raw-grpc-server.ts", import.meta.url));

interface Plan {
  rate: number;
  warmupSeconds: number;
  seconds: number;
}

interface RunResult {
  latency: Histogram;
  /** The events of the warm-up, which are not in `latency`. */
  warmup: Histogram;
  expected: number;
  delivered: number;
  /** How late the sender itself got behind its schedule, worst case, ms. */
  maxSendLagMs: number;
  /** The share of the machine's CPU time its host took while the measured events were sent, %. */
  stealPct: number | undefined;
}

/**
 * Drives one open-loop run: `send(stampMs)` must not block; `onDelivery` is handed to the
 * caller's receiving side, which calls it with each event's stamp on arrival.
 */
async function openLoop(plan: Plan, start: (onDelivery: (stamp: number) => void) => (stamp: number) => void): Promise<RunResult> {
  const latency = new Histogram();
  const warmup = new Histogram();
  const totalEvents = Math.round(plan.rate * (plan.warmupSeconds + plan.seconds));
  const warmEvents = Math.round(plan.rate * plan.warmupSeconds);
  const interval = 1000 / plan.rate;
  let measureFrom = Infinity;
  let delivered = 0;
  let allIn!: () => void;
  const done = new Promise<void>((r) => (allIn = r));
  const expected = totalEvents - warmEvents;
  const send = start((stamp) => {
    const ms = performance.now() - stamp;
    if (stamp < measureFrom) {
      warmup.record(ms);
      return;
    }
    latency.record(ms);
    if (++delivered === expected) allIn();
  });
  const t0 = performance.now() + 5;
  measureFrom = t0 + warmEvents * interval - interval / 2;
  let sent = 0;
  let maxSendLagMs = 0;
  let ticksFrom: ReturnType<typeof cpuTicks>;
  let measuring = false;
  while (sent < totalEvents) {
    if (sent >= warmEvents && !measuring) {
      measuring = true;
      ticksFrom = cpuTicks();
    }
    const now = performance.now();
    const due = Math.min(totalEvents, Math.floor((now - t0) / interval) + 1);
    if (due > sent) maxSendLagMs = Math.max(maxSendLagMs, now - (t0 + sent * interval));
    while (sent < due) {
      send(t0 + sent * interval);
      sent++;
    }
    await sleep(Math.max(0, Math.min(1, t0 + sent * interval - performance.now())));
  }
  const stealPct = stealPercent(ticksFrom, cpuTicks());
  // Wait for the stragglers; whatever is not in after 30 s counts as 30 s late (a lower bound).
  const deadline = performance.now() + 30_000;
  await Promise.race([done, sleep(30_000)]);
  for (let i = delivered; i < expected; i++) latency.record(deadline - (t0 + (totalEvents - 1) * interval));
  return { latency, warmup, expected, delivered, maxSendLagMs, stealPct };
}

/** Starts a raw server script (the echo, or a hop server) in a child process; `stop` kills it. */
async function startRawServer(script = ECHO_SERVER, args: string[] = []): Promise<{ address: string; stop: () => Promise<void> }> {
  const child = spawn(process.execPath, ["--import", "tsx", script, ...args], { stdio: ["ignore", "pipe", "inherit"] });
  let out = "";
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${script} did not start: ${out}`)), 30_000);
    child.stdout!.on("data", (b: Buffer) => {
      out += b.toString();
      const m = /listening (\d+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve(Number(m[1]));
      }
    });
    child.once("exit", (code) => reject(new Error(`${script} exited with ${code}: ${out}`)));
  });
  const stop = async (): Promise<void> => {
    child.kill("SIGKILL");
    await once(child, "exit").catch(() => {});
  };
  return { address: `127.0.0.1:${port}`, stop };
}

const RAW_OPTIONS = { "grpc-node.flow_control_window": 16 * 1024 * 1024 };

/** A stream of the raw echo service at `address`; `close` ends it and its client. */
function echoStream(address: string, metadata = new Metadata()): { call: ClientDuplexStream<Buffer, Buffer>; close: () => void } {
  const client = new EchoClient(address, credentials.createInsecure(), RAW_OPTIONS);
  const call = (client as unknown as { Echo(m: Metadata): ClientDuplexStream<Buffer, Buffer> }).Echo(metadata);
  call.on("error", () => {});
  return { call, close: () => (call.end(), client.close()) };
}

/** One open-loop run that writes each event on `out` and hears it back on `back`. */
async function runRawPath(out: ClientDuplexStream<Buffer, Buffer>, back: ClientDuplexStream<Buffer, Buffer>, plan: Plan): Promise<RunResult> {
  // Warm the path first: it is open once one event came back.
  await new Promise<void>((resolve) => {
    back.once("data", () => resolve());
    out.write(stamped(PAYLOAD, -1));
  });
  return openLoop(plan, (onDelivery) => {
    back.on("data", (b: Buffer) => onDelivery(stampOf(b)));
    return (stamp) => out.write(stamped(PAYLOAD, stamp));
  });
}

async function runRaw(address: string, plan: Plan): Promise<RunResult> {
  const echo = echoStream(address);
  try {
    return await runRawPath(echo.call, echo.call, plan);
  } finally {
    echo.close();
  }
}

/** Raw two hops: sent to the relay at `relayAddress`, received from the sink at `sinkAddress`. */
async function runRawTwo(relayAddress: string, sinkAddress: string, plan: Plan): Promise<RunResult> {
  const role = new Metadata();
  role.set("role", "sub");
  const sub = echoStream(sinkAddress, role);
  const pub = echoStream(relayAddress);
  try {
    await once(sub.call, "data"); // the sink answers the subscription with an empty message
    return await runRawPath(pub.call, sub.call, plan);
  } finally {
    pub.close();
    sub.close();
  }
}

async function runWeft(pubAddress: string, subAddress: string, plan: Plan, tag: string): Promise<RunResult> {
  const pub = connect(pubAddress, { maxOutstanding: 50_000 });
  const subClient = connect(subAddress);
  const channel = `bench.w6.${tag}.r${Date.now()}`;
  const sub = subClient.subscribe({ channel, group: "w6", from: "latest", maxInFlight: 5000 });
  try {
    await sub.subscribed();
    let warm = false;
    let onDelivery: (stamp: number) => void = () => {};
    const reader = (async () => {
      for await (const d of sub) {
        const stamp = stampOf(d.data);
        if (stamp < 0) warm = true;
        else onDelivery(stamp); // the delivery time is taken first thing in onDelivery
        d.ack();
      }
    })().catch(() => {});
    await warmUp(pub, channel, () => warm);
    const result = await openLoop(plan, (cb) => {
      onDelivery = cb;
      return (stamp) => void pub.publish({ channel, data: stamped(PAYLOAD, stamp) }).catch(() => {});
    });
    sub.close();
    await reader;
    return result;
  } finally {
    sub.close();
    pub.close();
    subClient.close();
  }
}

function row(id: string, title: string, r: RunResult, rate: number, extra: Record<string, number | string> = {}): BenchRow {
  return {
    id,
    title,
    eventsPerSecond: rate,
    megabytesPerSecond: Math.round(((rate * PAYLOAD) / 1e6) * 100) / 100,
    p50Ms: round3(r.latency.quantile(0.5)),
    p99Ms: round3(r.latency.quantile(0.99)),
    p999Ms: round3(r.latency.quantile(0.999)),
    extra: {
      samples: r.latency.count,
      maxMs: round3(r.latency.max()),
      maxSendLagMs: round3(r.maxSendLagMs),
      warmupP99Ms: round3(r.warmup.quantile(0.99)),
      ...(r.stealPct !== undefined ? { stealPct: r.stealPct } : {}),
      ...(r.delivered < r.expected ? { undelivered: r.expected - r.delivered, note: "undelivered events counted as 30 s late (lower bound)" } : {}),
      ...extra,
    },
  };
}

export const workload: Workload = async (options) => {
  const plans: Plan[] = options.quick
    ? [
        { rate: 1000, warmupSeconds: 0.5, seconds: 2 },
        { rate: 10_000, warmupSeconds: 0.5, seconds: 2 },
      ]
    : [
        { rate: 1000, warmupSeconds: 10, seconds: 15 },
        { rate: 10_000, warmupSeconds: 2, seconds: 10 },
      ];
  const label = (rate: number): string => `${rate / 1000}k`;
  const raw = new Map<number, RunResult>();
  const one = new Map<number, RunResult>();
  const two = new Map<number, RunResult>();
  const rss = { one: 0, a: 0, b: 0 };

  // The 1k ceiling is measured before the sidecars and again after them, and the run with
  // the lower p99 is the ceiling: a stall of the machine during one ceiling run (which can
  // make every added p99 negative) cannot make a hop look free.
  const rawP99s = new Map<number, number[]>();
  const rawRuns = async (which: Plan[]): Promise<void> => {
    const echo = await startRawServer();
    try {
      for (const plan of which) {
        const r = await runRaw(echo.address, plan);
        const earlier = raw.get(plan.rate);
        rawP99s.set(plan.rate, [...(rawP99s.get(plan.rate) ?? []), r.latency.quantile(0.99)]);
        if (!earlier || r.latency.quantile(0.99) < earlier.latency.quantile(0.99)) raw.set(plan.rate, r);
      }
    } finally {
      await echo.stop();
    }
  };
  await rawRuns(plans);

  // The shape row: 1k/s only (at 10k the client and the server batch, and it says nothing new).
  let shape: RunResult | undefined;
  const noLog = await startScript(NO_LOG_SERVER);
  try {
    shape = await runWeft(noLog.address, noLog.address, plans[0]!, "shape");
  } finally {
    await noLog.stop();
  }

  let solo: WeftProcess | undefined;
  try {
    solo = await startOne(options.scratch, "w6-one");
    for (const plan of plans) one.set(plan.rate, await runWeft(solo.address, solo.address, plan, `one${label(plan.rate)}`));
    rss.one = (await procMemory(solo.pid)).hwmMiB;
  } finally {
    await solo?.terminate();
  }

  const { a, b } = await startPair(options.scratch, "w6-two");
  try {
    for (const plan of plans) two.set(plan.rate, await runWeft(a.address, b.address, plan, `two${label(plan.rate)}`));
    rss.a = (await procMemory(a.pid)).hwmMiB;
    rss.b = (await procMemory(b.pid)).hwmMiB;
  } finally {
    await Promise.all([a.terminate(), b.terminate()]);
  }
  // Aged: with a 5 s window each sweep (every 10 s) clears the dedup table of the 10 s of
  // entries before it, as the sweeps of a sidecar older than its window do.
  let aged: RunResult | undefined;
  const old = await startPair(options.scratch, "w6-aged", { WEFT_DEDUP_WINDOW: "5s", WEFT_PEER_TIMEOUT: "1s" });
  try {
    aged = await runWeft(old.a.address, old.b.address, plans[0]!, "aged1k");
  } finally {
    await Promise.all([old.a.terminate(), old.b.terminate()]);
  }
  // Raw two hops (1k only): the sink, then the relay that writes to it. Last but for the
  // second raw run, so that the Weft rows run in this process before any of its work.
  let rawTwo: RunResult | undefined;
  const sink = await startRawServer(HOP_SERVER);
  try {
    const relay = await startRawServer(HOP_SERVER, [sink.address]);
    try {
      rawTwo = await runRawTwo(relay.address, sink.address, plans[0]!);
    } finally {
      await relay.stop();
    }
  } finally {
    await sink.stop();
  }

  await rawRuns(plans.slice(0, 1));

  const rows: BenchRow[] = [];
  for (const plan of plans) {
    const k = label(plan.rate);
    const r = raw.get(plan.rate)!;
    const o = one.get(plan.rate)!;
    const t = two.get(plan.rate)!;
    const added = (x: RunResult): Record<string, number> => ({
      addedP50Ms: round3(x.latency.quantile(0.5) - r.latency.quantile(0.5)),
      addedP99Ms: round3(x.latency.quantile(0.99) - r.latency.quantile(0.99)),
      addedP999Ms: round3(x.latency.quantile(0.999) - r.latency.quantile(0.999)),
    });
    /** A row shown by the latency it adds to the raw echo's at the same rate. */
    const againstRaw = (id: string, title: string, x: RunResult, extra: Record<string, number> = {}): BenchRow => ({
      ...row(`W6-${k}-${id}`, title, x, plan.rate, { ...added(x), ...extra }),
      ceiling: `W6-${k}-raw`,
      compare: "latency",
    });
    const runs = (rawP99s.get(plan.rate) ?? []).map((v) => v.toFixed(2)).join(", ");
    rows.push(row(`W6-${k}-raw`, `raw grpc-js bidi echo at ${k} events/s, open loop, 256 B (ceiling)`, r, plan.rate, { rawP99RunsMs: runs }));
    const first = plan === plans[0];
    rows.push(
      {
        ...againstRaw("1hop", `one sidecar (publish and subscribe on it) at ${k} events/s, open loop`, o, first ? { targetAddedP99Ms: 1 } : {}),
        rssMiB: rss.one,
      },
      {
        ...againstRaw("2hop", `publish on sidecar A, subscribe on B at ${k} events/s, open loop`, t, {
          ...(first ? { targetAddedP99Ms: 2 } : {}),
          rssPeakMiBA: rss.a,
          rssPeakMiBB: rss.b,
        }),
        rssMiB: Math.max(rss.a, rss.b),
      },
    );
    if (first && rawTwo) {
      rows.push(againstRaw("raw-2hop", `raw grpc-js over two hops (relay process → sink process → subscriber) at ${k} events/s: a third process and a second hop without Weft`, rawTwo));
    }
    if (first && aged) rows.push(againstRaw("2hop-aged", `2hop on sidecars older than their dedup window (5 s here), whose sweeps clear dedup tables meanwhile`, aged));
    if (first && shape) rows.push(againstRaw("shape", `the Weft client against the no-log server (W1's ceiling) at ${k} events/s: the API's four messages alone`, shape));
  }
  return rows;
};
