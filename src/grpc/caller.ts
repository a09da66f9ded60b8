import type { ServerUnaryCall } from "@grpc/grpc-js";
import type { AccessControl, Caller } from "../security/access.js";

/** How the service API's calls are checked: the access rules, and whether its listener is a unix socket. */
export interface CallerCheck {
  access: AccessControl;
  /** The service API listens on a unix socket: its callers are the socket's user. */
  socket: boolean;
}

/**
 * Who made `call`, from its `authorization` metadata, its verified client certificate and
 * the listener it came in on. @throws WeftError UNAUTHENTICATED (with a policy) for a call
 * that shows nothing known.
 */
export function callerOf(call: Pick<ServerUnaryCall<unknown, unknown>, "metadata" | "getAuthContext">, check: CallerCheck): Caller {
  const authorization = call.metadata.get("authorization")[0];
  return check.access.authenticate({
    authorization: authorization === undefined ? undefined : String(authorization),
    certificate: call.getAuthContext()?.sslPeerCertificate,
    socket: check.socket,
  });
}
