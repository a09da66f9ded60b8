/**
 * Throughput of one sidecar: a publisher and a subscriber over real loopback gRPC, in one
 * process with the sidecar (run `npm run bench`). Prints events/s for publish (acked =
 * stored) and for end-to-end delivery (delivered and acked), and their ratio to
 * PER_MESSAGE_CEILING, a one-gRPC-message-per-event ceiling for this kind of machine.
 *
 *   npx tsx bench/publish-subscribe.ts [events=200000] [payloadBytes=256] [--fsync] [--to HOST:PORT]
 *     [--subscribe-to HOST:PORT] [--publish-only]
 *
 * --publish-only leaves the subscriber out, to see the publish path alone.
 */
import { rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { defaultConfig } from "../sidecar/settings/index.js";
import { Sidecar } from "../sidecar/sidecar.js";
import { connect } from "../src/client/index.js";

const toIndex = process.argv.indexOf("--to");
const external = toIndex > 0 ? process.argv[toIndex + 1] : undefined;
const subscribeIndex = process.argv.indexOf("--subscribe-to");
// With --subscribe-to, the subscriber talks to another sidecar of a mesh (one hop).
const subscribeTo = subscribeIndex > 0 ? process.argv[subscribeIndex + 1] : undefined;
const args = process.argv.slice(2).filter((a, i, all) => !a.startsWith("--") && all[i - 1] !== "--to" && all[i - 1] !== "--subscribe-to");
const total = Number(args[0] ?? 200_000);
const payload = Buffer.alloc(Number(args[1] ?? 256), 120);
const fsync = process.argv.includes("--fsync");
const publishOnly = process.argv.includes("--publish-only");
const PER_MESSAGE_CEILING = 42_000;

const dataDir = join(tmpdir(), `weft-bench-${process.pid}`);
// With --to HOST:PORT the bench drives a sidecar in another process (e.g. `npm start`).
const sidecar = external ? undefined : await Sidecar.start({ ...defaultConfig(), dataDir, listen: "127.0.0.1:0", peerListen: "127.0.0.1:0", http: "127.0.0.1:0", fsync });
const address = external ?? sidecar!.address;
const pub = connect(address, { maxOutstanding: 20_000 });
const subClient = connect(subscribeTo ?? address);
const channel = `bench.events.r${Date.now()}`;
const sub = publishOnly ? undefined : subClient.subscribe({ channel, group: "bench", from: "earliest", maxInFlight: 5000 });
await sub?.subscribed();

const start = performance.now();
const cpuAtStart = process.cpuUsage();
let received = 0;
let consumed!: () => void;
const allConsumed = new Promise<void>((r) => (consumed = r));
if (!sub) consumed();
else void (async () => {
  for await (const d of sub) {
    d.ack();
    if (++received === total) {
      consumed();
      break;
    }
  }
})();

const chunk = 1000;
const inflight: Promise<unknown>[] = [];
for (let i = 0; i < total; i += chunk) {
  const n = Math.min(chunk, total - i);
  inflight.push(pub.publishMany(Array.from({ length: n }, () => ({ channel, data: payload }))));
  if (inflight.length >= 16) await inflight.shift();
}
await Promise.all(inflight);
const published = performance.now();
await allConsumed;
const done = performance.now();
const cpu = process.cpuUsage(cpuAtStart);

const pubRate = total / ((published - start) / 1000);
const e2eRate = total / ((done - start) / 1000);
console.log(`events ${total}, payload ${payload.length} B, fsync ${fsync}`);
console.log(`publish (acked = stored): ${Math.round(pubRate)} events/s  (${(pubRate / PER_MESSAGE_CEILING).toFixed(2)}x the per-message ceiling)`);
if (!publishOnly) console.log(`end to end (delivered + acked): ${Math.round(e2eRate)} events/s  (${(e2eRate / PER_MESSAGE_CEILING).toFixed(2)}x)`);
// With --to, this process is the client alone: its CPU per event is the client's cost.
console.log(`cpu of this process: ${(((cpu.user + cpu.system) / total)).toFixed(1)} us/event, ${Math.round(((cpu.user + cpu.system) / 1000 / (done - start)) * 100)}% of one core`);
console.log(`rss ${Math.round(process.memoryUsage().rss / 2 ** 20)} MiB`);

sub?.close();
pub.close();
subClient.close();
await sidecar?.stop();
await rm(dataDir, { recursive: true, force: true });
