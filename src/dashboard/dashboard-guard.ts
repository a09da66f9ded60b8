import type { IncomingMessage, ServerResponse } from "node:http";
import { isIPv4, isIPv6 } from "node:net";
import { status } from "@grpc/grpc-js";
import { WeftError } from "../contract/errors.js";
import type { AccessControl, Caller } from "../security/access.js";

/** Who may use the dashboard and its API, and under which host names. */
export interface DashboardAccess {
  /** The sidecar's access rules: with a policy, a caller needs a token with an admin grant. */
  access: AccessControl;
  /** Host names the dashboard answers under, besides localhost, 127.0.0.1, ::1 and the listener's own host. */
  hosts: readonly string[];
  /** The HTTP listener's bound address ("host:port"). */
  address: string;
}

/** A refusal of a dashboard request: HTTP status, gRPC code name, stable reason, message. */
export interface Refusal {
  http: number;
  code: string;
  reason: string;
  field: string;
  message: string;
  /** Asks a browser for credentials (401 with a token as the Basic password). */
  challenge?: boolean;
}

/**
 * Checks a dashboard request before it is answered, returning the caller or a refusal:
 *
 * - the Host header must name this sidecar (localhost, a loopback address, the listener's
 *   own host, or one of `hosts`): a page of another site that a DNS name rebound to this
 *   address cannot read the API (HOST_NOT_ALLOWED);
 * - without a policy, the client must be on loopback (LOOPBACK_ONLY): the dashboard is
 *   for people on the sidecar's own machine;
 * - with a policy, the request carries a token (`Authorization: Bearer TOKEN`, or Basic with
 *   the token as the password, which a browser prompts for) of an identity with an admin
 *   grant (UNAUTHENTICATED, NOT_PERMITTED).
 */
export function admit(request: IncomingMessage, guard: DashboardAccess): Caller | Refusal {
  const host = hostName(request.headers.host);
  if (host === undefined || !allowedHosts(guard).has(host)) {
    return {
      http: 403,
      code: "PERMISSION_DENIED",
      reason: "HOST_NOT_ALLOWED",
      field: "Host",
      message: `the dashboard answers as ${[...allowedHosts(guard)].join(", ")}, not ${JSON.stringify((request.headers.host ?? "").slice(0, 100))}; add the name to httpHosts`,
    };
  }
  if (!guard.access.enforced) {
    if (!isLoopback(request.socket.remoteAddress ?? "")) {
      return { http: 403, code: "PERMISSION_DENIED", reason: "LOOPBACK_ONLY", field: "", message: "without a policy the dashboard answers clients on this machine only (docs/security.md)" };
    }
    return { identity: undefined, via: "none" };
  }
  try {
    const caller = guard.access.authenticate({ authorization: request.headers.authorization });
    guard.access.checkAdmin(caller);
    return caller;
  } catch (e) {
    if (!(e instanceof WeftError)) throw e;
    return fromError(e);
  }
}

/** A WeftError of the access rules as a refusal. */
export function fromError(e: WeftError): Refusal {
  const unauthenticated = e.code === status.UNAUTHENTICATED;
  return {
    http: unauthenticated ? 401 : 403,
    code: status[e.code] ?? String(e.code),
    reason: e.reason,
    field: e.field,
    message: e.message.replace(/^[A-Z_]+: /, ""),
    challenge: unauthenticated,
  };
}

/** True when `value` is a refusal, not a caller. */
export function isRefusal(value: Caller | Refusal): value is Refusal {
  return "http" in value;
}

/** Sends a refusal as JSON (or text for the page), with a Basic challenge for a 401. */
export function sendRefusal(response: ServerResponse, r: Refusal, asText = false): void {
  const headers: Record<string, string | number> = { "Cache-Control": "no-store" };
  if (r.challenge) headers["WWW-Authenticate"] = 'Basic realm="weft", charset="UTF-8"';
  const body = asText ? `${r.reason}: ${r.message}\n` : JSON.stringify({ error: { code: r.code, reason: r.reason, field: r.field, message: r.message } });
  headers["Content-Type"] = asText ? "text/plain; charset=utf-8" : "application/json; charset=utf-8";
  headers["Content-Length"] = Buffer.byteLength(body);
  response.writeHead(r.http, headers);
  response.end(body);
}

function allowedHosts(guard: DashboardAccess): Set<string> {
  const own = hostName(guard.address);
  const names = new Set(["localhost", "127.0.0.1", "::1", ...guard.hosts]);
  if (own && own !== "0.0.0.0" && own !== "::") names.add(own);
  return names;
}

/** A Host header's (or an address's) host: lowercase, without the port or brackets. */
function hostName(header: string | undefined): string | undefined {
  if (!header) return undefined;
  const h = header.trim().toLowerCase();
  if (h.startsWith("[")) {
    const end = h.indexOf("]");
    return end < 0 ? undefined : h.slice(1, end);
  }
  const colon = h.lastIndexOf(":");
  return (colon < 0 ? h : h.slice(0, colon)).replace(/\.$/, "");
}

function isLoopback(address: string): boolean {
  const a = address.startsWith("::ffff:") ? address.slice(7) : address;
  if (isIPv4(a)) return a.startsWith("127.");
  return isIPv6(a) && a === "::1";
}
