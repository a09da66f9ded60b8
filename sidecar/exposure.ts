import { isIPv4, isIPv6 } from "node:net";
import type { SidecarConfig } from "./sidecar.js";

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
export function exposedListeners(config: Pick<SidecarConfig, "listen" | "peerListen" | "http">): Listener[] {
  const all: Listener[] = [
    { setting: "listen", address: config.listen },
    { setting: "peerListen", address: config.peerListen },
    { setting: "http", address: config.http },
  ];
  return all.filter((l) => l.address !== "off" && !l.address.startsWith("/") && !l.address.startsWith("unix:") && !isLoopback(hostOf(l.address)));
}

/**
 * Why the sidecar must not start with this configuration, or undefined: a listener beyond
 * loopback without TLS, unless the operator said `insecure`.
 */
export function exposureProblem(config: Pick<SidecarConfig, "listen" | "peerListen" | "http" | "tls" | "insecure">): string | undefined {
  if (config.tls || config.insecure) return undefined;
  const exposed = exposedListeners(config);
  if (exposed.length === 0) return undefined;
  return (
    `${describeListeners(exposed)} beyond loopback without TLS: anyone who reaches ${exposed.length > 1 ? "them" : "it"} could read, ack and forge events. ` +
    "Set tls.cert, tls.key and tls.ca (--tls-cert, --tls-key, --tls-ca; `weft certs` makes a development CA; see docs/security.md), " +
    "or pass --insecure to run unauthenticated on a network you trust"
  );
}

/** "listen 0.0.0.0:7420 and peerListen 0.0.0.0:7421 are", for messages. */
export function describeListeners(listeners: Listener[]): string {
  const names = listeners.map((l) => `${l.setting} ${l.address}`);
  const list = names.length > 1 ? `${names.slice(0, -1).join(", ")} and ${names.at(-1)}` : names[0]!;
  return `${list} ${names.length > 1 ? "are" : "is"}`;
}

function hostOf(address: string): string {
  return address.slice(0, address.lastIndexOf(":")).replace(/^\[(.*)\]$/, "$1").toLowerCase().replace(/\.$/, "");
}

function isLoopback(host: string): boolean {
  if (host === "localhost") return true;
  if (isIPv4(host)) return host.startsWith("127.");
  if (isIPv6(host)) return new URL(`http://[${host}]/`).hostname === "[::1]";
  return false;
}
