import { readFileSync } from "node:fs";
import { join } from "node:path";
import type { ClientTls } from "../../src/client/index.js";
import type { TlsPaths } from "../../src/security/tls-files.js";
import { type CertFiles, makeCa, makeNodeCert, makeServiceCert } from "../../sidecar/dev-certs.js";
import { tempDir } from "./sidecar.js";

/** A development CA in a temp dir (made by the same code as `weft certs`), and certificates from it. */
export interface TestCa {
  dir: string;
  trustDomain: string;
  /** The CA certificate's path. */
  caPath: string;
  /**
   * Makes (or, called again, rotates) the certificate of node `nodeId`, naming `hosts` (DNS
   * names or IPs) besides localhost; returns the sidecar's TLS setting.
   */
  node(nodeId: string, hosts?: string[]): Promise<TlsPaths>;
  /** Makes the certificate of service `name`. */
  service(name: string): Promise<CertFiles>;
  /** TLS for a client of a sidecar's service API: this CA, and a service certificate if given. */
  client(service?: CertFiles): ClientTls;
}

export async function testCa(trustDomain = "weft.test"): Promise<TestCa> {
  const dir = await tempDir("weft-ca-");
  await makeCa(dir, { trustDomain, days: 30 });
  const caPath = join(dir, "ca.crt");
  return {
    dir,
    trustDomain,
    caPath,
    async node(nodeId, hosts = []) {
      const files = await makeNodeCert(dir, { nodeId, hosts, days: 30 });
      return { cert: files.cert, key: files.key, ca: caPath };
    },
    service: (name) => makeServiceCert(dir, { name, days: 30 }),
    client: (service) => ({
      ca: readFileSync(caPath),
      ...(service ? { cert: readFileSync(service.cert), key: readFileSync(service.key) } : {}),
    }),
  };
}
