import { isIPv6 } from "node:net";
import { TlsFileError, readTlsFiles } from "../../src/security/tls-files.js";
import type { SidecarConfig } from "../sidecar.js";
import { formatDuration, formatSize } from "../units.js";
import { ConfigError, type ConfigSource, describe, describeSource } from "./config-error.js";
import type { SettingKey } from "./schema.js";

// Rules between settings, checked once every source is merged. A refusal blames the setting
// that was set, and says where the other value came from.

/** Where each setting that some source set came from. */
export type Sources = ReadonlyMap<SettingKey, ConfigSource>;

/**
 * Checks the rules between settings, in a fixed order: TLS files all or none, the three
 * listeners apart, the event within the message limit and the message within the receive
 * budget, and the peer timeout within the dedup window.
 * @throws ConfigError for the first rule broken.
 */
export function checkCombinations(config: SidecarConfig, sources: Sources): void {
  checkTlsComplete(sources);
  checkPeerListen(config, sources);
  checkHttp(config, sources, "listen");
  checkHttp(config, sources, "peerListen");
  checkMessageLimits(config, sources);
  checkPeerTimeout(config, sources);
}

/** Refuses some of the TLS files without the others. */
function checkTlsComplete(sources: Sources): void {
  const keys = ["tls.cert", "tls.key", "tls.ca"] as const;
  const set = keys.filter((k) => sources.has(k));
  if (set.length === 0 || set.length === keys.length) return;
  const missing = keys.filter((k) => !sources.has(k));
  throw new ConfigError(
    sources.get(set[0]!)!,
    set[0]!,
    `is set but ${missing.join(" and ")} ${missing.length > 1 ? "are" : "is"} not: TLS needs all three (this sidecar's certificate, its key, and the CA that signs the mesh's certificates)`,
  );
}

function checkMessageLimits(config: SidecarConfig, sources: Sources): void {
  if (config.maxEventBytes > config.maxMessageBytes) {
    // Blame the setting that was set; when both were, the event limit.
    const event = sources.get("maxEventBytes");
    const message = sources.get("maxMessageBytes");
    const fix = "an event must fit in one gRPC message: raise maxMessageBytes or lower maxEventBytes";
    if (event || !message) {
      const from = message ? describeSource(message, "maxMessageBytes") : "the default";
      throw new ConfigError(
        event ?? { kind: "default" },
        "maxEventBytes",
        `${formatSize(config.maxEventBytes)} is larger than maxMessageBytes (${formatSize(config.maxMessageBytes)}, from ${from}); ${fix}`,
      );
    }
    throw new ConfigError(message, "maxMessageBytes", `${formatSize(config.maxMessageBytes)} is smaller than maxEventBytes (${formatSize(config.maxEventBytes)}, from the default); ${fix}`);
  }
  // The budget counts each message's 5-byte gRPC prefix too.
  if (config.maxPartialMessageBytes < config.maxMessageBytes + 5) {
    // Blame the setting that was set; when both were, the budget.
    const budget = sources.get("maxPartialMessageBytes");
    const message = sources.get("maxMessageBytes");
    const fix = "one message of the largest size must fit in the budget: raise maxPartialMessageBytes or lower maxMessageBytes";
    if (budget || !message) {
      const from = message ? describeSource(message, "maxMessageBytes") : "the default";
      throw new ConfigError(
        budget ?? { kind: "default" },
        "maxPartialMessageBytes",
        `${formatSize(config.maxPartialMessageBytes)} is smaller than maxMessageBytes (${formatSize(config.maxMessageBytes)}, from ${from}) plus a message's 5-byte prefix; ${fix}`,
      );
    }
    throw new ConfigError(
      message,
      "maxMessageBytes",
      `${formatSize(config.maxMessageBytes)} is larger than maxPartialMessageBytes (${formatSize(config.maxPartialMessageBytes)}, from the default); ${fix}`,
    );
  }
}

/** A forward retried after the dedup window would be stored twice at the receiver. */
function checkPeerTimeout(config: SidecarConfig, sources: Sources): void {
  if (config.peerTimeoutMs < config.dedupWindowMs) return;
  const fix = "a peer must time out within the dedup window, which keeps relay copies from being stored twice: lower peerTimeout or raise dedupWindow";
  // Blame the setting that was set; when both were, the peer timeout.
  const timeout = sources.get("peerTimeout");
  const window = sources.get("dedupWindow");
  if (timeout || !window) {
    throw new ConfigError(
      timeout ?? { kind: "default" },
      "peerTimeout",
      `${formatDuration(config.peerTimeoutMs)} is not shorter than dedupWindow (${formatDuration(config.dedupWindowMs)}); ${fix}`,
    );
  }
  throw new ConfigError(window, "dedupWindow", `${formatDuration(config.dedupWindowMs)} is not longer than peerTimeout (${formatDuration(config.peerTimeoutMs)}); ${fix}`);
}

/** Refuses a peer listener on the service listener's address: the two APIs need their own sockets. */
function checkPeerListen(config: SidecarConfig, sources: Sources): void {
  if (!sameListener(config.listen, config.peerListen)) return;
  const clash = config.listen === config.peerListen ? "is the same address as" : "binds the same port, on an overlapping host, as";
  const fix = "the service API and the peer API each need their own port (port 0 picks a free one)";
  // Blame the setting that was set; when both were, the peer listener.
  const peer = sources.get("peerListen");
  const listen = sources.get("listen");
  if (peer || !listen) {
    const from = listen ? describeSource(listen, "listen") : "the default";
    throw new ConfigError(peer ?? { kind: "default" }, "peerListen", `${describe(config.peerListen)} ${clash} listen (${config.listen}, from ${from}); ${fix}: give peerListen another port`);
  }
  throw new ConfigError(listen, "listen", `${describe(config.listen)} ${clash} peerListen (${config.peerListen}, from the default); ${fix}: give listen another port, or set peerListen`);
}

/** Refuses an HTTP listener on the service or peer listener's address. */
function checkHttp(config: SidecarConfig, sources: Sources, other: "listen" | "peerListen"): void {
  if (config.http === "off" || !sameListener(config.http, config[other])) return;
  const clash = config.http === config[other] ? "is the same address as" : "binds the same port, on an overlapping host, as";
  const fix = "the HTTP listener needs its own port (port 0 picks a free one)";
  // Blame the setting that was set; when both were, the HTTP listener.
  const http = sources.get("http");
  const set = sources.get(other);
  if (http || !set) {
    const from = set ? describeSource(set, other) : "the default";
    throw new ConfigError(http ?? { kind: "default" }, "http", `${describe(config.http)} ${clash} ${other} (${config[other]}, from ${from}); ${fix}: give http another port`);
  }
  throw new ConfigError(set, other, `${describe(config[other])} ${clash} http (${config.http}, from the default); ${fix}: give ${other} another port, or set http`);
}

/**
 * True when two listen addresses would bind one TCP port: the same port (not 0, which picks a
 * free one each time) on the same host, on a wildcard host, or on "localhost" and a loopback
 * address. Host names are not resolved; a clash they hide is reported when the sidecar starts.
 */
function sameListener(a: string, b: string): boolean {
  const x = splitHostPort(a);
  const y = splitHostPort(b);
  if (!x || !y || x.port !== y.port || x.port === 0) return false;
  const wildcard = (h: string): boolean => h === "0.0.0.0" || h === "::";
  const loopback = (h: string): boolean => h === "localhost" || h === "::1" || h.startsWith("127.");
  if (x.host === y.host || wildcard(x.host) || wildcard(y.host)) return true;
  return (x.host === "localhost" || y.host === "localhost") && loopback(x.host) && loopback(y.host);
}

/** A TCP address's host (lowercase, without brackets or a trailing dot, IPv6 canonical) and port. */
function splitHostPort(address: string): { host: string; port: number } | undefined {
  if (address.startsWith("/") || address.startsWith("unix:")) return undefined;
  const colon = address.lastIndexOf(":");
  if (colon < 0) return undefined;
  let host = address.slice(0, colon).toLowerCase().replace(/\.$/, "");
  if (host.startsWith("[") && host.endsWith("]")) {
    host = host.slice(1, -1);
    if (isIPv6(host)) host = new URL(`http://[${host}]/`).hostname.slice(1, -1);
  }
  return { host, port: Number(address.slice(colon + 1)) };
}

/**
 * Reads the TLS files and returns the node id their certificate names: the sidecar's node
 * id when none was set, and one that was set must be the same.
 * @throws ConfigError naming the file that cannot be used, or the node id that disagrees.
 */
export async function certifiedNodeId(config: SidecarConfig & { tls: NonNullable<SidecarConfig["tls"]> }, sources: Sources): Promise<string> {
  let identity;
  try {
    identity = (await readTlsFiles(config.tls)).identity;
  } catch (e) {
    if (!(e instanceof TlsFileError)) throw e;
    throw new ConfigError(sources.get(e.file)!, e.file, `${describe(e.path)} ${e.problem}`);
  }
  const set = sources.get("nodeId");
  if (set && config.nodeId !== identity.name) {
    throw new ConfigError(
      set,
      "nodeId",
      `${describe(config.nodeId)} is not the node tls.cert names (${identity.uri}): with TLS the node id is the certificate's; leave nodeId unset or make them agree`,
    );
  }
  return identity.name;
}
