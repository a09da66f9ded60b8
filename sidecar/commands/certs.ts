import { CertError, makeCa, makeNodeCert, makeServiceCert } from "../dev-certs.js";
import { CommandError, usage } from "./arguments.js";
import { writeLine } from "./output.js";

/** The options of `weft certs`, as commander parses them. */
export interface CertsOptions {
  dir: string;
  trustDomain: string;
  host?: string;
  days?: number;
}

/**
 * `weft certs ca|node NODE-ID|service NAME`: makes a development CA, or a certificate signed
 * by it, and prints the files written, one per line.
 * @returns the exit status.
 * @throws CommandError for a bad argument, a missing CA, or openssl failing.
 */
export async function certsCommand(what: string, name: string | undefined, o: CertsOptions): Promise<number> {
  if (what !== "ca" && what !== "node" && what !== "service") throw usage(`${JSON.stringify(what.slice(0, 40))} is not something weft certs makes; use ca, node NODE-ID or service NAME`);
  if (what === "ca" && name !== undefined) throw usage("weft certs ca takes no name (set its trust domain with --trust-domain)");
  if (what !== "ca" && name === undefined) throw usage(`weft certs ${what} needs a name: weft certs ${what} ${what === "node" ? "NODE-ID" : "NAME"}`);
  if (what !== "node" && o.host !== undefined) throw usage("--host is for node certificates");
  try {
    const files =
      what === "ca"
        ? await makeCa(o.dir, { trustDomain: o.trustDomain, days: o.days ?? 365 })
        : what === "node"
          ? await makeNodeCert(o.dir, { nodeId: name!, hosts: o.host?.split(",").map((h) => h.trim()).filter(Boolean), days: o.days ?? 90 })
          : await makeServiceCert(o.dir, { name: name!, days: o.days ?? 90 });
    await writeLine(files.cert);
    await writeLine(files.key);
    return 0;
  } catch (e) {
    if (e instanceof CertError) throw new CommandError(e.message);
    throw e;
  }
}
