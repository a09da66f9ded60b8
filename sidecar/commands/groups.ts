import type { GroupInfo } from "../../src/gen/weft/v1/admin_pb.js";
import { type AdminOptions, jsonNumber, jsonTime, withAdmin } from "./admin-connection.js";
import { writeLine } from "./output.js";
import { formatTable } from "./table.js";

/**
 * `weft groups CHANNEL`: the channel's groups at the sidecar: cursor, backlog, in flight,
 * members (here and behind peers), max attempts, dead letters and their channel. A table,
 * or one JSON document with --json.
 * @returns the exit status.
 */
export async function groupsCommand(channel: string, o: AdminOptions): Promise<number> {
  const response = await withAdmin(o, (admin) => admin.listGroups(channel));
  if (o.json) {
    await writeLine(JSON.stringify({ node: response.nodeId, channel: response.channel, groups: response.groups.map(groupJson) }));
    return 0;
  }
  if (response.groups.length === 0) {
    await writeLine(`${channel} has no groups at node ${response.nodeId}`);
    return 0;
  }
  const rows = response.groups.map((g) => [
    g.group,
    String(g.ackedThrough),
    String(g.backlog),
    String(g.inFlight),
    members(g),
    String(g.maxAttempts),
    `${g.deadLetters}${g.deadLettersMore ? "+" : ""}`,
    g.deadLetterChannel,
    String(g.relayBacklog),
    String(g.expired),
  ]);
  const lines = formatTable(
    [
      { header: "GROUP" },
      { header: "CURSOR", right: true },
      { header: "BACKLOG", right: true },
      { header: "IN FLIGHT", right: true },
      { header: "MEMBERS" },
      { header: "MAX ATTEMPTS", right: true },
      { header: "DEAD LETTERS", right: true },
      { header: "DEAD-LETTER CHANNEL" },
      { header: "RELAY BACKLOG", right: true },
      { header: "EXPIRED", right: true },
    ],
    rows,
  );
  for (const line of lines) await writeLine(line);
  return 0;
}

function members(g: GroupInfo): string {
  const parts = [];
  if (g.localMembers > 0 || g.remoteMembers === 0) parts.push(`${g.localMembers} here`);
  if (g.remoteMembers > 0) parts.push(`${g.remoteMembers} peer${g.remoteMembers === 1 ? "" : "s"}`);
  return parts.join(", ");
}

function groupJson(g: GroupInfo): Record<string, unknown> {
  return {
    group: g.group,
    ackedThrough: jsonNumber(g.ackedThrough),
    backlog: jsonNumber(g.backlog),
    inFlight: g.inFlight,
    localMembers: g.localMembers,
    remoteMembers: g.remoteMembers,
    maxAttempts: g.maxAttempts,
    deadLetterChannel: g.deadLetterChannel,
    deadLetters: jsonNumber(g.deadLetters),
    deadLettersMore: g.deadLettersMore,
    relayBacklog: jsonNumber(g.relayBacklog),
    relayInFlight: g.relayInFlight,
    expired: jsonNumber(g.expired),
    createdTime: jsonTime(g.createdTime),
  };
}
