// Writes the data directories of two linked sidecars as a release left them, for the
// migration test (test/migration.int.test.ts). Run it in a checkout of the release whose
// layout the fixture stands for, with this file copied in:
//
//   git worktree add ../weft-0.2 <release commit> && cd ../weft-0.2 && npm ci
//   npx tsx /path/to/weft/scripts/make-data-fixture.ts OUT_DIR
//   tar -C OUT_DIR -czf test/fixtures/data-0.2.tar.gz node-a node-b
//
// It imports the release's own test support (by path, from the working directory). What
// it leaves, in channel "orders", group "billing" (members only behind node-b, at most 4
// in flight, 2 attempts):
// - node-a published o1..o12 (keys k0..k2). node-b's member acked o1..o6 and nacked o7
//   (dead-lettered at node-b into "orders.dlq.billing"); o8..o10 were in flight when both
//   stopped; o11 and o12 (same keys as o8 and o9) were not yet delivered.
// - node-b published p1..p3 itself; none was delivered.
import { cp, mkdir } from "node:fs/promises";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const out = process.argv[2];
if (!out) throw new Error("usage: make-data-fixture.ts OUT_DIR");
const load = (path: string): Promise<Record<string, never>> => import(pathToFileURL(join(process.cwd(), path)).href);
const { startMesh, settled } = (await load("test/support/mesh.ts")) as unknown as typeof import("../test/support/mesh.js");
const { collect, eventually } = (await load("test/support/collect.ts")) as unknown as typeof import("../test/support/collect.js");

const [a, b] = await startMesh(["node-a", "node-b"], { peerTimeoutMs: 5000 });
const sub = b!.client().subscribe({ channel: "orders", group: "billing", from: "earliest", maxInFlight: 4, maxAttempts: 2 });
await sub.subscribed();
await settled(a!, [b!], "orders", "billing");
const publisher = a!.client();
for (let i = 1; i <= 12; i++) await publisher.publish({ channel: "orders", id: `o${i}`, key: `k${i % 3}`, data: `order ${i}` });
const acked = new Set(["o1", "o2", "o3", "o4", "o5", "o6"]);
const held = new Set<string>();
await collect(
  sub,
  (seen) => held.size === 3 && seen.filter((d) => d.event.id === "o7").length === 2,
  (d) => {
    if (acked.has(d.event.id)) d.ack();
    else if (d.event.id === "o7") d.nack();
    else held.add(d.event.id);
  },
);
for (let i = 1; i <= 3; i++) await b!.client().publish({ channel: "orders", id: `p${i}`, data: `own ${i}` });
await eventually(() => b!.sidecar.log.head("orders.dlq.billing").last === 1, 10_000, "o7 dead-lettered at node-b");
await Promise.all([a!.stop(), b!.stop()]);
await mkdir(out, { recursive: true });
await cp(a!.dataDir, join(out, "node-a"), { recursive: true });
await cp(b!.dataDir, join(out, "node-b"), { recursive: true });
console.log(`wrote ${out}/node-a and ${out}/node-b`);
process.exit(0);
