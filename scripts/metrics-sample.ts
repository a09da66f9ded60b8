/**
 * Writes what two real sidecars serve at /metrics after traffic that moves every series:
 * publishes (and re-publishes) on A, a group on A and one behind B (one mesh hop), acks, nacks
 * until a dead letter. For `promtool check metrics` in CI (.ci/check-metrics).
 *
 *   npx tsx scripts/metrics-sample.ts DIR     # writes DIR/a.prom and DIR/b.prom
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { defaultConfig } from "../sidecar/settings/index.js";
import { Sidecar } from "../sidecar/sidecar.js";
import { connect } from "../src/client/index.js";
import { freePort } from "../test/support/free-port.js";

const out = process.argv[2];
if (!out) {
  console.error("usage: tsx scripts/metrics-sample.ts DIR");
  process.exit(2);
}

async function until(check: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 20_000;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`${what} did not happen within 20 s`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const peers = [`127.0.0.1:${await freePort()}`, `127.0.0.1:${await freePort()}`];
const dirs = [await mkdtemp(join(tmpdir(), "weft-metrics-a-")), await mkdtemp(join(tmpdir(), "weft-metrics-b-"))];
const [a, b] = await Promise.all(
  ["a", "b"].map((nodeId, i) =>
    Sidecar.start({ ...defaultConfig(), nodeId, dataDir: dirs[i]!, listen: "127.0.0.1:0", peerListen: peers[i]!, http: "127.0.0.1:0", peers, peerTimeoutMs: 1000 }),
  ),
);
const [ca, cb] = [connect(a!.address, { source: "//metrics-sample" }), connect(b!.address)];
try {
  const channel = "orders.created";
  const N = 20;
  const local = ca.subscribe({ channel, group: "billing", from: "earliest" });
  const remote = cb.subscribe({ channel, group: "shipping", from: "earliest" });
  const fussy = ca.subscribe({ channel: "orders.audit", group: "fussy", from: "earliest", maxAttempts: 2 });
  await Promise.all([local.subscribed(), remote.subscribed(), fussy.subscribed()]);
  await until(() => a!.mesh.status().some((p) => p.groups.includes(`${channel}!shipping`)), "B's interest in shipping known at A");

  await ca.publishMany(Array.from({ length: N }, (_, i) => ({ channel, id: `o-${i}`, key: `customer-${i % 3}`, data: { i } })));
  await ca.publish({ channel, id: "o-1", data: { i: 1 } }); // a duplicate
  await ca.publish({ channel: "orders.audit", data: "nacked until dead-lettered" });

  const drain = async (sub: typeof local, n: number, nack = false): Promise<void> => {
    let seen = 0;
    for await (const d of sub) {
      if (nack) d.nack();
      else d.ack();
      if (++seen === n) return;
    }
  };
  await Promise.all([drain(local, N), drain(remote, N), drain(fussy, 2, true)]);
  await until(() => a!.engine.status().every((g) => g.backlog === 0), "every group at A done");

  for (const [name, sidecar] of [["a", a!], ["b", b!]] as const) {
    const response = await fetch(`http://${sidecar.httpAddress}/metrics`);
    if (response.status !== 200) throw new Error(`${name}: /metrics answered ${response.status}`);
    await writeFile(join(out, `${name}.prom`), await response.text());
  }
  console.log(`metrics-sample: wrote ${join(out, "a.prom")} and ${join(out, "b.prom")}`);
} finally {
  ca.close();
  cb.close();
  await Promise.all([a!.stop(), b!.stop()]);
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
}
