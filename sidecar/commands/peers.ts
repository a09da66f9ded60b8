import type { PeerInfo } from "../../src/gen/weft/v1/admin_pb.js";
import { type AdminOptions, jsonNumber, jsonTime, timestampMs, withAdmin } from "./admin-connection.js";
import { writeLine } from "./output.js";
import { formatTable, humanTime } from "./table.js";

/**
 * `weft peers`: the sidecar's peers: link state and since when, address, version, events
 * forwarded and not yet handled there (the lag), and the groups forwarded to. A table, or
 * one JSON document with --json.
 * @returns the exit status.
 */
export async function peersCommand(o: AdminOptions): Promise<number> {
  const response = await withAdmin(o, (admin) => admin.listPeers());
  if (o.json) {
    await writeLine(JSON.stringify({ node: response.nodeId, peers: response.peers.map(peerJson) }));
    return 0;
  }
  if (response.peers.length === 0) {
    await writeLine(`node ${response.nodeId} knows no peers`);
    return 0;
  }
  const rows = response.peers.map((p) => [
    p.nodeId,
    p.connected ? "connected" : "lost",
    humanTime(timestampMs(p.since)),
    p.address || "(dialed in)",
    p.softwareVersion || "-",
    String(p.inFlight),
    p.groups.map((g) => `${g.channel}/${g.group} ${g.inFlight}`).join(", ") || "-",
  ]);
  const lines = formatTable(
    [
      { header: "PEER" },
      { header: "LINK" },
      { header: "SINCE" },
      { header: "ADDRESS" },
      { header: "VERSION" },
      { header: "IN FLIGHT", right: true },
      { header: "GROUPS (IN FLIGHT)" },
    ],
    rows,
  );
  for (const line of lines) await writeLine(line);
  return 0;
}

function peerJson(p: PeerInfo): Record<string, unknown> {
  return {
    node: p.nodeId,
    connected: p.connected,
    since: jsonTime(p.since),
    address: p.address,
    softwareVersion: p.softwareVersion,
    inFlight: jsonNumber(p.inFlight),
    groups: p.groups.map((g) => ({ channel: g.channel, group: g.group, inFlight: g.inFlight })),
  };
}
