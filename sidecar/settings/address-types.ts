import { addressProblem, addressRule } from "../address.js";
import { describe, kindOf } from "./config-error.js";
import { MAX_PEER_ENTRIES, Problem, type ValueType } from "./value-types.js";

// The value types of addresses: where the sidecar listens, and the peers it dials.

const PEER_LISTEN_RULE = 'host:port (TCP; port 0-65535, 0 picks a free port; an IPv6 host in brackets, e.g. "[::1]:7421")';
const HTTP_RULE = 'host:port (TCP; port 0-65535, 0 picks a free port; an IPv6 host in brackets, e.g. "[::1]:7422"), or "off" for no HTTP listener';
const PEER_RULE = 'host:port (TCP; port 1-65535; an IPv6 host in brackets, e.g. "10.0.0.7:7421" or "[fd00::7]:7421")';
const PEER_DNS_RULE = 'name:port (a DNS name, or an IP address; port 1-65535; e.g. "weft-peers.mesh.svc:7421")';

const identity = (v: string): string => v;

/** The service API's address: host:port, an absolute unix socket path, or unix:/path. */
export const listenAddress: ValueType<string> = {
  read(value) {
    if (typeof value !== "string") throw new Problem(`must be text, not ${kindOf(value)}; use ${addressRule(false)}`);
    const problem = addressProblem(value);
    if (problem) throw new Problem(`${describe(value)} is not an address to listen on (${problem}); use ${addressRule(false)}`);
    return value;
  },
  arg: "<address>",
  allowed: "`host:port` (port 0-65535), an absolute socket path, or `unix:/path`",
  help: "host:port, /path.sock or unix:/path",
  format: identity,
};

/** The peer API's address: host:port, TCP only. */
export const peerListenAddress: ValueType<string> = {
  read(value) {
    if (typeof value !== "string") throw new Problem(`must be text, not ${kindOf(value)}; use ${PEER_LISTEN_RULE}`);
    const problem = tcpAddressProblem(value, false);
    if (problem) throw new Problem(`${describe(value)} is not an address for the peer API (${problem}); use ${PEER_LISTEN_RULE}`);
    return value;
  },
  arg: "<host:port>",
  allowed: "`host:port` (port 0-65535), TCP only",
  help: "host:port, TCP only",
  format: identity,
};

/** The HTTP listener's address: host:port, TCP only, or "off" (any case) for none. */
export const httpAddress: ValueType<string> = {
  read(value) {
    if (typeof value !== "string") throw new Problem(`must be text, not ${kindOf(value)}; use ${HTTP_RULE}`);
    if (value.trim().toLowerCase() === "off") return "off";
    const problem = tcpAddressProblem(value, false, "the HTTP listener is TCP only");
    if (problem) throw new Problem(`${describe(value)} is not an address for HTTP (${problem}); use ${HTTP_RULE}`);
    return value;
  },
  arg: "<host:port>",
  allowed: "`host:port` (port 0-65535), TCP only, or `off` (any case)",
  help: 'host:port, TCP only, or "off"',
  format: identity,
};

/** Peer addresses to dial. */
export const peerList = addressList("peer address", PEER_RULE, {
  arg: "<host:port,...>",
  allowed: `up to ${MAX_PEER_ENTRIES} \`host:port\` (port 1-65535)`,
  help: "host:port, comma-separated; repeatable",
});

/** DNS names whose every address is a peer. */
export const peerDnsList = addressList("DNS name and port", PEER_DNS_RULE, {
  arg: "<name:port,...>",
  allowed: `up to ${MAX_PEER_ENTRIES} \`name:port\` (a DNS name or an IP; port 1-65535)`,
  help: "name:port, comma-separated; repeatable",
});

/**
 * A list of TCP addresses to connect to: a list of text, or one text of comma-separated
 * entries. Entries are trimmed; empty ones are refused; duplicates (ignoring case) are
 * dropped, keeping the first. An empty text is an empty list.
 */
function addressList(noun: string, rule: string, text: Pick<ValueType<string[]>, "arg" | "allowed" | "help">): ValueType<string[]> {
  const shape = `a list of ${rule}, or one text of them separated by commas`;
  return {
    ...text,
    read(value) {
      let entries: unknown[];
      if (typeof value === "string") {
        // Split no further than one past the limit: a hostile value costs no more than a full list.
        entries = value.trim() === "" ? [] : value.split(",", MAX_PEER_ENTRIES + 1);
        if (entries.length > MAX_PEER_ENTRIES) {
          throw new Problem(`has more than ${MAX_PEER_ENTRIES} entries; at most ${MAX_PEER_ENTRIES} may be listed (use peersDns for a larger mesh)`);
        }
      } else if (Array.isArray(value)) {
        entries = value;
        if (entries.length > MAX_PEER_ENTRIES) {
          throw new Problem(`has ${entries.length} entries; at most ${MAX_PEER_ENTRIES} may be listed (use peersDns for a larger mesh)`);
        }
      } else {
        throw new Problem(`must be ${shape}, not ${kindOf(value)}`);
      }
      const seen = new Set<string>();
      const addresses: string[] = [];
      entries.forEach((raw, i) => {
        const at = `entry ${i + 1}`;
        const empty = typeof value === "string" ? `${at} is empty (a doubled or trailing comma?); each entry is ${rule}` : `${at} is empty; each entry is ${rule}`;
        if (raw === null || raw === undefined) throw new Problem(empty);
        if (typeof raw !== "string") throw new Problem(`${at} is ${kindOf(raw)} (${describe(raw)}), not text; each entry is ${rule}`);
        const entry = raw.trim();
        if (entry === "") throw new Problem(empty);
        if (typeof value !== "string" && entry.includes(",")) {
          throw new Problem(`${at}, ${describe(entry)}, contains a comma; in a list, give one ${noun} per entry`);
        }
        const problem = tcpAddressProblem(entry, true);
        if (problem) throw new Problem(`${at}, ${describe(entry)}, is not a ${noun} (${problem}); use ${rule}`);
        const key = entry.toLowerCase();
        if (!seen.has(key)) {
          seen.add(key);
          addresses.push(entry);
        }
      });
      return addresses;
    },
    format: (addresses) => addresses.join(","),
    repeatable: true,
  };
}

/** Checks a TCP host:port, as {@link addressProblem} does, but refusing unix sockets. */
function tcpAddressProblem(address: string, forConnect: boolean, why = "peers connect over TCP only"): string | undefined {
  if (address.startsWith("unix:") || address.startsWith("/")) return `a unix socket cannot be used: ${why}`;
  const colon = address.lastIndexOf(":");
  if (colon >= 0) {
    const port = address.slice(colon + 1);
    const min = forConnect ? 1 : 0;
    if (!/^\d{1,5}$/.test(port) || Number(port) < min || Number(port) > 65535) {
      return `port ${describe(port)} is not a number from ${min} to 65535`;
    }
  }
  return addressProblem(address, forConnect);
}
