import { isIPv4, isIPv6 } from "node:net";
import type { TlsPaths } from "../src/security/tls-files.js";
import type { PolicyConfig } from "./access-config.js";

/** The addresses a sidecar listens on, as its configuration names them ("off" for no HTTP). */
export interface ListenerAddresses {
  listen: string;
  peerListen: string;
  http: string;
}

/** What decides whether a sidecar is safe where it listens and dials (a SidecarConfig is one). */
export interface ExposureSettings extends ListenerAddresses {
  /** Peer addresses it dials. */
  peers: readonly string[];
  /** DNS names whose every address it dials. */
  peersDns: readonly string[];
  /** TLS on every listener and link; undefined: plaintext. */
  tls?: TlsPaths | undefined;
  /** Who may do what on the service API; undefined: everyone, everything. */
  policy?: PolicyConfig | undefined;
  /** The operator accepts listeners beyond loopback without TLS or a policy. */
  insecure: boolean;
}

/** A listener and the address it binds. */
export interface Listener {
  /** The setting, as a config file spells it. */
  setting: "listen" | "peerListen" | "http";
  address: string;
}

/**
 * The listeners that others than this machine's own processes can reach: every TCP address
 * whose host is not loopback (127.0.0.0/8, ::1, "localhost"). A wildcard ("0.0.0.0", "::")
 * and a host name are beyond loopback. A unix socket and an HTTP listener that is off are not.
 */
export function exposedListeners(config: ListenerAddresses): Listener[] {
  const all: Listener[] = [
    { setting: "listen", address: config.listen },
    { setting: "peerListen", address: config.peerListen },
    { setting: "http", address: config.http },
  ];
  return all.filter((l) => l.address !== "off" && !l.address.startsWith("/") && !l.address.startsWith("unix:") && !isLoopback(hostOf(l.address)));
}

/**
 * What is unsafe about where the sidecar listens, one sentence each: a listener beyond
 * loopback without TLS (anyone on the network could read, ack and forge events), and a
 * service API beyond loopback without a policy (anyone with a connection could publish,
 * subscribe and administer). HTTP beyond loopback needs no policy: without one its
 * dashboard answers loopback clients only.
 */
function unsafe(config: ExposureSettings): string[] {
  const exposed = exposedListeners(config);
  const out: string[] = [];
  if (exposed.length > 0 && !config.tls) {
    out.push(`${describeListeners(exposed)} beyond loopback without TLS: anyone who reaches ${exposed.length > 1 ? "them" : "it"} could read, ack and forge events`);
  }
  const dialed = [...config.peers, ...config.peersDns].filter((a) => !isLoopback(hostOf(a)));
  if (dialed.length > 0 && !config.tls) {
    const list = dialed.length > 3 ? `${dialed.slice(0, 3).join(", ")} and ${dialed.length - 3} more` : dialed.join(", ");
    out.push(`peers beyond loopback (${list}) would be dialed without TLS: whoever answers there could pose as a peer and receive events`);
  }
  const service = exposed.find((l) => l.setting === "listen");
  if (service && !config.policy) {
    out.push(`${describeListeners([service])} beyond loopback without a policy: any service that connects could publish, subscribe and administer`);
  }
  return out;
}

/**
 * Why the sidecar must not start with this configuration, or undefined: what is unsafe
 * about where it listens, unless the operator said `insecure`.
 */
export function exposureProblem(config: ExposureSettings): string | undefined {
  const problems = unsafe(config);
  if (problems.length === 0 || config.insecure) return undefined;
  const fixes = [
    config.tls ? undefined : "set tls.cert, tls.key and tls.ca (--tls-cert, --tls-key, --tls-ca; `weft certs` makes a development CA)",
    problems.some((p) => p.includes("without a policy")) ? "give a policy in the config file" : undefined,
  ].filter(Boolean);
  return `${problems.join("; ")}. To fix: ${fixes.join(", and ")} (see docs/security.md), or pass --insecure to run so on a network you trust`;
}

/** What --insecure lets through, for the warning at every start. */
export function insecureListeners(config: ExposureSettings): string[] {
  return config.insecure ? unsafe(config) : [];
}

/** "listen 0.0.0.0:7420 and peerListen 0.0.0.0:7421 are", for messages. */
export function describeListeners(listeners: Listener[]): string {
  const names = listeners.map((l) => `${l.setting} ${l.address}`);
  const list = names.length > 1 ? `${names.slice(0, -1).join(", ")} and ${names.at(-1)}` : names[0]!;
  return `${list} ${names.length > 1 ? "are" : "is"}`;
}

function hostOf(address: string): string {
  // A trailing dot is kept: "localhost." is a DNS name that /etc/hosts does not answer.
  return address.slice(0, address.lastIndexOf(":")).replace(/^\[(.*)\]$/, "$1").toLowerCase();
}

function isLoopback(host: string): boolean {
  if (host === "localhost") return true;
  if (isIPv4(host)) return host.startsWith("127.");
  if (isIPv6(host)) return new URL(`http://[${host}]/`).hostname === "[::1]";
  return false;
}
