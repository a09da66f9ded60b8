import { status } from "@grpc/grpc-js";
import { afterEach, describe, expect, it } from "vitest";
import { AdminClient } from "../src/client/index.js";
import { Reason } from "../src/contract/errors.js";
import { MAX_SEQUENCE, MAX_TIME_MS } from "../src/contract/ranges.js";
import { EventLog } from "../src/log/event-log.js";
import { StartPosition_Kind } from "../src/gen/weft/v1/mesh_pb.js";
import { createLogger } from "../src/ops/logger.js";
import { eventually } from "./support/collect.js";
import { linked, restartMesh, roundTrip, startMesh } from "./support/mesh.js";
import { RawMeshConnection, type RawSubscribe } from "./support/raw-client.js";
import { RawPeer, groupInterest, hello } from "./support/raw-peer.js";
import type { TestSidecar } from "./support/sidecar.js";
import { type GroupRecord, GroupState } from "../src/delivery/group-state.js";

/**
 * Nothing a sidecar stores can fail to encode later. A group's start position goes into
 * every interest snapshot the sidecar sends: one that cannot be encoded (a start time of
 * 2^63 - 1 seconds is 2^63 * 1000 ms, past int64) would end every link of the sidecar in its
 * handshake, for good, across restarts. So a start out of range is refused before anything
 * is stored, from a subscriber and from a peer; and a group stored out of range anyway (by
 * an older release) is clamped or skipped, with an error logged, when it is encoded.
 */

const INT64_MAX = 2n ** 63n - 1n;
const POISON = { kind: StartPosition_Kind.TIME, time: { seconds: INT64_MAX, nanos: 0 } };

const started: TestSidecar[] = [];
const closing: { close(): void }[] = [];
afterEach(async () => {
  for (const c of closing.splice(0)) c.close();
  for (const s of started.splice(0)) await s.dispose();
});

async function mesh(names: string[], overrides: Parameters<typeof startMesh>[1] = {}, options: Parameters<typeof startMesh>[2] = {}): Promise<TestSidecar[]> {
  const m = await startMesh(names, overrides, options);
  started.push(...m);
  return m;
}

/** How an open ended: "subscribed", or the status, reason and field it was refused with. */
async function opened(sub: RawSubscribe): Promise<string> {
  try {
    await sub.subscribed();
    return "subscribed";
  } catch {
    const s = await sub.finished();
    return `${status[s.code]} ${s.reason} ${s.field}`;
  }
}

/** Every (channel, group) the sidecar has. */
const groupsOf = (s: TestSidecar): string[] => s.sidecar.engine.status().map((g) => `${g.channel}/${g.group}`);

describe("a start position out of range", () => {
  it("KIND_TIME with seconds 2^63-1 on Subscribe is INVALID_START, stores no group, and both sidecars still link after a restart", async () => {
    const [a, b] = await mesh(["a", "b"]);
    const raw = new RawMeshConnection(a!.address);
    closing.push(raw);
    const sub = raw.subscribe();
    sub.open({ channel: "poison.start", group: "g", start: POISON });
    expect(await opened(sub)).toBe("INVALID_ARGUMENT INVALID_START open.start.time");
    const s = await sub.finished();
    expect(s.details).toContain("253402300799");

    const admin = new AdminClient(a!.address);
    closing.push(admin);
    await expect(admin.listGroups("poison.start")).rejects.toMatchObject({ reason: Reason.CHANNEL_NOT_FOUND });
    expect(groupsOf(a!).filter((g) => g.startsWith("poison.start"))).toEqual([]);

    await restartMesh([a!, b!]);
    for (const x of [a!, b!]) expect(groupsOf(x).filter((g) => g.startsWith("poison.start"))).toEqual([]);
    await roundTrip(a!, b!, "after.poison");
    await roundTrip(b!, a!, "after.poison");
  });

  it("KIND_TIME with seconds 2^63-1 in a peer's interest ends that link with INVALID_START, stores no group, and the mesh still links after a restart", async () => {
    const [a, b] = await mesh(["a", "b"]);
    const peer = new RawPeer(a!.peerAddress);
    closing.push(peer);
    const { link } = await peer.linkUp(hello("raw-poisoner"), { snapshot: false });
    link.sendInterest(true, [{ ...groupInterest("poison.peer", "g"), members: false, start: { $typeName: "weft.v1.StartPosition", sequence: 0n, ...POISON, time: { $typeName: "google.protobuf.Timestamp", ...POISON.time } } }]);
    const s = await link.finished();
    expect({ code: status[s.code], reason: s.reason, field: s.field }).toEqual({
      code: "INVALID_ARGUMENT",
      reason: Reason.INVALID_START,
      field: "interest.groups[0].start.time",
    });
    expect(groupsOf(a!).filter((g) => g.startsWith("poison.peer"))).toEqual([]);

    await restartMesh([a!, b!]);
    for (const x of [a!, b!]) expect(groupsOf(x).filter((g) => g.startsWith("poison.peer"))).toEqual([]);
    await roundTrip(a!, b!, "after.poison");
    await roundTrip(b!, a!, "after.poison");
  });
});

describe("a group stored out of range by an older release", () => {
  it("is clamped or skipped in the interest snapshot with an error logged, and the links come up", async () => {
    const records: { level: string; msg: string; node?: string; channel?: string }[] = [];
    const logger = createLogger({ level: "info", destination: { write: (line: string) => records.push(JSON.parse(line)) } });
    const [a, b] = await mesh(["a", "b"], {}, { logger });
    await Promise.all([a!.stop(), b!.stop()]);

    const base = { ackedThrough: 0, maxAttempts: 5, expiredUnacked: 0, createdAt: Date.now() };
    const dlq = (channel: string): string => `${channel.toLowerCase()}.dlq.g`;
    const clamped: GroupRecord[] = [
      { ...base, channel: "old.time", group: "g", deadLetterChannel: dlq("old.time"), start: { kind: "time", time: Number(INT64_MAX) * 1000 } },
      { ...base, channel: "old.before", group: "g", deadLetterChannel: dlq("old.before"), start: { kind: "time", time: -1e20 } },
      { ...base, channel: "old.sequence", group: "g", deadLetterChannel: dlq("old.sequence"), start: { kind: "sequence", sequence: 2 ** 64 } },
      { ...base, channel: "old.created", group: "g", deadLetterChannel: dlq("old.created"), createdAt: 1e22, maxAttempts: 5000, start: { kind: "earliest" } },
    ];
    const skipped: GroupRecord[] = [
      { ...base, channel: "Old.Name", group: "g", deadLetterChannel: dlq("old.name"), start: { kind: "earliest" } },
      // NaN is stored as null in the group's JSON.
      { ...base, channel: "old.nan", group: "g", deadLetterChannel: dlq("old.nan"), start: { kind: "time", time: Number.NaN } },
    ];
    const log = await EventLog.open(a!.dataDir);
    const batch = new GroupState(log.state).batch();
    for (const r of [...clamped, ...skipped]) batch.putGroup(r);
    await batch.write();
    await log.close();

    const restartedAt = Date.now();
    await a!.start();
    await b!.start();
    await linked([a!, b!]);
    await roundTrip(a!, b!, "after.old");
    await roundTrip(b!, a!, "after.old");

    // b learnt the clamped groups from a's snapshot, and not the skipped ones.
    const known = (channel: string) => b!.sidecar.engine.knownGroups().find((g) => g.channel === channel && g.group === "g");
    await eventually(() => clamped.every((r) => known(r.channel) !== undefined), 10_000, "b knows a's clamped groups");
    expect(known("old.time")!.start).toEqual({ kind: "time", time: MAX_TIME_MS });
    expect(known("old.before")!.start).toEqual({ kind: "time", time: 0 });
    expect(known("old.sequence")!.start).toEqual({ kind: "sequence", sequence: MAX_SEQUENCE });
    // A creation time out of range is sent as unknown (0): b dates the group when it learns of it.
    expect(known("old.created")!.maxAttempts).toBe(1000);
    expect(known("old.created")!.createdAt).toBeGreaterThanOrEqual(restartedAt);
    expect(known("old.created")!.createdAt).toBeLessThanOrEqual(Date.now());
    for (const r of skipped) expect(known(r.channel)).toBeUndefined();

    // a said what it clamped and what it skipped.
    const errors = records.filter((r) => r.level === "error" && r.node === "a");
    for (const r of [...clamped, ...skipped]) expect(errors.some((e) => e.channel === r.channel), r.channel).toBe(true);

    // The operator API answers about them too.
    const admin = new AdminClient(a!.address);
    closing.push(admin);
    const groups = await admin.listGroups("old.created");
    expect(groups.groups.map((g) => ({ group: g.group, maxAttempts: g.maxAttempts, createdTime: g.createdTime }))).toEqual([{ group: "g", maxAttempts: 5000, createdTime: undefined }]);
  });
});
