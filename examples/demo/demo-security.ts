import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { ClientTls } from "../../src/client/index.js";
import { makeCa, makeNodeCert, makeServiceCert } from "../../sidecar/dev-certs.js";

/**
 * The demo's mesh runs as a real one would across hosts: mutual TLS between the sidecars
 * (certificates from a development CA made for the run, as `weft certs` makes them) and a
 * policy by which each service may do only its own part. One config file per sidecar holds
 * its TLS files and the policy (docs/security.md).
 */
export interface DemoSecurity {
  /** The config file of the sidecar `node`. */
  configFile(node: string): string;
  /** What the service `name` connects with: the CA, and its own certificate. */
  service(name: string): ClientTls;
  /** The policy, as the narration tells it. */
  readonly summary: string;
  /** Removes the certificates and config files. Idempotent. */
  remove(): void;
}

/**
 * Makes a CA, a certificate per node and per service, and a config file per node whose
 * policy lets `publisher` publish to `channel` and each group subscribe to it as itself.
 */
export async function demoSecurity(nodes: string[], publisher: string, groups: string[], channel: string): Promise<DemoSecurity> {
  const dir = await mkdtemp(join(tmpdir(), "weft-demo-certs-"));
  try {
    await makeCa(dir, { trustDomain: "weft.demo", days: 30 });
    const policy = [
      "policy:",
      `  ${publisher}:`,
      `    publish: [${channel}]`,
      ...groups.flatMap((g) => [`  ${g}:`, `    subscribe: [${channel}/${g}]`]),
    ].join("\n");
    const configs = new Map<string, string>();
    for (const node of nodes) {
      const files = await makeNodeCert(dir, { nodeId: node, days: 30 });
      const path = join(dir, `${node}.yaml`);
      writeFileSync(path, `tls:\n  cert: ${files.cert}\n  key: ${files.key}\n  ca: ${join(dir, "ca.crt")}\n${policy}\n`);
      configs.set(node, path);
    }
    const services = new Map<string, ClientTls>();
    for (const name of [publisher, ...groups]) {
      const files = await makeServiceCert(dir, { name, days: 30 });
      // Node certificates name localhost: the services check that name, not the IP they dial.
      services.set(name, { ca: readFileSync(join(dir, "ca.crt")), cert: readFileSync(files.cert), key: readFileSync(files.key), serverName: "localhost" });
    }
    return {
      configFile: (node) => configs.get(node)!,
      service: (name) => services.get(name)!,
      summary: `${publisher} may publish to ${channel}; ${groups.map((g) => `${g} may read it as group ${g}`).join(", ")}`,
      remove: () => rmSync(dir, { recursive: true, force: true }),
    };
  } catch (e) {
    rmSync(dir, { recursive: true, force: true });
    throw e;
  }
}
