import { status } from "@grpc/grpc-js";
import { afterEach, describe, expect, it } from "vitest";
import { ClientError } from "../src/client/index.js";
import { createLogger } from "../src/ops/logger.js";
import { eventually, take } from "./support/collect.js";
import { RawPeer, groupInterest, hello } from "./support/raw-peer.js";
import { type TestSidecar, startSidecar } from "./support/sidecar.js";

/**
 * The sidecar's count limits on real sidecars: a request past one is refused with
 * RESOURCE_EXHAUSTED and a stable reason, nothing of it is stored or created, and what is
 * within the limits goes on working.
 */

const cleanup: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanup.splice(0).reverse()) await c();
});

async function sidecar(...args: Parameters<typeof startSidecar>): Promise<TestSidecar> {
  const t = await startSidecar(...args);
  cleanup.push(() => t.dispose());
  return t;
}

/** The error a call was refused with, as the client reports it. */
async function refusal(p: Promise<unknown>): Promise<{ code: string; reason: string; message: string }> {
  const e = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(e).toBeInstanceOf(ClientError);
  const error = e as ClientError;
  return { code: status[error.code], reason: error.reason, message: error.message };
}

/** Log records of a sidecar, parsed. */
function capture(): { records: Record<string, unknown>[]; logger: ReturnType<typeof createLogger> } {
  const records: Record<string, unknown>[] = [];
  return { records, logger: createLogger({ level: "info", destination: { write: (line: string) => void records.push(JSON.parse(line)) } }) };
}

describe("maxChannels", () => {
  it("refuses a publish or a Subscribe that would make a channel past the limit, and stores nothing of it", async () => {
    // a, b and c have events; a group with members here holds its relay channel (a~audit).
    const t = await sidecar({ maxChannels: 4 });
    const client = t.client({ source: "//limits" });
    for (const channel of ["limits.a", "limits.b", "limits.c"]) await client.publish({ channel, data: "x" });
    const sub = client.subscribe({ channel: "limits.a", group: "audit", from: "earliest" });
    await sub.subscribed();
    expect(t.sidecar.log.channelCount).toBe(4);

    const published = await refusal(client.publish({ channel: "limits.d", data: "x" }));
    expect(published).toMatchObject({ code: "RESOURCE_EXHAUSTED", reason: "TOO_MANY_CHANNELS" });
    expect(published.message).toContain("its limit (maxChannels) is 4");
    expect(published.message).toContain("raise maxChannels");
    expect(t.sidecar.log.head("limits.d").last).toBe(0);
    expect(t.sidecar.log.channels()).not.toContain("limits.d");

    const other = client.subscribe({ channel: "limits.e", group: "audit", reconnect: false });
    expect(await refusal(other.subscribed())).toMatchObject({ code: "RESOURCE_EXHAUSTED", reason: "TOO_MANY_CHANNELS" });
    expect(t.sidecar.engine.status().filter((g) => g.channel.startsWith("limits.e"))).toEqual([]);
    expect(t.sidecar.log.channelCount).toBe(4);

    // The channels held go on: a new event of one is stored and delivered.
    await client.publish({ channel: "limits.a", id: "second", data: "y" });
    const got = await take(sub, 2, (d) => d.ack());
    expect(got.map((d) => d.event.id).at(-1)).toBe("second");
    sub.close();
  });

  it("counts channels a restart loads, and refuses past them", async () => {
    const t = await sidecar({ maxChannels: 2 });
    const client = t.client();
    await client.publish({ channel: "limits.a", data: "x" });
    await client.publish({ channel: "limits.b", data: "x" });
    client.close();
    await t.restart();
    const again = t.client();
    expect(await refusal(again.publish({ channel: "limits.c", data: "x" }))).toMatchObject({ reason: "TOO_MANY_CHANNELS" });
    expect((await again.publish({ channel: "limits.b", data: "y" })).sequence).toBe(2n);
  });
});

describe("maxGroupsPerChannel", () => {
  it("refuses a Subscribe that would make a group past the limit, and creates nothing", async () => {
    const t = await sidecar({ maxGroupsPerChannel: 2 });
    const client = t.client();
    const subs = ["one", "two"].map((group) => client.subscribe({ channel: "limits.g", group }));
    await Promise.all(subs.map((s) => s.subscribed()));

    const third = client.subscribe({ channel: "limits.g", group: "three", reconnect: false });
    const refused = await refusal(third.subscribed());
    expect(refused).toMatchObject({ code: "RESOURCE_EXHAUSTED", reason: "TOO_MANY_GROUPS" });
    expect(refused.message).toContain("its limit (maxGroupsPerChannel) is 2");
    expect(t.sidecar.engine.status().map((g) => g.group).filter((g) => g === "three")).toEqual([]);
    // Neither its group nor its relay channel was made.
    expect(t.sidecar.log.channelCount).toBe(3); // limits.g, limits.g~one, limits.g~two

    // Another member of an existing group joins as before.
    const more = client.subscribe({ channel: "limits.g", group: "one" });
    await more.subscribed();
    for (const s of [...subs, more]) s.close();
  });

  it("refuses a peer's interest in a group past the limit, logs it, and creates nothing", async () => {
    const { records, logger } = capture();
    const t = await sidecar({ nodeId: "origin", maxGroupsPerChannel: 1 }, { logger });
    const peer = new RawPeer(t.peerAddress);
    cleanup.push(() => peer.close());
    const { link } = await peer.linkUp(hello("far"), { snapshot: false });
    link.sendInterest(true, [groupInterest("limits.p", "first"), groupInterest("limits.p", "second")]);

    await eventually(() => t.sidecar.engine.status().some((g) => g.group === "first"), 10_000, "the first group created");
    await eventually(
      () => records.some((r) => r.reason === "TOO_MANY_GROUPS" && String(r.msg).includes("limits.p/second")),
      10_000,
      "the refusal of the second group logged",
    );
    expect(t.sidecar.engine.status().map((g) => g.group)).toEqual(["first"]);
  });
});
