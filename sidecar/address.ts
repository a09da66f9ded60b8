import { isIP, isIPv6 } from "node:net";

/** Longest unix socket path the kernel accepts (Linux sun_path is 108 bytes with the NUL). */
export const MAX_SOCKET_PATH_BYTES = 107;

/** What an address may look like, for error messages. */
export function addressRule(forConnect: boolean): string {
  const ports = forConnect ? "1-65535" : "0-65535, 0 picks a free port";
  return `host:port (port ${ports}; an IPv6 host in brackets, e.g. "[::1]:7420"), an absolute unix socket path ("/run/weft.sock") or unix:/path`;
}

const HOSTNAME = /^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,62})(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}))*\.?$/;

/**
 * Checks a service address: "host:port", an absolute unix socket path, or "unix:/path".
 * `forConnect` refuses port 0, which only makes sense for listening.
 * @returns undefined when the address is fine, else what is wrong with it (without the rule).
 */
export function addressProblem(address: string, forConnect = false): string | undefined {
  if (address.length === 0) return "it is empty";
  if (address.includes("\0")) return "it contains a NUL character";
  if (address.startsWith("unix:") || address.startsWith("/")) {
    const path = address.startsWith("unix:") ? address.slice("unix:".length) : address;
    if (!path.startsWith("/")) return "a unix socket path must be absolute";
    if (path.endsWith("/")) return "a unix socket path must name a file, not a directory";
    if (Buffer.byteLength(path) > MAX_SOCKET_PATH_BYTES) {
      return `the unix socket path is ${Buffer.byteLength(path)} bytes; at most ${MAX_SOCKET_PATH_BYTES} are allowed`;
    }
    return undefined;
  }
  const colon = address.lastIndexOf(":");
  if (colon < 0) return "it has no port";
  const host = address.slice(0, colon);
  const port = address.slice(colon + 1);
  if (!/^\d{1,5}$/.test(port) || Number(port) > 65535) return `port ${JSON.stringify(port)} is not a number from 0 to 65535`;
  if (forConnect && Number(port) === 0) return "port 0 cannot be connected to";
  if (host.length === 0) return "it has no host";
  if (host.startsWith("[") && host.endsWith("]")) {
    return isIPv6(host.slice(1, -1)) ? undefined : `${host} is not an IPv6 address`;
  }
  if (host.includes(":")) return "an IPv6 host must be in brackets";
  if (isIP(host) === 4 || HOSTNAME.test(host)) return undefined;
  return `host ${JSON.stringify(host.length > 64 ? `${host.slice(0, 64)}…` : host)} is not a hostname or an IP address`;
}
