import { readFileSync } from "node:fs";
import { rm, writeFile } from "node:fs/promises";
import { BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import { Client, type ClientDuplexStream, type ServiceError, type StatusObject, credentials, status } from "@grpc/grpc-js";
import { type Delivery, type WeftClient, connect } from "../../src/client/index.js";
import { collect, within } from "./collect.js";
import { type FuzzTarget, type StreamPlan, TARGETS, planStream, streamSeed } from "./fuzz-frames.js";
import { type SidecarProcess, freePorts, spawnSidecar } from "./process.js";
import { tempDir } from "./sidecar.js";
import { wireFields } from "./wire-fields.js";

/**
 * The fuzzing campaign, one implementation for the CI test (test/fuzz.e2e.test.ts) and for
 * `npm run fuzz` (scripts/fuzz.ts): a `weft sidecar` child process gets a known set of
 * events, then random and mutated frames on every RPC of both its gRPC listeners, stream by
 * stream; then the check: the same process still serves a round trip, and every event
 * acked before the fuzzing is still delivered to every group that existed then.
 */

export interface FuzzOptions {
  seed: number;
  /** Frames to send, over every RPC (each RPC gets its turn in order). */
  frames: number;
  /** Streams open at once. Default 4. */
  concurrency?: number;
  /** Prints progress lines (the CLI); silent without. */
  progress?: (line: string) => void;
  /** Only the RPCs whose name contains one of these ("Publish", "weft.v1.Admin/"); all without. */
  only?: string[];
  /** Writes the sidecar's stderr to this file at the end of the run. */
  sidecarLog?: string;
}

/** Something the fuzzer saw that the sidecar must never do. */
export interface Finding {
  rpc: string;
  /** The stream's index: `planStream(target, streamSeed(seed, index), index)` sends it again. */
  stream: number;
  what: string;
}

export interface FuzzReport {
  seed: number;
  /** The frame budget asked for. */
  budget: number;
  streams: number;
  /** Frames written, by RPC. */
  frames: Record<string, number>;
  /** How streams ended, by RPC: "CODE/weft-reason" (or "cancelled by the fuzzer") to count. */
  endings: Record<string, Record<string, number>>;
  findings: Finding[];
  /** Seconds spent sending frames (not the setup or the check). */
  fuzzSeconds: number;
  /** The check after the fuzzing: one line per step, and whether all passed. */
  check: { ok: boolean; lines: string[] };
  /** Resident memory of the sidecar before and after the fuzzing, KiB (Linux), for a leak's scale. */
  rssKiB: { before: number; after: number } | undefined;
  ok: boolean;
}

/** Where the events kept across the run live: never a name the fuzzer's requests use. */
const KEPT_CHANNELS = ["kept.orders", "kept.payments", "kept.audit"];
const KEPT_GROUPS = ["before-1", "before-2"];
const KEPT_EVENTS = 200;
/** A stream not ended this long after the fuzzer half-closed it (or a unary call not answered) hangs. */
const HANG_MS = 15_000;
/**
 * Streams on one connection before the fuzzer opens a new one. The fuzzer cancels about one
 * stream in four, and Node's HTTP/2 (nghttp2's defence against "rapid reset", CVE-2023-44487)
 * ends a connection whose client resets more than 1000 streams in a burst (then 33 a second)
 * with GOAWAY INTERNAL_ERROR: every stream on it would end INTERNAL, which is that defence
 * working, not a finding.
 */
const STREAMS_PER_CONNECTION = 500;
/** Statuses that say the sidecar failed on input, where a clear error belongs. */
const FAULTS = new Set<status>([status.INTERNAL, status.UNKNOWN, status.DATA_LOSS]);

const raw = (b: Buffer): Buffer => b;
const asBuffer = (b: Uint8Array): Buffer => Buffer.from(b.buffer, b.byteOffset, b.byteLength);

/** Runs a whole campaign: start a sidecar, keep events, fuzz, check, stop. Never throws for a finding. */
export async function runFuzz(options: FuzzOptions): Promise<FuzzReport> {
  const dataDir = await tempDir("weft-fuzz-");
  const [port, peerPort] = await freePorts(2);
  const sidecar = await spawnSidecar(dataDir, port!, ["--peer-listen", `127.0.0.1:${peerPort}`]);
  const peerAddress = `127.0.0.1:${peerPort}`;
  try {
    const kept = await keepEvents(sidecar.address);
    options.progress?.(`kept ${kept.size} acked events on ${KEPT_CHANNELS.join(", ")} for groups ${KEPT_GROUPS.join(", ")}`);
    const before = rss(sidecar);
    const fuzzer = new Fuzzer(options, sidecar, peerAddress);
    const started = performance.now();
    await fuzzer.run();
    const fuzzSeconds = (performance.now() - started) / 1000;
    const after = rss(sidecar);
    const check = await checkAfter(sidecar, kept, fuzzer.findings);
    const report: FuzzReport = {
      seed: options.seed,
      budget: options.frames,
      streams: fuzzer.streams,
      frames: fuzzer.frames,
      endings: fuzzer.endings,
      findings: fuzzer.findings,
      fuzzSeconds,
      check,
      rssKiB: before !== undefined && after !== undefined ? { before, after } : undefined,
      ok: check.ok && fuzzer.findings.length === 0,
    };
    return report;
  } finally {
    await sidecar.terminate().catch(() => {});
    if (options.sidecarLog) await writeFile(options.sidecarLog, sidecar.stderr());
    await rm(dataDir, { recursive: true, force: true });
  }
}

/** The report as text: what `npm run fuzz` prints and the CI test logs. */
export function formatReport(report: FuzzReport): string {
  const lines = [`seed ${report.seed}: ${report.streams} streams, ${sum(Object.values(report.frames))} frames in ${report.fuzzSeconds.toFixed(1)} s (${Math.round(sum(Object.values(report.frames)) / report.fuzzSeconds)} frames/s)`];
  const width = Math.max(...TARGETS.map((t) => t.name.length));
  for (const t of TARGETS) {
    const endings = Object.entries(report.endings[t.name] ?? {})
      .sort((a, b) => b[1] - a[1])
      .map(([k, v]) => `${k} ${v}`)
      .join(", ");
    lines.push(`  ${t.name.padEnd(width)}  ${String(report.frames[t.name] ?? 0).padStart(7)} frames  ${endings}`);
  }
  if (report.rssKiB) lines.push(`sidecar RSS ${Math.round(report.rssKiB.before / 1024)} MiB before, ${Math.round(report.rssKiB.after / 1024)} MiB after`);
  for (const f of report.findings.slice(0, 20)) lines.push(`FINDING ${f.rpc} stream ${f.stream}: ${f.what}`);
  if (report.findings.length > 20) lines.push(`… and ${report.findings.length - 20} more findings`);
  lines.push(...report.check.lines.map((l) => `check: ${l}`));
  lines.push(report.ok ? `PASS (seed ${report.seed})` : `FAIL: reproduce with npm run fuzz -- --frames ${report.budget} --seed ${report.seed}`);
  return lines.join("\n");
}

const sum = (xs: number[]): number => xs.reduce((a, b) => a + b, 0);

/** Creates the kept groups, then publishes the kept events; returns their ids by channel. */
async function keepEvents(address: string): Promise<Map<string, string>> {
  const client = connect(address, { source: "//weft-fuzz/kept" });
  try {
    for (const channel of KEPT_CHANNELS) {
      for (const group of KEPT_GROUPS) {
        const sub = client.subscribe({ channel, group, from: "earliest" });
        await within(sub.subscribed(), 20_000, `the subscription of ${channel}/${group}`);
        sub.close();
      }
    }
    const events = Array.from({ length: KEPT_EVENTS }, (_, i) => ({
      channel: KEPT_CHANNELS[i % KEPT_CHANNELS.length]!,
      id: `kept-${i}`,
      key: `k${i % 7}`,
      data: { i },
    }));
    const acked = await client.publishMany(events);
    if (acked.some((a) => a.duplicate)) throw new Error("a kept event was a duplicate: the data directory was not fresh");
    return new Map(events.map((e) => [e.id, e.channel]));
  } finally {
    client.close();
  }
}

/** One stream's end, as the fuzzer saw it. */
type Ending = { by: "sidecar"; code: status; details: string; reason?: string } | { by: "fuzzer" } | { by: "hang"; after: string };

/** Sends the planned streams, `concurrency` at a time, and records how each ended. */
class Fuzzer {
  readonly frames: Record<string, number> = {};
  readonly endings: Record<string, Record<string, number>> = {};
  readonly findings: Finding[] = [];
  streams = 0;
  private planned = 0;
  /** Each port's current connection. */
  private readonly connections: Record<"service" | "peer", Connection>;
  private readonly targets: readonly FuzzTarget[];

  constructor(
    private readonly options: FuzzOptions,
    private readonly sidecar: SidecarProcess,
    private readonly peerAddress: string,
  ) {
    this.connections = { service: this.newConnection("service"), peer: this.newConnection("peer") };
    const only = options.only;
    this.targets = only ? TARGETS.filter((t) => only.some((o) => t.name.includes(o))) : TARGETS;
    if (this.targets.length === 0) throw new Error(`no RPC matches ${only?.join(", ")}`);
  }

  async run(): Promise<void> {
    const workers = Array.from({ length: this.options.concurrency ?? 4 }, () => this.worker());
    await Promise.all(workers);
    this.connections.service.retire();
    this.connections.peer.retire();
  }

  private async worker(): Promise<void> {
    while (this.planned < this.options.frames && this.alive()) {
      const index = this.streams++;
      // Every RPC in turn, so that a small budget still reaches all of them.
      const target = this.targets[index % this.targets.length]!;
      const plan = planStream(target, streamSeed(this.options.seed, index), index);
      this.planned += plan.frames.length;
      const ending = await this.send(plan);
      this.record(plan, index, ending);
      if (index % 500 === 0 && index > 0) this.options.progress?.(`${index} streams, ${this.planned} frames`);
    }
  }

  private alive(): boolean {
    return this.sidecar.child.exitCode === null && this.sidecar.child.signalCode === null;
  }

  private newConnection(port: "service" | "peer"): Connection {
    const address = port === "service" ? this.sidecar.address : this.peerAddress;
    return new Connection(address);
  }

  private record(plan: StreamPlan, index: number, ending: Ending): void {
    const rpc = plan.target.name;
    const label = ending.by === "sidecar" ? status[ending.code]! + (ending.reason ? `/${ending.reason}` : "") : ending.by === "fuzzer" ? "cancelled by the fuzzer" : "HANG";
    const counts = (this.endings[rpc] ??= {});
    counts[label] = (counts[label] ?? 0) + 1;
    if (ending.by === "hang") this.findings.push({ rpc, stream: index, what: `no status ${ending.after} within ${HANG_MS} ms` });
    else if (ending.by === "sidecar" && FAULTS.has(ending.code)) this.findings.push({ rpc, stream: index, what: `${status[ending.code]}: ${ending.details}` });
    // A connection lost (not a status the sidecar chose): the next stream gets a new one.
    if (ending.by === "sidecar" && ending.code === status.UNAVAILABLE && /Connection dropped|No connection|ECONNRESET/i.test(ending.details)) this.reconnect(plan.target.port);
  }

  /** A new connection to `port` for the streams after this; those open on the old one go on. */
  private reconnect(port: "service" | "peer"): void {
    this.connections[port].retire();
    this.connections[port] = this.newConnection(port);
  }

  private count(plan: StreamPlan): void {
    this.frames[plan.target.name] = (this.frames[plan.target.name] ?? 0) + 1;
  }

  private async send(plan: StreamPlan): Promise<Ending> {
    if (this.connections[plan.target.port].opened >= STREAMS_PER_CONNECTION) this.reconnect(plan.target.port);
    const connection = this.connections[plan.target.port];
    connection.opened++;
    connection.live++;
    try {
      return await this.sendOn(connection.client, plan);
    } finally {
      connection.live--;
      if (connection.retired && connection.live === 0) connection.client.close();
    }
  }

  private sendOn(client: Client, plan: StreamPlan): Promise<Ending> {
    const path = `/${plan.target.name}`;
    if (plan.target.kind === "unary") {
      return new Promise((resolve) => {
        this.count(plan);
        client.makeUnaryRequest(path, asBuffer, raw, asBuffer(plan.frames[0]!), { deadline: Date.now() + HANG_MS }, (e: ServiceError | null) => {
          if (e?.code === status.DEADLINE_EXCEEDED) resolve({ by: "hang", after: "for a unary call" });
          else resolve({ by: "sidecar", code: e ? e.code : status.OK, details: e?.details ?? "", reason: String(e?.metadata?.get("weft-reason")[0] ?? "") });
        });
      });
    }
    if (plan.target.kind === "server-stream") {
      const call = client.makeServerStreamRequest(path, asBuffer, raw, asBuffer(plan.frames[0]!));
      this.count(plan);
      return this.finish(call, () => call.cancel(), "first", "for a Watch");
    }
    const call = client.makeBidiStreamRequest(path, asBuffer, raw);
    return this.drive(plan, call);
  }

  private async drive(plan: StreamPlan, call: ClientDuplexStream<Uint8Array, Buffer>): Promise<Ending> {
    let ended: StatusObject | undefined;
    let firstAnswer: (() => void) | undefined;
    const answered = new Promise<void>((resolve) => (firstAnswer = resolve));
    call.on("data", () => firstAnswer?.());
    call.on("status", (s: StatusObject) => {
      ended = s;
      firstAnswer?.();
    });
    call.on("error", () => {});
    for (let i = 0; i < plan.frames.length && !ended; i++) {
      if (i === plan.awaitAfter) await within(answered, HANG_MS, "the first answer").catch(() => {});
      if (ended) break;
      call.write(asBuffer(plan.frames[i]!));
      this.count(plan);
      if (plan.paced) await new Promise((r) => setImmediate(r));
    }
    const s = ended as StatusObject | undefined;
    if (s) return { by: "sidecar", code: s.code, details: s.details, reason: String(s.metadata?.get("weft-reason")[0] ?? "") };
    if (plan.ending === "cancel") return this.finish(call, () => call.cancel(), "now", "after a cancel");
    call.end();
    return this.finish(call, () => call.cancel(), "wait", "after the half-close");
  }

  /**
   * How `call` ends. `when`: "now" cancels at once, "first" after the first answer (a Watch
   * never ends by itself), "wait" waits for the sidecar to end it.
   */
  private finish(call: NodeJS.EventEmitter & { cancel(): void }, cancel: () => void, when: "now" | "first" | "wait", after: string): Promise<Ending> {
    return new Promise((resolve) => {
      let cancelled = false;
      const timer = setTimeout(() => {
        cancelled = true;
        cancel();
        resolve({ by: "hang", after });
      }, HANG_MS);
      call.on("error", () => {});
      call.on("status", (s: StatusObject) => {
        clearTimeout(timer);
        resolve(cancelled ? { by: "fuzzer" } : { by: "sidecar", code: s.code, details: s.details, reason: String(s.metadata?.get("weft-reason")[0] ?? "") });
      });
      const cancelNow = (): void => {
        if (cancelled) return;
        cancelled = true;
        cancel();
      };
      if (when === "now") setImmediate(cancelNow);
      if (when === "first") call.once("data", cancelNow);
    });
  }
}

/** One grpc-js client with a connection of its own, closed once retired and its streams are done. */
class Connection {
  readonly client: Client;
  /** Streams opened on it, and of those, not ended yet. */
  opened = 0;
  live = 0;
  retired = false;

  constructor(address: string) {
    this.client = new Client(address, credentials.createInsecure(), {
      // A connection of its own, not one shared with the fuzzer's other clients.
      "grpc.use_local_subchannel_pool": 1,
      "grpc.max_receive_message_length": -1,
      "grpc.max_send_message_length": -1,
      "grpc.initial_reconnect_backoff_ms": 50,
      "grpc.max_reconnect_backoff_ms": 500,
    });
  }

  /** No new streams: closes the connection once the streams open on it have ended. */
  retire(): void {
    this.retired = true;
    if (this.live === 0) this.client.close();
  }
}

/** The check after the fuzzing. */
async function checkAfter(sidecar: SidecarProcess, kept: Map<string, string>, findings: Finding[]): Promise<{ ok: boolean; lines: string[] }> {
  const lines: string[] = [];
  let ok = true;
  const step = async (what: string, run: () => Promise<string>): Promise<void> => {
    try {
      lines.push(`ok   ${what}: ${await run()}`);
    } catch (e) {
      ok = false;
      lines.push(`FAIL ${what}: ${(e as Error).message}`);
    }
  };
  const pid = sidecar.child.pid!;
  await step("the sidecar process is alive", async () => {
    if (sidecar.child.exitCode !== null || sidecar.child.signalCode !== null) {
      throw new Error(`pid ${pid} exited (${sidecar.child.exitCode ?? sidecar.child.signalCode}); stderr ends with: ${sidecar.stderr().slice(-2000)}`);
    }
    process.kill(pid, 0);
    return `pid ${pid}, the one started`;
  });
  await step("health", async () => {
    const client = new Client(sidecar.address, credentials.createInsecure());
    try {
      const answer = await new Promise<Buffer>((resolve, reject) =>
        client.makeUnaryRequest("/grpc.health.v1.Health/Check", asBuffer, raw, asBuffer(new BinaryWriter().tag(1, WireType.LengthDelimited).string("weft.v1.Mesh").finish()), { deadline: Date.now() + 20_000 }, (e, r) => (e ? reject(e) : resolve(r!))),
      );
      const serving = wireFields(answer).find(([n]) => n === 1)?.[1];
      if (serving !== 1) throw new Error(`weft.v1.Mesh is ${serving}, not SERVING (1)`);
      return "weft.v1.Mesh SERVING";
    } finally {
      client.close();
    }
  });
  const client = connect(sidecar.address, { source: "//weft-fuzz/check" });
  try {
    await step("a fresh round trip", async () => {
      const published = await within(client.publish({ channel: "check.round-trip", id: "round-trip", data: "after the fuzzing" }), 20_000, "the publish");
      const sub = client.subscribe({ channel: "check.round-trip", group: "check", from: "earliest" });
      const [d] = await collect(sub, (seen) => seen.length >= 1);
      sub.close();
      if (d?.event.id !== "round-trip") throw new Error(`delivered ${d?.event.id}, published round-trip`);
      return `published at sequence ${published.sequence}, delivered and acked`;
    });
    for (const channel of KEPT_CHANNELS) {
      const expected = new Set([...kept].filter(([, c]) => c === channel).map(([id]) => id));
      // The groups created before the fuzzing, and one created now from the earliest event.
      for (const group of [...KEPT_GROUPS, "after-fuzz"]) {
        await step(`every kept event of ${channel} reaches ${group}`, async () => {
          const sub = client.subscribe({ channel, group, from: "earliest", maxInFlight: 100 });
          const seen = new Set<string>();
          try {
            await collect(sub, () => [...expected].every((id) => seen.has(id)), (d: Delivery) => {
              seen.add(d.event.id);
              d.ack();
            });
          } catch (e) {
            const missing = [...expected].filter((id) => !seen.has(id));
            throw new Error(`${missing.length} of ${expected.size} missing (${missing.slice(0, 5).join(", ")}…): ${(e as Error).message}`);
          } finally {
            sub.close();
          }
          return `${expected.size} of ${expected.size}`;
        });
      }
    }
  } finally {
    client.close();
  }
  await step("nothing fatal on stderr", async () => {
    const bad = sidecar.stderr().split("\n").filter((l) => /uncaught|unhandled|fatal|"level":60/i.test(l));
    if (bad.length > 0) throw new Error(`${bad.length} lines, first: ${bad[0]!.slice(0, 500)}`);
    return `${sidecar.stderr().split("\n").length} lines, none uncaught or fatal`;
  });
  await step("no stream hung or ended INTERNAL/UNKNOWN", async () => {
    if (findings.length > 0) throw new Error(`${findings.length} findings (listed above)`);
    return "none";
  });
  return { ok, lines };
}

/** The resident memory of the sidecar, KiB; undefined where /proc is not there. */
function rss(sidecar: SidecarProcess): number | undefined {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${sidecar.child.pid}/status`, "utf8"));
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}
