import { readFileSync } from "node:fs";
import { rm, stat, writeFile } from "node:fs/promises";
import { request } from "node:https";
import { get as plainGet } from "node:http";
import { connect as tlsConnect } from "node:tls";
import { type ChannelCredentials, Client, Metadata, type ServiceError, credentials, status } from "@grpc/grpc-js";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { Subscription } from "../src/client/index.js";
import { Reason } from "../src/contract/errors.js";
import { createLogger } from "../src/ops/logger.js";
import { TlsFiles } from "../src/security/tls-files.js";
import { defaultConfig } from "../sidecar/settings/index.js";
import { Sidecar } from "../sidecar/sidecar.js";
import { type TestCa, testCa } from "./support/certs.js";
import { eventually, take } from "./support/collect.js";
import { linked } from "./support/mesh.js";
import { freePort } from "./support/process.js";
import { RawPeer, hello } from "./support/raw-peer.js";
import { type TestSidecar, scratchDirs, startSidecar } from "./support/sidecar.js";

/**
 * TLS on every listener (docs/security.md): the service API, the peer API (mutual TLS, a
 * peer is the node its certificate names) and HTTP, and certificates rotated without a
 * restart and without dropping what is open. Real sidecars, real sockets, certificates made
 * by the same code as `weft certs`.
 */

type LogRecord = { level: string; msg: string; reason?: string };

let ca: TestCa;
let otherCa: TestCa;
const records: LogRecord[] = [];
const logger = createLogger({ level: "info", destination: { write: (line: string) => records.push(JSON.parse(line)) } });
let a: TestSidecar;
let b: TestSidecar;
const peers: RawPeer[] = [];
const subscriptions: Subscription[] = [];


const dirs = scratchDirs();
const scratch = (): Promise<string> => dirs.make();
afterAll(() => dirs.removeAll());

beforeAll(async () => {
  ca = await testCa();
  otherCa = await testCa("weft.test");
  const ports = await Promise.all([freePort(), freePort()]);
  const addresses = ports.map((p) => `127.0.0.1:${p}`);
  a = await startSidecar({ nodeId: "a", tls: await ca.node("a"), peerListen: addresses[0]!, peers: addresses, peerTimeoutMs: 2000 }, { logger });
  b = await startSidecar({ nodeId: "b", tls: await ca.node("b"), peerListen: addresses[1]!, peers: addresses, peerTimeoutMs: 2000 }, { logger });
  await linked([a, b]);
});

afterEach(() => {
  for (const p of peers.splice(0)) p.close();
  for (const s of subscriptions.splice(0)) s.close();
});

afterAll(async () => {
  await a?.dispose();
  await b?.dispose();
  for (const c of [ca, otherCa]) if (c) await rm(c.dir, { recursive: true, force: true });
});

let counter = 0;
const fresh = (what: string): string => `tls.${what}.n${++counter}`;

/** The serial number of the certificate a new TLS connection to `address` is shown. */
function serialAt(address: string): Promise<string> {
  const colon = address.lastIndexOf(":");
  return new Promise((resolve, reject) => {
    const socket = tlsConnect({ host: address.slice(0, colon), port: Number(address.slice(colon + 1)), ca: readFileSync(ca.caPath), servername: "localhost", ALPNProtocols: ["h2", "http/1.1"] }, () => {
      const serial = socket.getPeerCertificate().serialNumber;
      socket.destroy();
      resolve(serial);
    });
    socket.once("error", reject);
  });
}

/** GET `path` over HTTPS, trusting the test CA. */
function httpsGet(address: string, path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const colon = address.lastIndexOf(":");
    const req = request({ host: address.slice(0, colon), port: Number(address.slice(colon + 1)), path, ca: readFileSync(ca.caPath), servername: "localhost" }, (res) => {
      let body = "";
      res.on("data", (c: Buffer) => (body += c.toString()));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.once("error", reject);
    req.end();
  });
}

/** The status of a grpc.health.v1 Check on `address` with `secure`, without waiting for a connection. */
function healthCheck(address: string, secure: ChannelCredentials): Promise<string> {
  const client = new Client(address, secure, { "grpc.ssl_target_name_override": "localhost" });
  return new Promise<string>((resolve) => {
    client.makeUnaryRequest(
      "/grpc.health.v1.Health/Check",
      (b: Buffer) => b,
      (b: Buffer) => b,
      Buffer.alloc(0),
      new Metadata(),
      { deadline: Date.now() + 10_000 },
      (error: ServiceError | null) => resolve(status[error?.code ?? status.OK]!),
    );
  }).finally(() => client.close());
}

function rawPeer(s: TestSidecar, secure?: Parameters<typeof credentials.createSsl>): RawPeer {
  const p = new RawPeer(s.peerAddress, secure ? credentials.createSsl(...secure) : undefined);
  peers.push(p);
  return p;
}

describe("the service API over TLS", () => {
  it("serves a client that trusts the CA: publish, subscribe, ack", async () => {
    const channel = fresh("svc");
    const client = a.client({ tls: ca.client() });
    const sub = client.subscribe({ channel, group: "g", from: "earliest" });
    subscriptions.push(sub);
    await client.publishMany([{ channel, data: "one" }, { channel, data: "two" }]);
    const got = await take(sub, 2);
    expect(got.map((d) => d.text())).toEqual(["one", "two"]);
  });

  it("refuses a plaintext client and one that does not trust the sidecar's CA", async () => {
    expect(await healthCheck(a.address, credentials.createSsl(readFileSync(ca.caPath)))).toBe("OK");
    expect(await healthCheck(a.address, credentials.createInsecure())).toBe("UNAVAILABLE");
    expect(await healthCheck(a.address, credentials.createSsl(readFileSync(otherCa.caPath)))).toBe("UNAVAILABLE");
  });
});

describe("HTTP over TLS", () => {
  it("serves /readyz and /metrics over HTTPS with the sidecar's certificate", async () => {
    const ready = await httpsGet(a.sidecar.httpAddress!, "/readyz");
    expect(ready).toEqual({ status: 200, body: "ready\n" });
    const metrics = await httpsGet(a.sidecar.httpAddress!, "/metrics");
    expect(metrics.status).toBe(200);
  });

  it("does not answer plain HTTP", async () => {
    const address = a.sidecar.httpAddress!;
    const colon = address.lastIndexOf(":");
    const answered = await new Promise<number | string>((resolve) => {
      const req = plainGet({ host: address.slice(0, colon), port: Number(address.slice(colon + 1)), path: "/readyz", timeout: 5000 }, (res) => resolve(res.statusCode ?? 0));
      req.once("error", (e: NodeJS.ErrnoException) => resolve(e.code ?? "error"));
      req.once("timeout", () => req.destroy());
    });
    expect(answered).not.toBe(200);
  });
});

describe("peers over mutual TLS", () => {
  it("link and carry events, each knowing the other by its certificate", async () => {
    expect(a.sidecar.mesh.status().map((p) => [p.nodeId, p.connected])).toEqual([["b", true]]);
    const channel = fresh("mesh");
    const sub = b.client({ tls: ca.client() }).subscribe({ channel, group: "g", from: "earliest" });
    subscriptions.push(sub);
    await eventually(() => a.sidecar.mesh.status().some((p) => p.groups.includes(`${channel}!g`)), 10_000, "a forwards the group to b");
    await a.client({ tls: ca.client() }).publish({ channel, data: "across" });
    expect((await take(sub, 1)).map((d) => d.text())).toEqual(["across"]);
  });

  it("refuse a peer that shows no certificate (the handshake fails)", async () => {
    const link = rawPeer(a, [readFileSync(ca.caPath)]).link();
    link.sendHello(hello("nocert"));
    const st = await link.finished();
    expect(status[st.code]).toBe("UNAVAILABLE");
    expect(a.sidecar.mesh.status().some((p) => p.nodeId === "nocert")).toBe(false);
  });

  it("refuse a peer whose certificate another CA signed (the handshake fails)", async () => {
    const forged = await otherCa.node("forged");
    const link = rawPeer(a, [readFileSync(ca.caPath), readFileSync(forged.key), readFileSync(forged.cert)]).link();
    link.sendHello(hello("forged"));
    const st = await link.finished();
    expect(status[st.code]).toBe("UNAVAILABLE");
    expect(a.sidecar.mesh.status().some((p) => p.nodeId === "forged")).toBe(false);
  });

  it("refuse a service's certificate on the peer port with PERMISSION_DENIED (NOT_A_PEER), logged", async () => {
    const service = await ca.service("intruder");
    const link = rawPeer(a, [readFileSync(ca.caPath), readFileSync(service.key), readFileSync(service.cert)]).link();
    link.sendHello(hello("intruder"));
    const st = await link.finished();
    expect({ code: status[st.code], reason: st.reason }).toEqual({ code: "PERMISSION_DENIED", reason: Reason.NOT_A_PEER });
    expect(a.sidecar.mesh.status().some((p) => p.nodeId === "intruder")).toBe(false);
    expect(records.some((r) => r.level === "warn" && r.reason === Reason.NOT_A_PEER && r.msg.includes("refused a link"))).toBe(true);
  });

  it("refuse a hello that claims another node than the certificate names (NODE_ID_MISMATCH), logged", async () => {
    const mallory = await ca.node("mallory");
    const link = rawPeer(a, [readFileSync(ca.caPath), readFileSync(mallory.key), readFileSync(mallory.cert)]).link();
    link.sendHello(hello("b"));
    const st = await link.finished();
    expect({ code: status[st.code], reason: st.reason, field: st.field }).toEqual({ code: "PERMISSION_DENIED", reason: Reason.NODE_ID_MISMATCH, field: "hello.node_id" });
    expect(st.details).toContain("spiffe://weft.test/weft/node/mallory");
    // The real b's link is untouched.
    expect(a.sidecar.mesh.status().map((p) => [p.nodeId, p.connected])).toEqual([["b", true]]);
    expect(records.some((r) => r.level === "warn" && r.reason === Reason.NODE_ID_MISMATCH)).toBe(true);
  });

  it("refuse a second link claiming a live peer's node id (DUPLICATE_NODE_ID), logged", async () => {
    const bFiles = b.sidecar.config.tls!;
    const link = rawPeer(a, [readFileSync(ca.caPath), readFileSync(bFiles.key), readFileSync(bFiles.cert)]).link();
    link.sendHello(hello("b"));
    const st = await link.finished();
    expect({ code: status[st.code], reason: st.reason }).toEqual({ code: "PERMISSION_DENIED", reason: Reason.DUPLICATE_NODE_ID });
    expect(a.sidecar.mesh.status().map((p) => [p.nodeId, p.connected])).toEqual([["b", true]]);
  });

  it("admit a well-behaved peer with its own node certificate", async () => {
    const carol = await ca.node("carol");
    const { hello: theirs } = await rawPeer(a, [readFileSync(ca.caPath), readFileSync(carol.key), readFileSync(carol.cert)]).linkUp(hello("carol"));
    expect(theirs.nodeId).toBe("a");
    await eventually(() => a.sidecar.mesh.status().some((p) => p.nodeId === "carol" && p.connected), 10_000, "carol linked");
  });
});

describe("rotation", () => {
  it("reloads on request (SIGHUP): new connections get the new certificate, open streams and links stay", async () => {
    const channel = fresh("rotate");
    const client = a.client({ tls: ca.client() });
    const sub = client.subscribe({ channel, group: "g", from: "earliest" });
    subscriptions.push(sub);
    await client.publish({ channel, data: "before" });
    expect((await take(sub, 1)).map((d) => d.text())).toEqual(["before"]);
    const linkSince = a.sidecar.mesh.describePeers().find((p) => p.nodeId === "b")!.since;
    const before = await serialAt(a.address);
    expect(await serialAt(a.peerAddress)).toBe(before);

    await ca.node("a"); // a new key and certificate in the same files
    const result = await a.sidecar.reloadTls();
    expect(result?.changed).toBe(true);

    const after = await serialAt(a.address);
    expect(after).not.toBe(before);
    expect(await serialAt(a.peerAddress)).toBe(after);
    expect(await serialAt(a.sidecar.httpAddress!)).toBe(after);
    // The stream opened before the rotation goes on, on its old connection.
    await client.publish({ channel, data: "after" });
    expect((await take(sub, 1)).map((d) => d.text())).toEqual(["after"]);
    // So does the peer link.
    expect(a.sidecar.mesh.describePeers().find((p) => p.nodeId === "b")).toMatchObject({ connected: true, since: linkSince });
    expect(records.some((r) => r.level === "info" && r.msg.includes("TLS files reloaded (SIGHUP)"))).toBe(true);
  });

  it("reloads by itself when the files change on disk", async () => {
    const before = await serialAt(b.address);
    await ca.node("b");
    await eventually(async () => (await serialAt(b.address)) !== before, 15_000, "b serves its new certificate");
    expect(records.some((r) => r.level === "info" && r.msg.includes("TLS files reloaded (the files changed)"))).toBe(true);
  });

  it("keeps watching for one user of the files when another stops watching them", async () => {
    const paths = await ca.node("shared");
    const first = await TlsFiles.open(paths);
    const second = await TlsFiles.open(paths);
    const seen: string[] = [];
    first.watch(() => {});
    second.watch((r) => r.changed && seen.push(r.material.serial));
    first.close();
    const before = second.material.serial;
    await ca.node("shared");
    await eventually(() => seen.length > 0, 15_000, "the second user reloaded");
    expect(seen[0]).not.toBe(before);
    second.close();
  });

  it("keeps the certificate in force when the new files cannot be used, and logs why", async () => {
    const before = await serialAt(a.address);
    const files = a.sidecar.config.tls!;
    const key = readFileSync(files.key);
    await writeFile(files.key, "not a key\n");
    const result = await a.sidecar.reloadTls();
    expect(result).toMatchObject({ changed: false, error: { file: "tls.key" } });
    expect(await serialAt(a.address)).toBe(before);
    expect(records.some((r) => r.level === "error" && r.msg.includes("TLS files not reloaded") && r.msg.includes("tls.key"))).toBe(true);
    await writeFile(files.key, key);
  });

  it("refuses a rotated certificate that names another node", async () => {
    const before = await serialAt(a.address);
    const files = a.sidecar.config.tls!;
    const saved = { cert: readFileSync(files.cert), key: readFileSync(files.key) };
    const other = await ca.node("not-a");
    await writeFile(files.cert, readFileSync(other.cert));
    await writeFile(files.key, readFileSync(other.key));
    const result = await a.sidecar.reloadTls();
    expect(result).toMatchObject({ changed: false, error: { file: "tls.cert" } });
    expect(result && !result.changed && result.error?.problem).toContain("must name the same node");
    expect(await serialAt(a.address)).toBe(before);
    await writeFile(files.cert, saved.cert);
    await writeFile(files.key, saved.key);
  });
});

describe("listeners beyond loopback", () => {
  for (const setting of ["listen", "peerListen", "http"] as const) {
    it(`refuse to start with ${setting} on 0.0.0.0 without TLS, saying why, and change nothing`, async () => {
      const dataDir = `${await scratch()}/data`;
      const config = { ...defaultConfig(), dataDir, listen: "127.0.0.1:0", peerListen: "127.0.0.1:0", http: "127.0.0.1:0", [setting]: "0.0.0.0:0" };
      await expect(Sidecar.start(config, { logger })).rejects.toThrow(new RegExp(`^${setting} 0\\.0\\.0\\.0:0 is beyond loopback without TLS.*--insecure`));
      await expect(stat(dataDir)).rejects.toMatchObject({ code: "ENOENT" });
    });
  }

  it("refuse to dial peers beyond loopback without TLS, and a host that only looks like loopback", async () => {
    const config = { ...defaultConfig(), dataDir: `${await scratch()}/data`, listen: "127.0.0.1:0", peerListen: "127.0.0.1:0", http: "off", peers: ["127.0.0.1:7421", "10.77.0.5:7421"] };
    await expect(Sidecar.start(config, { logger })).rejects.toThrow(/^peers beyond loopback \(10\.77\.0\.5:7421\) would be dialed without TLS.*--insecure/);
    const dotted = { ...config, peers: [], listen: "localhost.:0" };
    await expect(Sidecar.start(dotted, { logger })).rejects.toThrow(/^listen localhost\.:0 is beyond loopback without TLS/);
  });

  it("start with --insecure, and warn that they are unauthenticated", async () => {
    const seen: LogRecord[] = [];
    const own = createLogger({ level: "info", destination: { write: (line: string) => seen.push(JSON.parse(line)) } });
    const s = await startSidecar({ peerListen: "0.0.0.0:0", insecure: true }, { logger: own });
    try {
      expect(seen.some((r) => r.level === "warn" && r.msg.startsWith("--insecure: peerListen 0.0.0.0:0 is beyond loopback without TLS"))).toBe(true);
    } finally {
      await s.dispose();
    }
  });

  it("start with TLS, without a warning", async () => {
    const seen: LogRecord[] = [];
    const own = createLogger({ level: "info", destination: { write: (line: string) => seen.push(JSON.parse(line)) } });
    const policy = { ops: { admin: [">"] } };
    const s = await startSidecar({ nodeId: "wide", tls: await ca.node("wide"), listen: "0.0.0.0:0", peerListen: "0.0.0.0:0", http: "0.0.0.0:0", policy }, { logger: own });
    try {
      expect(seen.filter((r) => r.level === "warn")).toEqual([]);
    } finally {
      await s.dispose();
    }
  });

  it("refuse a service API beyond loopback without a policy, even with TLS, saying why", async () => {
    const config = { ...defaultConfig(), dataDir: `${await scratch()}/data`, nodeId: "nopolicy", tls: await ca.node("nopolicy"), listen: "0.0.0.0:0", peerListen: "127.0.0.1:0", http: "off" };
    await expect(Sidecar.start(config, { logger })).rejects.toThrow(/^listen 0\.0\.0\.0:0 is beyond loopback without a policy: .*give a policy in the config file/);
    // The peer API alone beyond loopback needs TLS, not a policy: it serves sidecars, known by certificate.
    const peersOnly = await startSidecar({ nodeId: "peers-only", tls: await ca.node("peers-only"), peerListen: "0.0.0.0:0" }, { logger });
    await peersOnly.dispose();
  });

  it("refuse TLS files whose certificate names another node than the configured node id", async () => {
    const config = { ...defaultConfig(), dataDir: `${await scratch()}/data`, nodeId: "someone-else", tls: await ca.node("x"), listen: "127.0.0.1:0", peerListen: "127.0.0.1:0", http: "off" };
    await expect(Sidecar.start(config, { logger })).rejects.toThrow(/tls\.cert names spiffe:\/\/weft\.test\/weft\/node\/x/);
  });
});
