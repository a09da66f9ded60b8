import { createHash, timingSafeEqual } from "node:crypto";
import type { PeerCertificate } from "node:tls";
import { status } from "@grpc/grpc-js";
import { Reason, WeftError } from "../contract/errors.js";
import { type Permission, Policy } from "./policy.js";
import { identityOf } from "./spiffe.js";

/** Who is calling, as the service API and HTTP establish it. */
export interface Caller {
  /** The identity's name; undefined for a caller that showed nothing. */
  identity: string | undefined;
  /** How it was established. */
  via: "certificate" | "token" | "socket" | "none";
}

/** What a call shows of itself: its metadata's authorization header and its transport. */
export interface Credentials {
  /** The `authorization` header, if any ("Bearer TOKEN"; for HTTP also "Basic …" with the token as password). */
  authorization?: string | undefined;
  /** The client certificate, when the connection is TLS and the certificate verified against tls.ca. */
  certificate?: PeerCertificate | undefined;
  /** True when the call came over the unix socket (its user could open the file). */
  socket?: boolean;
}

/** The identity the unix socket's callers have. */
export const SOCKET_IDENTITY = "local";

/** A bearer token's name and the SHA-256 of the token, as the config file stores them. */
export interface TokenHash {
  name: string;
  sha256: Buffer;
}

/**
 * Authentication and permissions for the service API and HTTP. Without a policy everything
 * is allowed (the loopback default; the sidecar refuses to listen beyond loopback without
 * one). With a policy, a caller is known by, in order: a client certificate that verified
 * and names a service (`spiffe://TD/weft/service/NAME`, NAME), a bearer token (the name it
 * is stored under), or the unix socket (`local`). Anything else is UNAUTHENTICATED, and a
 * known caller gets what the policy grants it and `*` together.
 */
export class AccessControl {
  constructor(
    readonly policy: Policy | undefined,
    private readonly tokens: readonly TokenHash[],
    /** The trust domain service certificates must be of; undefined without TLS. */
    private readonly trustDomain: string | undefined,
  ) {}

  /** True when calls are checked at all. */
  get enforced(): boolean {
    return this.policy !== undefined;
  }

  /**
   * Who is calling. With a policy: @throws WeftError UNAUTHENTICATED when the call shows
   * nothing this sidecar knows, or a token it does not.
   */
  authenticate(credentials: Credentials): Caller {
    if (!this.policy) return { identity: undefined, via: "none" };
    const cert = credentials.certificate;
    if (cert && Object.keys(cert).length > 0 && this.trustDomain !== undefined) {
      const identity = identityOf(cert.subjectaltname);
      // `local` is the unix socket's user: no certificate may claim it.
      if (typeof identity !== "string" && identity.kind === "service" && identity.trustDomain === this.trustDomain && identity.name !== SOCKET_IDENTITY) {
        return { identity: identity.name, via: "certificate" };
      }
    }
    const header = credentials.authorization;
    if (header !== undefined) {
      const token = bearer(header);
      if (token === undefined) throw unauthenticated(Reason.INVALID_TOKEN, 'the authorization header is not "Bearer TOKEN"');
      const name = this.tokenName(token);
      if (name === undefined) throw unauthenticated(Reason.INVALID_TOKEN, "the bearer token is not one this sidecar knows");
      return { identity: name, via: "token" };
    }
    if (credentials.socket) return { identity: SOCKET_IDENTITY, via: "socket" };
    throw unauthenticated(
      Reason.UNAUTHENTICATED,
      "this sidecar has a policy: show a client certificate naming a service, a bearer token (authorization: Bearer TOKEN), or call over its unix socket",
    );
  }

  /** @throws WeftError PERMISSION_DENIED unless `caller` may do `permission` on `channel` (and `group`). */
  check(caller: Caller, permission: Permission, channel: string, group = ""): void {
    if (!this.policy || this.policy.allows(caller.identity!, permission, channel, group)) return;
    const what = group ? `${channel}/${group}` : channel;
    throw new WeftError(
      status.PERMISSION_DENIED,
      Reason.NOT_PERMITTED,
      `${describe(caller)} may not ${VERBS[permission]} ${what} (it has ${this.policy.describe(caller.identity!, permission)})`,
      permission === "publish" ? "channel" : "",
    );
  }

  /** @throws WeftError PERMISSION_DENIED unless `caller` administers some channel (to list the sidecar). */
  checkAdmin(caller: Caller): void {
    if (!this.policy || this.policy.administers(caller.identity!)) return;
    throw new WeftError(status.PERMISSION_DENIED, Reason.NOT_PERMITTED, `${describe(caller)} may not use the admin API (it has no admin grant)`);
  }

  /** True when `caller` may do `permission` (no policy: always). */
  allows(caller: Caller, permission: Permission, channel: string, group = ""): boolean {
    return !this.policy || this.policy.allows(caller.identity!, permission, channel, group);
  }

  private tokenName(token: string): string | undefined {
    const hash = createHash("sha256").update(token, "utf8").digest();
    let found: string | undefined;
    // Every stored hash is compared, in constant time each: how long it takes says nothing of which matched.
    for (const t of this.tokens) if (timingSafeEqual(t.sha256, hash)) found ??= t.name;
    return found;
  }
}

const VERBS: Record<Permission, string> = {
  publish: "publish to",
  subscribe: "subscribe as",
  settings: "change the settings of",
  admin: "administer",
};

/** "identity billing (token)", for messages. */
function describe(caller: Caller): string {
  return `identity ${caller.identity} (${caller.via})`;
}

/** The token of "Bearer TOKEN", or of "Basic base64(user:TOKEN)" (a browser's prompt); undefined for anything else. */
function bearer(header: string): string | undefined {
  const m = /^(Bearer|Basic)\s+(\S+)\s*$/i.exec(header);
  if (!m || m[2]!.length > 4096) return undefined;
  if (m[1]!.toLowerCase() === "bearer") return m[2]!;
  const decoded = Buffer.from(m[2]!, "base64").toString("utf8");
  const colon = decoded.indexOf(":");
  return colon < 0 ? undefined : decoded.slice(colon + 1);
}

function unauthenticated(reason: Reason, message: string): WeftError {
  return new WeftError(status.UNAUTHENTICATED, reason, message);
}

/** The SHA-256 of a token, as `tokens` in the config file stores it ("sha256:HEX"). */
export function tokenHash(token: string): string {
  return `sha256:${createHash("sha256").update(token, "utf8").digest("hex")}`;
}

/** An AccessControl that allows everything: no policy. */
export const OPEN_ACCESS = new AccessControl(undefined, [], undefined);
