import type { ChannelInfo, LogRange } from "../../src/gen/weft/v1/admin_pb.js";
import { type AdminOptions, jsonNumber, jsonTime, timestampMs, withAdmin } from "./admin-connection.js";
import { writeLine } from "./output.js";
import { formatTable, humanBytes, humanTime } from "./table.js";

/**
 * `weft channels`: every channel of the sidecar, with its events, bytes, oldest and newest
 * event (relay copies included), and its groups' backlogs; dead-letter channels marked. A
 * sidecar of an earlier release lists relay copies apart (ChannelInfo.relays, deprecated):
 * shown under their channel. A table, or one JSON document with --json.
 * @returns the exit status.
 */
export async function channelsCommand(o: AdminOptions): Promise<number> {
  const response = await withAdmin(o, (admin) => admin.listChannels());
  if (o.json) {
    await writeLine(JSON.stringify({ node: response.nodeId, channels: response.channels.map(channelJson) }));
    return 0;
  }
  if (response.channels.length === 0) {
    await writeLine(`node ${response.nodeId} has no channels yet`);
    return 0;
  }
  const rows: string[][] = [];
  for (const c of response.channels) {
    const groups = c.groups.map((g) => `${g.group} ${g.backlog}`).join(", ");
    const dead = c.deadLettersOf.map((g) => `dead letters of ${g.channel}/${g.group}`).join(", ");
    rows.push([c.channel, ...rangeCells(c.log), [groups, dead].filter(Boolean).join("; ") || "-"]);
    for (const r of c.relays) rows.push([`  relay copies for ${r.group}`, ...rangeCells(r.log), `${r.group} ${r.backlog}`]);
  }
  const lines = formatTable(
    [{ header: "CHANNEL" }, { header: "EVENTS", right: true }, { header: "BYTES", right: true }, { header: "OLDEST" }, { header: "NEWEST" }, { header: "GROUPS (BACKLOG)" }],
    rows,
  );
  for (const line of lines) await writeLine(line);
  return 0;
}

function rangeCells(r: LogRange | undefined): string[] {
  if (!r || r.events === 0n) return ["0", "0B", "-", r && r.newestSequence > 0n ? `#${r.newestSequence} (expired)` : "-"];
  return [String(r.events), humanBytes(Number(r.bytes)), `#${r.oldestSequence} ${humanTime(timestampMs(r.oldestTime))}`, `#${r.newestSequence} ${humanTime(timestampMs(r.newestTime))}`];
}

function rangeJson(r: LogRange | undefined): Record<string, unknown> {
  return {
    events: jsonNumber(r?.events ?? 0n),
    bytes: jsonNumber(r?.bytes ?? 0n),
    oldestSequence: jsonNumber(r?.oldestSequence ?? 0n),
    newestSequence: jsonNumber(r?.newestSequence ?? 0n),
    oldestTime: jsonTime(r?.oldestTime),
    newestTime: jsonTime(r?.newestTime),
    expired: jsonNumber(r?.expired ?? 0n),
  };
}

function channelJson(c: ChannelInfo): Record<string, unknown> {
  return {
    channel: c.channel,
    ...rangeJson(c.log),
    groups: c.groups.map((g) => ({ group: g.group, backlog: jsonNumber(g.backlog), inFlight: g.inFlight, members: g.members })),
    relays: c.relays.map((r) => ({ group: r.group, ...rangeJson(r.log), backlog: jsonNumber(r.backlog), inFlight: r.inFlight })),
    deadLettersOf: c.deadLettersOf.map((g) => ({ channel: g.channel, group: g.group })),
  };
}
