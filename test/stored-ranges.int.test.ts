import { status } from "@grpc/grpc-js";
import { afterEach, describe, expect, it } from "vitest";
import { AdminClient } from "../src/client/index.js";
import { Reason } from "../src/contract/errors.js";
import { StartPosition_Kind } from "../src/gen/weft/v1/mesh_pb.js";
import { restartMesh, roundTrip, startMesh } from "./support/mesh.js";
import { RawMeshConnection, type RawSubscribe } from "./support/raw-client.js";
import { RawPeer, groupInterest, hello } from "./support/raw-peer.js";
import type { TestSidecar } from "./support/sidecar.js";

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

async function mesh(names: string[]): Promise<TestSidecar[]> {
  const m = await startMesh(names);
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

/** Every (channel, group) the sidecar has, relay groups included. */
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
