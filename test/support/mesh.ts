import { collect, eventually } from "./collect.js";
import { freePort } from "./process.js";
import { type TestSidecar, startSidecar } from "./sidecar.js";
import type { SidecarConfig, SidecarStartOptions } from "../../sidecar/sidecar.js";
import type { StoredEvent } from "../../src/log/record.js";

/**
 * Starts sidecars named `names` on loopback, each with the same peer list: every one's peer
 * address, its own included (as a DNS name for the whole mesh would give).
 */
export async function startMesh(names: string[], overrides: Partial<SidecarConfig> = {}, options: SidecarStartOptions = {}): Promise<TestSidecar[]> {
  const ports = await Promise.all(names.map(() => freePort()));
  const peers = ports.map((p) => `127.0.0.1:${p}`);
  const mesh = await Promise.all(
    names.map((nodeId, i) => startSidecar({ nodeId, peerListen: peers[i]!, peers, peerTimeoutMs: 1000, ...overrides }, options)),
  );
  await linked(mesh);
  return mesh;
}

/** Waits until every sidecar has a link up with every other one. */
export async function linked(mesh: TestSidecar[]): Promise<void> {
  await eventually(
    () => mesh.every((s) => s.sidecar.mesh.status().filter((p) => p.connected).length === mesh.length - 1),
    20_000,
    "every sidecar linked with every other",
  );
}

/**
 * Waits until `origin` forwards the group to every other sidecar with members of it, and
 * the group there has a member for each.
 */
export async function settled(origin: TestSidecar, others: TestSidecar[], channel: string, group: string): Promise<void> {
  const key = `${channel}!${group}`;
  await eventually(
    () => {
      const behind = others.filter((s) => s !== origin && s.sidecar.engine.interest().some((i) => i.channel === channel && i.group === group));
      const forwarded = behind.every((s) => origin.sidecar.mesh.status().some((p) => p.nodeId === s.sidecar.config.nodeId && p.groups.includes(key)));
      const local = origin.sidecar.engine.interest().some((i) => i.channel === channel && i.group === group) ? 1 : 0;
      const members = origin.sidecar.engine.status().find((g) => g.channel === channel && g.group === group)?.members ?? 0;
      return forwarded && members >= behind.length + local;
    },
    20_000,
    `${channel}/${group} known at ${origin.sidecar.config.nodeId}`,
  );
}

/**
 * Stops every sidecar of `mesh`, then starts them all again on their data directories and
 * ports, and waits until every pair has linked again.
 */
export async function restartMesh(mesh: TestSidecar[]): Promise<void> {
  await Promise.all(mesh.map((s) => s.stop()));
  for (const s of mesh) await s.start();
  await linked(mesh);
}

/**
 * One event across a link: a member of a group on `channel` behind `to` (one group per
 * direction) receives an event published on `from`, and acks it.
 */
export async function roundTrip(from: TestSidecar, to: TestSidecar, channel: string): Promise<void> {
  const group = `trip-${from.sidecar.config.nodeId}-${to.sidecar.config.nodeId}`.toLowerCase();
  const sub = to.client().subscribe({ channel, group, from: "earliest" });
  try {
    await sub.subscribed();
    await settled(from, [to], channel, group);
    const published = await from.client().publish({ channel, data: `from ${from.sidecar.config.nodeId}` });
    // Earlier events of the channel (from the other direction) may come first.
    await collect(sub, (seen) => seen.some((d) => d.event.id === published.id));
  } finally {
    sub.close();
  }
}

/**
 * The relay copies `s` holds for `group` of `channel`, in order: the events of the channel
 * that another sidecar published, held here for that group.
 */
export async function copiesHeld(s: TestSidecar, channel: string, group: string): Promise<StoredEvent[]> {
  const log = s.sidecar.log;
  const head = log.head(channel);
  const out: StoredEvent[] = [];
  for (let from = head.first; from <= head.last; ) {
    const events = await log.read(channel, from, 1000);
    if (events.length === 0) break;
    out.push(...events.filter((e) => e.origin !== undefined && e.onlyGroup === group));
    from = events[events.length - 1]!.sequence + 1;
  }
  return out;
}
