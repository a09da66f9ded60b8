import type { AppendEntry, EventLog } from "../log/event-log.js";
import type { GroupRecord, GroupState, LoadedGroup } from "./group-state.js";
import { type StoredEvent, relayIdentity } from "../log/record.js";

/** Events of a relay channel read per step, and appended per append. */
const STEP = 1000;

/**
 * Opens a data directory written by 0.2, which kept the relay copies held for a group in a
 * log channel of their own, "CHANNEL~GROUP" ('~' is outside the name grammar), with a group
 * state of their own. Each such channel becomes relay copies in CHANNEL held for GROUP (as
 * DeliveryEngine.appendCopies stores them), carrying over which copies were done and the
 * attempts of those in flight; then the channel and its group state are removed.
 *
 * Every step can run again: a stop midway leaves the relay channel, and the next start
 * moves it again, where the copies' dedup identities find those already moved (same
 * sequences) and the group state written is the same. Returns whether anything moved (the
 * groups are then loaded again).
 */
export async function migrateRelayChannels(log: EventLog, state: GroupState, loaded: readonly LoadedGroup[]): Promise<boolean> {
  const relays = loaded.filter((g) => relayChannelOf(g.record) !== undefined);
  for (const relay of relays) await migrate(log, state, relay, loaded);
  return relays.length > 0;
}

/** The event channel of a 0.2 relay group ("CHANNEL~GROUP" read by GROUP); undefined for any other group. */
function relayChannelOf(record: GroupRecord): string | undefined {
  const suffix = `~${record.group}`;
  return record.channel.endsWith(suffix) ? record.channel.slice(0, -suffix.length) : undefined;
}

async function migrate(log: EventLog, state: GroupState, relay: LoadedGroup, loaded: readonly LoadedGroup[]): Promise<void> {
  const from = relay.record.channel;
  const group = relay.record.group;
  const channel = relayChannelOf(relay.record)!;
  const target = loaded.find((g) => g.record.channel === channel && g.record.group === group) ?? {
    // 0.2 created a group and its relay group together; this stands in for one lost.
    record: { ...relay.record, channel, ackedThrough: log.head(channel).last, expiredUnacked: 0, start: { kind: "latest" } },
    acked: [],
    inflight: [],
  };
  const copyEpoch = target.record.copyEpoch ?? 0;
  const done = new Set(relay.acked);
  const attempts = new Map(relay.inflight.map((f) => [f.sequence, f.attempt]));
  const moved: { done: boolean; attempt: number | undefined; sequence: number }[] = [];
  const head = log.head(from);
  for (let next = head.first; next <= head.last; ) {
    const events = await log.read(from, next, STEP);
    if (events.length === 0) break;
    next = events[events.length - 1]!.sequence + 1;
    const copies = events.filter((e): e is StoredEvent & { origin: NonNullable<StoredEvent["origin"]> } => e.origin !== undefined);
    const entries = copies.map(
      (e): AppendEntry => ({ channel, ...relayIdentity(e.origin, group, copyEpoch), key: e.key, bytes: e.bytes, origin: e.origin, onlyGroup: group, copyEpoch }),
    );
    const results = await log.append(entries);
    copies.forEach((e, i) => {
      const finished = e.sequence <= relay.record.ackedThrough || done.has(e.sequence);
      moved.push({ done: finished, attempt: finished ? undefined : attempts.get(e.sequence), sequence: results[i]!.sequence });
    });
  }

  const batch = state.batch();
  // The copies done in the relay group are done in the group: its cursor moves over them
  // where they follow it, and they are acked above it otherwise.
  const acked = new Set(target.acked);
  for (const m of moved) if (m.done) acked.add(m.sequence);
  let through = target.record.ackedThrough;
  while (acked.delete(through + 1)) through++;
  for (const s of target.acked) if (s <= through) batch.delAcked(channel, group, s);
  for (const s of acked) batch.putAcked(channel, group, s);
  for (const m of moved) if (m.attempt !== undefined) batch.putInflight(channel, group, m.sequence, m.attempt);
  batch.putGroup({ ...target.record, ackedThrough: through });
  // Every other group of the channel skips the copies (see GroupDispatcher.admit); marked
  // here so that their backlogs do not count them meanwhile.
  for (const other of loaded) {
    if (other.record.channel !== channel || other.record.group === group) continue;
    for (const m of moved) if (m.sequence > other.record.ackedThrough) batch.putAcked(channel, other.record.group, m.sequence);
  }
  await batch.write();
  await state.drop(from, group);
  await log.dropChannel(from);
}
