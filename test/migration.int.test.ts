import { execFileSync } from "node:child_process";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterEach, describe, expect, it } from "vitest";
import { GroupState } from "../src/delivery/group-state.js";
import { migrateRelayChannels } from "../src/delivery/migrate-relay-channels.js";
import { EventLog } from "../src/log/event-log.js";
import { collect, eventually } from "./support/collect.js";
import { linked } from "./support/mesh.js";
import { freePort } from "./support/process.js";
import { type TestSidecar, scratchDirs, startSidecar } from "./support/sidecar.js";

// test/fixtures/data-0.2.tar.gz holds the data directories of two linked sidecars as the
// 0.2.0 release left them (scripts/make-data-fixture.ts says how it was made, and what is
// in it): node-b held node-a's events o1..o10 as relay copies in the log channel
// "orders~billing", o1..o6 acked, o7 dead-lettered, o8..o10 in flight; node-a had not yet
// forwarded o11 and o12; node-b's own p1..p3 waited for the group.
const FIXTURE = fileURLToPath(new URL("./fixtures/data-0.2.tar.gz", import.meta.url));
const ids = (prefix: string, from: number, to: number): string[] => Array.from({ length: to - from + 1 }, (_, i) => `${prefix}${from + i}`);

describe("a data directory written by 0.2", () => {
  const dirs = scratchDirs();
  const running: TestSidecar[] = [];
  afterEach(async () => {
    for (const s of running.splice(0)) await s.dispose();
    await dirs.removeAll();
  });

  async function startFixture(): Promise<[TestSidecar, TestSidecar]> {
    const dir = await dirs.make();
    execFileSync("tar", ["-xzf", FIXTURE, "-C", dir]);
    const ports = [await freePort(), await freePort()];
    const peers = ports.map((p) => `127.0.0.1:${p}`);
    for (const [i, nodeId] of ["node-a", "node-b"].entries()) {
      running.push(await startSidecar({ nodeId, dataDir: join(dir, nodeId), peerListen: peers[i]!, peers, peerTimeoutMs: 5000 }));
    }
    await linked(running);
    return [running[0]!, running[1]!];
  }

  it("keeps its relay copies as events of their channel, and delivers once each what was not done", async () => {
    const [a, b] = await startFixture();
    // The relay channel's copies are events of "orders" now, and the channel is gone.
    expect(b.sidecar.log.channels().sort()).toEqual(["orders", "orders.dlq.billing"]);
    expect(b.sidecar.log.head("orders")).toMatchObject({ first: 1, last: 13 });
    // Done: o1..o7 (acked or dead-lettered). Not done: p1..p3 and the copies of o8..o10.
    expect(b.sidecar.engine.status().find((g) => g.group === "billing")).toMatchObject({ channel: "orders", backlog: 6 });

    const sub = b.client().subscribe({ channel: "orders", group: "billing", maxInFlight: 20, maxAttempts: 2 });
    const wanted = new Set([...ids("o", 8, 12), ...ids("p", 1, 3)]);
    const seen = await collect(sub, (s) => [...wanted].every((id) => s.some((d) => d.event.id === id)));
    sub.close();
    const delivered = seen.map((d) => d.event.id).sort();
    // o8..o10 were stored here and forwarded again by the restarted origin: once each, found
    // by the copies' identities carried over.
    expect(delivered).toEqual([...wanted].sort());
    const o8 = seen.find((d) => d.event.id === "o8")!;
    expect(o8.attempt).toBeGreaterThanOrEqual(2); // in flight at the stop: an attempt made
    // The origin hears that every copy is done.
    await eventually(() => a.sidecar.engine.status().find((g) => g.group === "billing")?.backlog === 0, 20_000, "node-a's billing done");
    await eventually(() => b.sidecar.engine.status().find((g) => g.group === "billing")?.backlog === 0, 20_000, "node-b's billing done");
    expect(b.sidecar.log.head("orders.dlq.billing").last).toBe(1);
  });

  it("moves the relay channel the same way again after a stop midway", async () => {
    const dir = await dirs.make();
    execFileSync("tar", ["-xzf", FIXTURE, "-C", dir]);
    // A first start that stops after the copies and their state are written, before the
    // relay channel is removed.
    const log = await EventLog.open(join(dir, "node-b"));
    const state = new GroupState(log.state);
    state.drop = () => Promise.reject(new Error("stopped"));
    await expect(migrateRelayChannels(log, state, await state.loadGroups())).rejects.toThrow("stopped");
    expect(log.head("orders").last).toBe(13);
    await log.close();
    const b = await startSidecar({ nodeId: "node-b", dataDir: join(dir, "node-b") });
    running.push(b);
    expect(b.sidecar.log.channels().sort()).toEqual(["orders", "orders.dlq.billing"]);
    expect(b.sidecar.log.head("orders")).toMatchObject({ first: 1, last: 13 });
    expect(b.sidecar.engine.status().find((g) => g.group === "billing")).toMatchObject({ channel: "orders", backlog: 6 });
  });

  it("opens the same way again after its first start", async () => {
    const [a, b] = await startFixture();
    const before = b.sidecar.log.head("orders");
    await b.restart();
    await linked([a, b]);
    expect(b.sidecar.log.channels().sort()).toEqual(["orders", "orders.dlq.billing"]);
    expect(b.sidecar.log.head("orders")).toEqual(before);
    expect(b.sidecar.engine.status().find((g) => g.group === "billing")).toMatchObject({ channel: "orders", backlog: 6 });
  });
});
