import { X509Certificate, createPrivateKey } from "node:crypto";
import { unwatchFile, watchFile } from "node:fs";
import { open } from "node:fs/promises";
import type { experimental } from "@grpc/grpc-js";
import { type WeftIdentity, identityOf } from "./spiffe.js";

/** The three files a sidecar's TLS comes from. */
export interface TlsPaths {
  /** This sidecar's certificate (PEM), intermediates after it; names a node (spiffe://TD/weft/node/ID). */
  cert: string;
  /** The certificate's private key (PEM). */
  key: string;
  /** The certificates of the authorities that sign peers' and services' certificates (PEM). */
  ca: string;
}

/** What the three files held when last read, checked. */
export interface TlsMaterial {
  cert: Buffer;
  key: Buffer;
  ca: Buffer;
  /** The node the certificate names. */
  identity: WeftIdentity;
  /** The certificate's serial number, hex, for logs. */
  serial: string;
  /** When the certificate expires. */
  notAfter: Date;
}

/** Which of the files a problem is with, as the config file spells the setting. */
export type TlsFile = "tls.cert" | "tls.key" | "tls.ca";

/** A TLS file that cannot be used: which, where, and what is wrong with it. */
export class TlsFileError extends Error {
  constructor(
    readonly file: TlsFile,
    readonly path: string,
    /** What is wrong and what is wanted, without the file. */
    readonly problem: string,
  ) {
    super(`${file} ${path}: ${problem}`);
    this.name = "TlsFileError";
  }
}

/** A PEM file larger than this is refused: certificates and keys are a few KiB. */
const MAX_PEM_BYTES = 1024 * 1024;

/** How often the files' metadata is polled for a change, ms. */
const WATCH_INTERVAL_MS = 1000;
/** A change is read this long after the last one seen, so that a cert and its key written one after the other are read together, ms. */
const SETTLE_MS = 300;

/**
 * Reads and checks the three files: one or more certificates in `cert`, the first of which
 * is this sidecar's, naming a node by its SPIFFE id, in force now, signed (directly or
 * through the intermediates after it) by a certificate of `ca`; the private key of that
 * certificate in `key`.
 * @throws TlsFileError naming the first file that cannot be used and why.
 */
export async function readTlsFiles(paths: TlsPaths, now = new Date()): Promise<TlsMaterial> {
  const [cert, key, ca] = await Promise.all([readPem("tls.cert", paths.cert), readPem("tls.key", paths.key), readPem("tls.ca", paths.ca)]);
  const chain = certificates("tls.cert", paths.cert, cert);
  const authorities = certificates("tls.ca", paths.ca, ca);
  const leaf = chain[0]!;
  const fail = (file: TlsFile, problem: string): never => {
    throw new TlsFileError(file, paths[file.slice(4) as keyof TlsPaths], problem);
  };
  if (new Date(leaf.validTo) < now) fail("tls.cert", `the certificate expired on ${new Date(leaf.validTo).toISOString()}; renew it (weft certs node)`);
  if (new Date(leaf.validFrom) > now) fail("tls.cert", `the certificate is not valid before ${new Date(leaf.validFrom).toISOString()} (is this machine's clock right?)`);
  let privateKey;
  try {
    privateKey = createPrivateKey(key);
  } catch (e) {
    return fail("tls.key", `is not a PEM private key (${(e as Error).message})`);
  }
  if (!leaf.checkPrivateKey(privateKey)) fail("tls.key", `is not the private key of the certificate in ${paths.cert}`);
  if (!authorities.some((a) => a.ca)) fail("tls.ca", "holds no CA certificate (basicConstraints CA:TRUE)");
  if (!signedBy(leaf, chain.slice(1), authorities)) {
    fail("tls.cert", `the certificate is not signed by a certificate in ${paths.ca} (tls.ca), directly or through the intermediates after it`);
  }
  const identity = identityOf(leaf.subjectAltName);
  if (typeof identity === "string") return fail("tls.cert", `${identity}; a sidecar's certificate names its node (weft certs node makes one)`);
  if (identity.kind !== "node") fail("tls.cert", `names the service ${identity.uri}; a sidecar's certificate names its node: spiffe://${identity.trustDomain}/weft/node/NODE-ID`);
  return { cert, key, ca, identity, serial: leaf.serialNumber, notAfter: new Date(leaf.validTo) };
}

/**
 * A sidecar's TLS files, kept current: re-read when they change on disk (polled each
 * second) or when `reload()` is called (on SIGHUP). A read that fails keeps the files in
 * force, and so does one whose certificate names another node: a rotation never changes
 * who the sidecar is. Listeners (the gRPC servers and the peer dialer, through grpc-js's
 * certificate provider interface, and the HTTP listener) get the new material at once;
 * connections already open keep the keys they were made with, so nothing open is dropped.
 */
export class TlsFiles implements experimental.CertificateProvider {
  private readonly caListeners = new Set<experimental.CaCertificateUpdateListener>();
  private readonly identityListeners = new Set<experimental.IdentityCertificateUpdateListener>();
  private readonly changeListeners = new Set<(material: TlsMaterial) => void>();
  private reading: Promise<ReloadResult> | undefined;
  /** A change seen while a read was under way: read once more after it. */
  private stale = false;
  private settle: NodeJS.Timeout | undefined;
  private changed: (() => void) | undefined;

  private constructor(
    readonly paths: TlsPaths,
    private current: TlsMaterial,
  ) {}

  /** Reads the files. @throws TlsFileError when one cannot be used. */
  static async open(paths: TlsPaths): Promise<TlsFiles> {
    return new TlsFiles(paths, await readTlsFiles(paths));
  }

  /** The material in force. */
  get material(): TlsMaterial {
    return this.current;
  }

  /**
   * Reads the files again and puts them in force if they are usable, changed, and name the
   * same node. Calls made while a read is under way share it.
   */
  reload(): Promise<ReloadResult> {
    if (this.reading) {
      this.stale = true;
      return this.reading;
    }
    this.reading = (async () => {
      let result = await this.read();
      // Files written while they were being read are read again, so the last write is in force.
      while (this.stale) {
        this.stale = false;
        const again = await this.read();
        if (again.changed || again.error) result = again;
      }
      return result;
    })().finally(() => (this.reading = undefined));
    return this.reading;
  }

  /** Polls the files for changes and reloads after each; `report` is told every outcome. */
  watch(report: (result: ReloadResult) => void): void {
    if (this.changed) return;
    this.changed = (): void => {
      clearTimeout(this.settle);
      this.settle = setTimeout(() => void this.reload().then(report), SETTLE_MS);
      this.settle.unref();
    };
    for (const path of this.pathList()) watchFile(path, { interval: WATCH_INTERVAL_MS, persistent: false }, this.changed);
  }

  /** Stops watching the files and telling listeners. Idempotent. */
  close(): void {
    clearTimeout(this.settle);
    this.changeListeners.clear();
    const changed = this.changed;
    if (!changed) return;
    this.changed = undefined;
    for (const path of this.pathList()) unwatchFile(path, changed);
  }

  /** Told each time new material is put in force. */
  onChange(listener: (material: TlsMaterial) => void): void {
    this.changeListeners.add(listener);
  }

  // ---- grpc-js's CertificateProvider ----
  // A new listener is told the material in force on the next microtask, not within the
  // call: grpc-js registers its own watcher only after adding the listener.

  addCaCertificateListener(listener: experimental.CaCertificateUpdateListener): void {
    this.caListeners.add(listener);
    queueMicrotask(() => {
      if (this.caListeners.has(listener)) listener({ caCertificate: this.current.ca });
    });
  }
  removeCaCertificateListener(listener: experimental.CaCertificateUpdateListener): void {
    this.caListeners.delete(listener);
  }
  addIdentityCertificateListener(listener: experimental.IdentityCertificateUpdateListener): void {
    this.identityListeners.add(listener);
    queueMicrotask(() => {
      if (this.identityListeners.has(listener)) listener({ certificate: this.current.cert, privateKey: this.current.key });
    });
  }
  removeIdentityCertificateListener(listener: experimental.IdentityCertificateUpdateListener): void {
    this.identityListeners.delete(listener);
  }

  private async read(): Promise<ReloadResult> {
    let next: TlsMaterial;
    try {
      next = await readTlsFiles(this.paths);
    } catch (e) {
      if (e instanceof TlsFileError) return { changed: false, error: e };
      throw e;
    }
    const was = this.current;
    if (next.cert.equals(was.cert) && next.key.equals(was.key) && next.ca.equals(was.ca)) return { changed: false };
    if (next.identity.uri !== was.identity.uri) {
      const problem = `names ${next.identity.uri}, not ${was.identity.uri}: a rotated certificate must name the same node (restart the sidecar to change its identity)`;
      return { changed: false, error: new TlsFileError("tls.cert", this.paths.cert, problem) };
    }
    this.current = next;
    for (const l of this.caListeners) l({ caCertificate: next.ca });
    for (const l of this.identityListeners) l({ certificate: next.cert, privateKey: next.key });
    for (const l of this.changeListeners) l(next);
    return { changed: true, material: next };
  }

  private pathList(): string[] {
    return [...new Set([this.paths.cert, this.paths.key, this.paths.ca])];
  }
}

/** What a reload did: put new material in force, found nothing new, or kept the old because the files cannot be used. */
export type ReloadResult = { changed: true; material: TlsMaterial } | { changed: false; error?: TlsFileError };

async function readPem(file: TlsFile, path: string): Promise<Buffer> {
  let handle;
  try {
    handle = await open(path, "r");
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    const problem = code === "ENOENT" ? "does not exist" : code === "EACCES" || code === "EPERM" ? "cannot be read (permission denied)" : `cannot be read: ${(e as Error).message}`;
    throw new TlsFileError(file, path, problem);
  }
  try {
    const stat = await handle.stat();
    if (!stat.isFile()) throw new TlsFileError(file, path, "is not a regular file; pass a PEM file");
    if (stat.size > MAX_PEM_BYTES) throw new TlsFileError(file, path, `is ${stat.size} bytes; a PEM file here may be at most 1 MiB`);
    return await handle.readFile();
  } catch (e) {
    if (e instanceof TlsFileError) throw e;
    throw new TlsFileError(file, path, `cannot be read: ${(e as Error).message}`);
  } finally {
    await handle.close();
  }
}

/** Every certificate in a PEM bundle, in order; at least one. */
function certificates(file: TlsFile, path: string, pem: Buffer): X509Certificate[] {
  const blocks = pem.toString("latin1").match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
  if (blocks.length === 0) throw new TlsFileError(file, path, "holds no PEM certificate (-----BEGIN CERTIFICATE-----)");
  return blocks.map((block, i) => {
    try {
      return new X509Certificate(block);
    } catch (e) {
      throw new TlsFileError(file, path, `certificate ${i + 1} cannot be read: ${(e as Error).message}`);
    }
  });
}

/** True when `leaf` is signed by one of `authorities`, directly or through `intermediates`. */
function signedBy(leaf: X509Certificate, intermediates: X509Certificate[], authorities: X509Certificate[]): boolean {
  let current = leaf;
  const issued = (by: X509Certificate): boolean => current.checkIssued(by) && current.verify(by.publicKey);
  for (let depth = 0; depth <= intermediates.length; depth++) {
    if (authorities.some(issued)) return true;
    const next = intermediates.find(issued);
    if (!next) return false;
    current = next;
  }
  return false;
}
