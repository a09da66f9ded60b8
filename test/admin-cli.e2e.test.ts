import { type ChildProcess, spawn } from "node:child_process";
import { rm } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Delivery, type Subscription, type WeftClient, connect } from "../src/client/index.js";
import { collect, eventually } from "./support/collect.js";
import { type SidecarProcess, WEFT_BIN, freePort, spawnSidecar } from "./support/process.js";
import { tempDir } from "./support/sidecar.js";
import { SOFTWARE_VERSION } from "../sidecar/version.js";

// The operator commands as a user runs them: `weft channels|groups|peers|dlq|stats`
// through sidecar/bin/weft.js, against real `weft sidecar` processes in a mesh of two.
// Each `weft` is a process start (about a second): the tests have long timeouts.

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const children = new Set<ChildProcess>();

interface Result {
  code: number | string;
  stdout: string;
  stderr: string;
}

/** The environment of a child: ours without WEFT_ settings. */
function childEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith("WEFT_") && k !== "GRPC_VERBOSITY") env[k] = v;
  return env;
}

/** Starts `weft ARGS`; `result` resolves once it has exited. */
function start(args: string[]): { child: ChildProcess; stdout: () => string; result: Promise<Result> } {
  const child = spawn(process.execPath, [WEFT_BIN, ...args], { cwd: ROOT, env: childEnv(), stdio: ["ignore", "pipe", "pipe"] });
  children.add(child);
  let stdout = "";
  let stderr = "";
  child.stdout!.setEncoding("utf8").on("data", (s: string) => (stdout += s));
  child.stderr!.setEncoding("utf8").on("data", (s: string) => (stderr += s));
  const result = new Promise<Result>((resolve) => child.on("close", (code, signal) => resolve({ code: code ?? signal ?? "unknown", stdout, stderr })));
  return { child, stdout: () => stdout, result };
}

/** Runs `weft ARGS` to completion. */
const weft = (args: string[]): Promise<Result> => start(args).result;

/** Runs `weft ARGS --json`, expects exit 0, and parses its one JSON document. */
async function weftJson<T = Record<string, unknown>>(args: string[]): Promise<T> {
  const r = await weft([...args, "--json"]);
  expect(r.code, r.stderr).toBe(0);
  return JSON.parse(r.stdout) as T;
}

const lines = (text: string): string[] => text.split("\n").filter((l) => l !== "");

interface DeadLetterJson {
  sequence: number;
  time: string;
  id: string;
  data: string;
  attributes: Record<string, string>;
}

describe("weft channels, groups, peers, dlq and stats against running sidecars", () => {
  const channel = "shop.orders";
  const dlq = `${channel}.dlq.billing`;
  let a: SidecarProcess;
  let b: SidecarProcess;
  let client: WeftClient;
  let billing: Subscription;
  const dirs: string[] = [];
  /** Every delivery billing's handler saw; it nacks "poison" (max attempts 1: dead-lettered at once). */
  const seen: Delivery[] = [];
  let billingDone: Promise<unknown>;

  beforeAll(async () => {
    dirs.push(await tempDir("weft-admin-cli-"), await tempDir("weft-admin-cli-"));
    const [pa, pb, peerA, peerB] = await Promise.all([freePort(), freePort(), freePort(), freePort()]);
    const peers = `127.0.0.1:${peerA},127.0.0.1:${peerB}`;
    [a, b] = await Promise.all([
      spawnSidecar(dirs[0]!, pa, ["--node-id", "cli-a", "--peer-listen", `127.0.0.1:${peerA}`, "--peers", peers]),
      spawnSidecar(dirs[1]!, pb, ["--node-id", "cli-b", "--peer-listen", `127.0.0.1:${peerB}`, "--peers", peers]),
    ]);
    client = connect(a.address);
    billing = client.subscribe({ channel, group: "billing", from: "earliest", maxAttempts: 1 });
    await billing.subscribed();
    billingDone = collect(
      billing,
      () => false,
      (d) => {
        seen.push(d);
        if (d.text() === "poison" && d.event.attributes["weft.redrive.from"] === undefined) d.nack();
        else if (d.text() === "poison-2") d.nack();
        else d.ack();
      },
      600_000,
    ).catch(() => {});
  });

  afterAll(async () => {
    billing?.close();
    await billingDone;
    client?.close();
    for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
    await Promise.all([a?.terminate(), b?.terminate()]);
    await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
  });

  it("dead-letters an event, lists it with --json and as a table, redrives it to its group, purges another", async () => {
    const published = await weft(["publish", channel, "--to", a.address, "--data", "x", "--count", "2"]);
    expect(published.code, published.stderr).toBe(0);
    expect((await weft(["publish", channel, "--to", a.address, "--data", "poison", "--id", "poison-1"])).code).toBe(0);
    expect((await weft(["publish", channel, "--to", a.address, "--data", "y", "--count", "2"])).code).toBe(0);
    const audit = await weft(["subscribe", channel, "--group", "audit", "--to", a.address, "--from", "earliest", "--count", "5"]);
    expect(audit.code, audit.stderr).toBe(0);
    await eventually(() => seen.length === 5, 20_000, "billing saw 5 events");

    // The dead letter, listed for scripts...
    let listed: { channel: string; group: string; deadLetterChannel: string; deadLetters: DeadLetterJson[]; nextAfter: number } | undefined;
    await eventually(async () => {
      const page = await weftJson<NonNullable<typeof listed>>(["dlq", "list", channel, "billing", "--to", a.address]);
      listed = page;
      return page.deadLetters.length === 1;
    }, 20_000, "the dead letter listed");
    expect(listed!).toMatchObject({ channel, group: "billing", deadLetterChannel: dlq, nextAfter: 0 });
    const [dead] = listed!.deadLetters;
    expect(dead).toMatchObject({ sequence: 1, id: "poison-1", data: "poison" });
    expect(dead!.attributes).toMatchObject({
      "weft.dead_letter.reason": "max_attempts",
      "weft.dead_letter.attempts": "1",
      "weft.dead_letter.channel": channel,
      "weft.dead_letter.group": "billing",
      "weft.dead_letter.sequence": "3",
    });
    expect(Number.isNaN(Date.parse(dead!.time))).toBe(false);
    // ...and for people.
    const table = await weft(["dlq", "list", channel, "billing", "--to", a.address]);
    expect(table.code).toBe(0);
    const [header, row] = lines(table.stdout);
    expect(header).toMatch(/^SEQ\s+DEAD-LETTERED\s+ATTEMPTS\s+ORIGINAL\s+ID\s+KEY\s+WHY$/);
    expect(row).toMatch(new RegExp(`^\\s*1\\s+\\d{4}-\\d\\d-\\d\\dT[\\d:]+Z\\s+1\\s+${channel.replace(".", "\\.")}#3\\s+poison-1\\s+-\\s+1 of 1 attempts made; the last was nacked$`));

    // Redrive: billing receives it again (and acks it this time).
    const redrive = await weft(["dlq", "redrive", channel, "billing", "--to", a.address]);
    expect(redrive.code, redrive.stderr).toBe(0);
    expect(lines(redrive.stdout)).toEqual([`dead letter #1 -> ${channel} #6`, `redrove 1 dead letter to ${channel}/billing`]);
    await eventually(() => seen.length === 6, 20_000, "billing received the redriven event");
    const again = seen[5]!;
    expect([again.event.id, again.text(), again.attempt, again.sequence]).toEqual(["poison-1", "poison", 1, 6n]);
    expect(again.event.attributes).toEqual({ "weft.redrive.group": "billing", "weft.redrive.from": `${dlq}#1` });
    expect((await weftJson<{ deadLetters: unknown[] }>(["dlq", "list", channel, "billing", "--to", a.address])).deadLetters).toEqual([]);

    // Another dead letter, purged by naming the dead-letter channel alone.
    expect((await weft(["publish", channel, "--to", a.address, "--data", "poison-2"])).code).toBe(0);
    await eventually(async () => (await weftJson<{ deadLetters: unknown[] }>(["dlq", "list", dlq, "--to", a.address])).deadLetters.length === 1, 20_000, "second dead letter");
    expect(await weftJson(["dlq", "purge", dlq, "--to", a.address])).toEqual({ channel, group: "billing", purged: 1 });
    expect((await weftJson<{ deadLetters: unknown[] }>(["dlq", "list", channel, "billing", "--to", a.address])).deadLetters).toEqual([]);
    const purgeAgain = await weft(["dlq", "purge", channel, "billing", "--to", a.address]);
    expect(purgeAgain).toMatchObject({ code: 0, stdout: `purged 0 dead letters of ${channel}/billing\n` });
  }, 180_000);

  it("shows channels, groups, peers and the four counters as JSON that matches the traffic", async () => {
    // Known so far at A: 6 events published (5, then poison-2), 1 redriven; 2 dead letters.
    const channels = await weftJson<{ node: string; channels: Record<string, unknown>[] }>(["channels", "--to", a.address]);
    expect(channels.node).toBe("cli-a");
    expect(channels.channels.map((c) => c.channel)).toEqual([channel, dlq]);
    expect(channels.channels[0]).toMatchObject({ channel, events: 7, oldestSequence: 1, newestSequence: 7, expired: 0, relays: [], deadLettersOf: [] });
    expect(channels.channels[0]!.groups).toEqual([
      { group: "audit", backlog: 1, inFlight: 0, members: 0 }, // poison-2 waits for it; the redriven event was billing's only
      { group: "billing", backlog: 0, inFlight: 0, members: 1 },
    ]);
    expect(channels.channels[1]).toMatchObject({ channel: dlq, events: 2, deadLettersOf: [{ channel, group: "billing" }] });

    const groups = await weftJson<{ node: string; channel: string; groups: Record<string, unknown>[] }>(["groups", channel, "--to", a.address]);
    expect(groups.groups.map((g) => g.group)).toEqual(["audit", "billing"]);
    expect(groups.groups[0]).toMatchObject({ ackedThrough: 6, backlog: 1, localMembers: 0, maxAttempts: 5, deadLetterChannel: `${channel}.dlq.audit`, deadLetters: 0 });
    expect(groups.groups[1]).toMatchObject({ ackedThrough: 7, backlog: 0, localMembers: 1, remoteMembers: 0, maxAttempts: 1, deadLetterChannel: dlq, deadLetters: 0 });
    const groupsTable = await weft(["groups", channel, "--to", a.address]);
    expect(lines(groupsTable.stdout)[0]).toMatch(/^GROUP\s+CURSOR\s+BACKLOG\s+IN FLIGHT\s+MEMBERS\s+MAX ATTEMPTS\s+DEAD LETTERS\s+DEAD-LETTER CHANNEL/);
    expect(lines(groupsTable.stdout)[2]).toMatch(/^billing\s+7\s+0\s+0\s+1 here\s+1\s+0\s+shop\.orders\.dlq\.billing/);

    await eventually(async () => {
      const p = await weftJson<{ peers: { connected: boolean }[] }>(["peers", "--to", a.address]);
      return p.peers.length === 1 && p.peers[0]!.connected;
    }, 20_000, "A linked with B");
    const peers = await weftJson<{ node: string; peers: Record<string, unknown>[] }>(["peers", "--to", a.address]);
    expect(peers.node).toBe("cli-a");
    expect(peers.peers[0]).toMatchObject({ node: "cli-b", connected: true, softwareVersion: SOFTWARE_VERSION, inFlight: 0 });
    expect(lines((await weft(["peers", "--to", b.address])).stdout)[1]).toMatch(/^cli-a\s+connected\s+\S+Z\s+/);

    const stats = await weftJson<{ node: string; intervalMs: number; perSecond: Record<string, number>; totals: Record<string, number> }>(["stats", "--to", a.address, "--interval", "200ms"]);
    expect(stats.node).toBe("cli-a");
    expect(stats.intervalMs).toBeGreaterThanOrEqual(150);
    expect(Object.keys(stats.perSecond)).toEqual(["published", "stored", "forwarded", "acked"]);
    // Stored: 6 published + 2 dead letters + 1 redriven. Acked: audit 5; billing 4 + the redriven one.
    expect(stats.totals).toEqual({ published: 6, stored: 9, forwarded: 0, acked: 10 });
    const statsTable = await weft(["stats", "--to", a.address, "--interval", "200ms"]);
    expect(lines(statsTable.stdout)[1]).toMatch(/^\s+PUBLISHED\s+STORED\s+FORWARDED\s+ACKED$/);
    expect(lines(statsTable.stdout)[3]).toMatch(/^total\s+6\s+9\s+0\s+10$/);
  }, 180_000);

  it("watches the rates move every interval until Ctrl-C", async () => {
    const watch = start(["stats", "--to", a.address, "--watch", "--interval", "300ms", "--json"]);
    // Publish until a reading shows events published per second.
    let readings: { perSecond: { published: number; stored: number } }[] = [];
    await eventually(async () => {
      await weft(["publish", "watch.events", "--to", a.address, "--data", "w", "--count", "20"]);
      readings = lines(watch.stdout()).map((l) => JSON.parse(l) as (typeof readings)[number]);
      return readings.some((r) => r.perSecond.published > 0);
    }, 30_000, "a reading with publishes");
    expect(readings.find((r) => r.perSecond.published > 0)!.perSecond.stored).toBeGreaterThan(0);
    watch.child.kill("SIGINT");
    const done = await watch.result;
    expect(done.code, done.stderr).toBe(0);

    const human = start(["stats", "--to", a.address, "--watch", "--interval", "200ms"]);
    await eventually(() => lines(human.stdout()).length >= 3, 20_000, "two watch lines");
    human.child.kill("SIGTERM");
    expect((await human.result).code).toBe(0);
    const [header, first] = lines(human.stdout());
    expect(header).toMatch(/^TIME\s+PUBLISHED\/S\s+STORED\/S\s+FORWARDED\/S\s+ACKED\/S\s+\(node cli-a\)$/);
    expect(first).toMatch(/^\d\d:\d\d:\d\d\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+[\d.]+$/);
  }, 120_000);

  it("refuses bad input with exit 2, and what the sidecar refuses with exit 1 and its reason", async () => {
    const badName = await weft(["groups", "Not A Channel", "--to", a.address]);
    expect(badName.code).toBe(2);
    const noChannel = await weft(["groups", "no.such.channel", "--to", a.address]);
    expect(noChannel.code).toBe(1);
    expect(noChannel.stderr).toMatch(/^error: CHANNEL_NOT_FOUND: this sidecar has no events, relay copies or groups of channel "no\.such\.channel"/);
    const noGroup = await weft(["dlq", "list", channel, "nobody", "--to", a.address]);
    expect(noGroup.code).toBe(1);
    expect(noGroup.stderr).toContain("GROUP_NOT_FOUND");
    const notPending = await weft(["dlq", "redrive", channel, "billing", "--sequence", "1", "--to", a.address]);
    expect(notPending.code).toBe(1);
    expect(notPending.stderr).toContain(`DEAD_LETTER_NOT_FOUND: ${dlq}#1 is not a pending dead letter`);
    const notDlq = await weft(["dlq", "list", channel, "--to", a.address]);
    expect(notDlq.code).toBe(2);
    expect(notDlq.stderr).toContain(`${channel} is not a dead-letter channel at this sidecar`);
    const badSequence = await weft(["dlq", "purge", channel, "billing", "--sequence", "0", "--to", a.address]);
    expect(badSequence.code).toBe(2);
    const nobody = await weft(["channels", "--to", `127.0.0.1:${await freePort()}`, "--timeout", "500ms"]);
    expect(nobody.code).toBe(1);
    expect(nobody.stderr).toContain("the connection was refused");
  }, 120_000);
});
