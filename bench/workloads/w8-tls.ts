/**
 * W8: what TLS costs. W1 (one sidecar) and W3 (one hop) measured with TLS on every listener
 * and mutual TLS on the peer link, beside the same workloads in plaintext, alternating
 * (plain, TLS, plain, TLS, ...) so that both sides of each ratio see the same machine.
 * Certificates come from a development CA made for the run (sidecar/dev-certs.ts).
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { makeCa, makeNodeCert } from "../../sidecar/dev-certs.js";
import { type Measured, measureSidecar, median, streamRow } from "./stream-rows.js";
import { streamShape } from "./stream-shape.js";
import type { BenchRow, Workload } from "./types.js";
import { type HopTls, measureHop } from "./w3-hop.js";

export const workload: Workload = async (options) => {
  const certs = join(options.scratch, "certs");
  await makeCa(certs, { trustDomain: "weft.bench", days: 30 });
  const args = async (nodeId: string): Promise<string[]> => {
    const files = await makeNodeCert(certs, { nodeId, days: 30 });
    return ["--tls-cert", files.cert, "--tls-key", files.key, "--tls-ca", join(certs, "ca.crt")];
  };
  const nodeArgs = new Map<string, string[]>();
  for (const id of ["solo", "a", "b"]) nodeArgs.set(id, await args(id));
  // Node certificates name localhost; the clients check that name rather than the IP they dial.
  const client = { ca: readFileSync(join(certs, "ca.crt")), serverName: "localhost" };
  const tls: HopTls = { sidecarArgs: (id) => nodeArgs.get(id)!, client };

  const rounds = options.quick ? 1 : 3;
  const shape = streamShape(options.quick ? 5000 : 100_000, 256, options.quick);
  const plain: Measured[] = [];
  const secure: Measured[] = [];
  for (let r = 0; r < rounds; r++) {
    plain.push(await measureSidecar(options.scratch, `w8-plain-${r}`, shape, ["--node-id", "solo"]));
    secure.push(await measureSidecar(options.scratch, `w8-tls-${r}`, shape, ["--node-id", "solo", ...nodeArgs.get("solo")!], 1, { tls: client }));
  }
  const p = median(plain);
  const s = median(secure);
  const rows: BenchRow[] = [
    streamRow("W1-plain", `W1 in plaintext, beside W1-tls (median of ${p.runs.length})`, p.result, p.peakRssMiB, undefined, p.runs),
    streamRow("W1-tls", `W1 with TLS on the service API (median of ${s.runs.length})`, s.result, s.peakRssMiB, "W1-plain", s.runs),
  ];
  const hops: { plain: BenchRow[]; tls: BenchRow[] } = { plain: [], tls: [] };
  for (let r = 0; r < (options.quick ? 1 : 2); r++) {
    hops.plain.push(await measureHop(options, `w8-hop-plain-${r}`));
    hops.tls.push(await measureHop(options, `w8-hop-tls-${r}`, tls));
  }
  const best = (list: BenchRow[]): BenchRow => [...list].sort((x, y) => (y.eventsPerSecond ?? 0) - (x.eventsPerSecond ?? 0))[0]!;
  const runs = (list: BenchRow[]): string => list.map((x) => x.eventsPerSecond).join(", ");
  rows.push({ ...best(hops.plain), id: "W3-plain", title: "W3 in plaintext, beside W3-tls (best of the runs)", ceiling: undefined, extra: { runs: runs(hops.plain) } });
  rows.push({ ...best(hops.tls), id: "W3-tls", title: "W3 with TLS on every listener, mutual TLS on the peer link (best of the runs)", ceiling: "W3-plain", extra: { runs: runs(hops.tls) } });
  return rows;
};
