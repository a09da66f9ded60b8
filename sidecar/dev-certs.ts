import { execFile } from "node:child_process";
import { X509Certificate, randomBytes } from "node:crypto";
import { access, chmod, mkdir, mkdtemp, readFile, rename, rm, writeFile } from "node:fs/promises";
import { isIP } from "node:net";
import { join } from "node:path";
import { promisify } from "node:util";
import { isNodeId } from "../src/contract/validate.js";
import { isTrustDomain, nodeUri, serviceUri } from "../src/security/spiffe.js";

const run = promisify(execFile);

/** A DNS name a certificate may carry (a leading "*." for a wildcard). */
const DNS_NAME = /^(\*\.)?[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}))*$/;

/** A certificate and its key, as files. */
export interface CertFiles {
  cert: string;
  key: string;
}

/** A certificate that cannot be made: a bad name, a missing CA, or openssl failing. */
export class CertError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "CertError";
  }
}

/** The development CA's files in `dir`. */
export function caFiles(dir: string): CertFiles {
  return { cert: join(dir, "ca.crt"), key: join(dir, "ca.key") };
}

/**
 * Makes a development CA in `dir` (ca.crt, ca.key with mode 0600): an ECDSA P-256 key and a
 * self-signed certificate that may sign leaf certificates only (pathlen 0), carrying its
 * trust domain as the SPIFFE id spiffe://TRUST-DOMAIN. Refuses to replace a CA that is
 * there: every certificate it signed would stop being trusted.
 */
export async function makeCa(dir: string, options: { trustDomain: string; days: number }): Promise<CertFiles> {
  if (!isTrustDomain(options.trustDomain)) {
    throw new CertError(`trust domain ${JSON.stringify(options.trustDomain.slice(0, 80))} is not valid: lowercase letters, digits, '.', '-' and '_'`);
  }
  const files = caFiles(dir);
  if (await exists(files.cert)) throw new CertError(`${files.cert} exists: a CA is not replaced (every certificate it signed would stop being trusted); remove it first or use another --dir`);
  await inTemp(dir, async (tmp) => {
    const key = join(tmp, "ca.key");
    const cert = join(tmp, "ca.crt");
    await openssl([
      "req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
      "-keyout", key, "-out", cert, "-days", String(options.days),
      "-subj", `/O=Weft/CN=Weft development CA ${options.trustDomain}`,
      "-addext", "basicConstraints=critical,CA:TRUE,pathlen:0",
      "-addext", "keyUsage=critical,keyCertSign,cRLSign",
      "-addext", `subjectAltName=URI:spiffe://${options.trustDomain}`,
    ]);
    await place(key, files.key);
    await place(cert, files.cert);
  });
  return files;
}

/**
 * Makes a node certificate signed by the CA in `dir`: `node-NODE-ID.crt` and `.key`, naming
 * spiffe://TRUST-DOMAIN/weft/node/NODE-ID (the trust domain is the CA's), good for both TLS
 * server and client use, with `hosts` (and localhost, 127.0.0.1, ::1) as DNS or IP names so
 * that services can check the sidecar's host name. Replaces a certificate that is there
 * (a rotation): the key is written before the certificate, each by a rename.
 */
export async function makeNodeCert(dir: string, options: { nodeId: string; hosts?: string[]; days: number }): Promise<CertFiles> {
  if (!isNodeId(options.nodeId)) throw new CertError(`node id ${JSON.stringify(options.nodeId.slice(0, 80))} is not valid: 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit`);
  for (const h of options.hosts ?? []) {
    if (!isIP(h) && !DNS_NAME.test(h)) throw new CertError(`host ${JSON.stringify(h.slice(0, 80))} is not a DNS name or an IP address`);
  }
  const ca = await readCa(dir);
  const names = ["localhost", "127.0.0.1", "::1", ...(options.hosts ?? [])].map((h) => (isIP(h) ? `IP:${h}` : `DNS:${h}`));
  return leaf(dir, ca, `node-${options.nodeId}`, options.nodeId, [`URI:${nodeUri(ca.trustDomain, options.nodeId)}`, ...new Set(names)], options.days);
}

/**
 * Makes a service certificate signed by the CA in `dir`: `service-NAME.crt` and `.key`,
 * naming spiffe://TRUST-DOMAIN/weft/service/NAME, for TLS client use (a service showing
 * who it is to its sidecar).
 */
export async function makeServiceCert(dir: string, options: { name: string; days: number }): Promise<CertFiles> {
  if (!isNodeId(options.name)) throw new CertError(`service name ${JSON.stringify(options.name.slice(0, 80))} is not valid: 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit`);
  const ca = await readCa(dir);
  return leaf(dir, ca, `service-${options.name}`, options.name, [`URI:${serviceUri(ca.trustDomain, options.name)}`], options.days, "clientAuth");
}

interface Ca extends CertFiles {
  trustDomain: string;
}

async function readCa(dir: string): Promise<Ca> {
  const files = caFiles(dir);
  let pem: Buffer;
  try {
    pem = await readFile(files.cert);
  } catch {
    throw new CertError(`there is no CA at ${files.cert}: make one first with \`weft certs ca --dir ${dir}\``);
  }
  const domain = /URI:spiffe:\/\/([^/,\s]+)(?:,|$)/.exec(new X509Certificate(pem).subjectAltName ?? "")?.[1];
  if (!domain || !isTrustDomain(domain)) throw new CertError(`${files.cert} names no trust domain (URI SAN spiffe://TRUST-DOMAIN); it was not made by \`weft certs ca\``);
  return { ...files, trustDomain: domain };
}

async function leaf(dir: string, ca: Ca, base: string, commonName: string, sans: string[], days: number, usage = "serverAuth,clientAuth"): Promise<CertFiles> {
  const files = { cert: join(dir, `${base}.crt`), key: join(dir, `${base}.key`) };
  await inTemp(dir, async (tmp) => {
    const key = join(tmp, "leaf.key");
    const csr = join(tmp, "leaf.csr");
    const cert = join(tmp, "leaf.crt");
    const ext = join(tmp, "leaf.ext");
    await writeFile(
      ext,
      [
        "[leaf]",
        "basicConstraints=critical,CA:FALSE",
        "keyUsage=critical,digitalSignature,keyEncipherment",
        `extendedKeyUsage=${usage}`,
        `subjectAltName=${sans.join(",")}`,
        "authorityKeyIdentifier=keyid",
        "subjectKeyIdentifier=hash",
        "",
      ].join("\n"),
    );
    await openssl(["req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", csr, "-subj", `/O=Weft/CN=${commonName}`]);
    await openssl([
      "x509", "-req", "-in", csr, "-CA", ca.cert, "-CAkey", ca.key,
      "-set_serial", `0x${randomBytes(16).toString("hex").replace(/^[89a-f]/, "1")}`,
      "-days", String(days), "-out", cert, "-extfile", ext, "-extensions", "leaf",
    ]);
    await place(key, files.key);
    await place(cert, files.cert);
  });
  return files;
}

async function openssl(args: string[]): Promise<void> {
  try {
    await run("openssl", args, { timeout: 60_000 });
  } catch (e) {
    const error = e as NodeJS.ErrnoException & { stderr?: string };
    if (error.code === "ENOENT") throw new CertError("openssl is not installed (it makes the keys and certificates): install it, e.g. `apt-get install openssl`");
    throw new CertError(`openssl ${args[0]} failed: ${(error.stderr ?? error.message).trim().split("\n").slice(-3).join(" ")}`);
  }
}

/** Runs `work` with a private temporary directory inside `dir` (same file system, for renames). */
async function inTemp(dir: string, work: (tmp: string) => Promise<void>): Promise<void> {
  let tmp: string;
  try {
    await mkdir(dir, { recursive: true });
    tmp = await mkdtemp(join(dir, ".weft-certs-"));
  } catch (e) {
    throw new CertError(`cannot write in ${dir}: ${(e as Error).message}`);
  }
  try {
    await work(tmp);
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}

/** Moves a made file into place: keys 0600, certificates 0644. */
async function place(from: string, to: string): Promise<void> {
  await chmod(from, to.endsWith(".key") ? 0o600 : 0o644);
  await rename(from, to);
}

async function exists(path: string): Promise<boolean> {
  return access(path).then(
    () => true,
    () => false,
  );
}
