import { afterEach, describe, expect, it } from "vitest";
import { createLogger } from "../src/ops/logger.js";
import { eventually, settle } from "./support/collect.js";
import { linked } from "./support/mesh.js";
import { freePort } from "./support/process.js";
import { type TestSidecar, startSidecar } from "./support/sidecar.js";
import { TcpProxy } from "./support/tcp-proxy.js";

type LogRecord = { level: string; msg: string; [k: string]: unknown };

/** A logger at debug level whose records land in `records`. */
function capture(records: LogRecord[]) {
  return createLogger({ level: "debug", destination: { write: (line: string) => void records.push(JSON.parse(line) as LogRecord) } });
}

const lost = (r: LogRecord): boolean => / lost /.test(r.msg);

/**
 * A link that is up is replaced by the one the lower node id dialed. Here the new link's
 * first answer (the acceptor's hello) is held on its way, as a busy path would: the old
 * link must not end before it arrives, or the dialer takes a healthy peer for lost.
 */
describe("links between two healthy sidecars", () => {
  const started: TestSidecar[] = [];
  const proxies: TcpProxy[] = [];
  afterEach(async () => {
    for (const s of started.splice(0)) await s.dispose().catch(() => {});
    for (const p of proxies.splice(0)) await p.close();
  });

  it("hand over from the link the higher node id dialed to the lower one's, and warn about nothing", async () => {
    // b dials a directly; a dials b through a proxy that refuses until b's link is up.
    const [aPort, bPort] = [await freePort(), await freePort()];
    const proxy = await TcpProxy.start(`127.0.0.1:${bPort}`);
    proxies.push(proxy);
    proxy.pause();
    const aLog: LogRecord[] = [];
    const bLog: LogRecord[] = [];
    const a = await startSidecar({ nodeId: "a", peerListen: `127.0.0.1:${aPort}`, peers: [proxy.address], peerTimeoutMs: 30_000 }, { logger: capture(aLog) });
    started.push(a);
    const b = await startSidecar({ nodeId: "b", peerListen: `127.0.0.1:${bPort}`, peers: [`127.0.0.1:${aPort}`], peerTimeoutMs: 30_000 }, { logger: capture(bLog) });
    started.push(b);
    await linked([a, b]);

    proxy.hold();
    proxy.resume();
    await eventually(() => bLog.some((r) => r.msg === "linked with a (accepted)"), 30_000, "b took a's link");
    await settle(300); // time for b's old link to end at a, if b ended it
    expect([...aLog, ...bLog].filter(lost)).toEqual([]);
    proxy.release();
    await eventually(() => aLog.some((r) => r.msg === `linked with b at ${proxy.address} (dialed)`), 30_000, "a took its own link");
    await eventually(() => b.sidecar.mesh.describePeers().length === 1, 30_000, "b's old link ended");

    expect([...aLog, ...bLog].filter(lost)).toEqual([]);
    expect(a.sidecar.mesh.describePeers().map((p) => [p.nodeId, p.connected, p.address])).toEqual([["b", true, proxy.address]]);
    expect(b.sidecar.mesh.describePeers().map((p) => [p.nodeId, p.connected, p.address])).toEqual([["a", true, ""]]);
  });

  it("hand over to a second address of the same peer without warning", async () => {
    // a knows b by two addresses (a name that resolves twice, a host name and its IP): the
    // second becomes reachable once a's link through the first is up.
    const bPort = await freePort();
    const [first, second] = [await TcpProxy.start(`127.0.0.1:${bPort}`), await TcpProxy.start(`127.0.0.1:${bPort}`)];
    proxies.push(first, second);
    second.pause();
    const aLog: LogRecord[] = [];
    const bLog: LogRecord[] = [];
    const b = await startSidecar({ nodeId: "b", peerListen: `127.0.0.1:${bPort}`, peerTimeoutMs: 30_000 }, { logger: capture(bLog) });
    started.push(b);
    const a = await startSidecar({ nodeId: "a", peers: [first.address, second.address], peerTimeoutMs: 30_000 }, { logger: capture(aLog) });
    started.push(a);
    await linked([a, b]);

    second.hold();
    second.resume();
    await eventually(() => bLog.filter((r) => r.msg === "linked with a (accepted)").length === 2, 30_000, "b took a's second link");
    await settle(300); // time for the first link to end at a, if b ended it
    expect([...aLog, ...bLog].filter(lost)).toEqual([]);
    second.release();
    await eventually(() => aLog.some((r) => r.msg === `linked with b at ${second.address} (dialed)`), 30_000, "a took its second link");
    await eventually(() => aLog.some((r) => r.msg.startsWith(`${first.address} is b, linked already`)), 30_000, "a's first address waits");

    expect([...aLog, ...bLog].filter(lost)).toEqual([]);
    expect(a.sidecar.mesh.describePeers().map((p) => [p.nodeId, p.connected, p.address])).toEqual([["b", true, second.address]]);
  });
});
