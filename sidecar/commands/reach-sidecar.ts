import { Client, Metadata, type ServiceError, status } from "@grpc/grpc-js";
import type { ClientTls } from "../../src/client/index.js";
import { clientCredentials } from "../../src/client/credentials.js";
import { formatDuration } from "../units.js";
import { CommandError } from "./arguments.js";

// grpc.health.v1.HealthCheckResponse is one enum field: tag 0x08, then the value.
const SERVING = 1;

/**
 * Checks that a Weft sidecar answers at `address` within `timeoutMs`, with the standard
 * gRPC health check. The client reconnects forever by design; a command line tool must
 * instead fail fast and say why when there is nobody there. A connection that fails (refused,
 * no such socket, a TLS handshake that fails) fails the check at once: the call does not
 * wait for the channel to become ready, so only an address that never answers takes
 * `timeoutMs`.
 *
 * @throws CommandError when the connection fails or nothing answers in time, the server is
 *   not a sidecar, or the sidecar is not serving (shutting down).
 */
export async function reachSidecar(address: string, timeoutMs: number, tls?: ClientTls): Promise<void> {
  const target = address.startsWith("/") ? `unix:${address}` : address;
  // Health needs no token: it is for probes.
  const secure = clientCredentials(tls);
  const client = new Client(target, secure.credentials, secure.options);
  try {
    const reply = await new Promise<Buffer>((resolve, reject) => {
      client.makeUnaryRequest(
        "/grpc.health.v1.Health/Check",
        (request: Buffer) => request,
        (response: Buffer) => response,
        Buffer.alloc(0), // HealthCheckRequest{service: ""}: the whole server
        new Metadata({ waitForReady: false }),
        { deadline: Date.now() + timeoutMs },
        (error: ServiceError | null, response?: Buffer) => (error ? reject(error) : resolve(response ?? Buffer.alloc(0))),
      );
    });
    const serving = reply.length === 2 && reply[0] === 0x08 && reply[1] === SERVING;
    if (!serving) throw new CommandError(`the sidecar at ${address} is not serving (it may be shutting down)`);
  } catch (e) {
    if (e instanceof CommandError) throw e;
    const error = e as ServiceError;
    const hint = "is `weft sidecar` running there? (choose the address with --to or WEFT_ADDRESS)";
    if (error.code === status.DEADLINE_EXCEEDED) {
      throw new CommandError(`cannot reach a sidecar at ${address} within ${formatDuration(timeoutMs)}: ${hint}`);
    }
    if (error.code === status.UNAVAILABLE) throw new CommandError(`cannot reach a sidecar at ${address}: ${connectionProblem(error.details || error.message)}; ${hint}`);
    if (error.code === status.UNIMPLEMENTED) {
      throw new CommandError(`the server at ${address} is not a Weft sidecar (it has no gRPC health service)`);
    }
    throw new CommandError(`cannot check the sidecar at ${address}: ${error.details || error.message}`);
  } finally {
    client.close();
  }
}

/** Why a connection failed, in the operator's terms, from grpc-js's UNAVAILABLE details. */
function connectionProblem(details: string): string {
  if (details.includes("ECONNREFUSED")) return "the connection was refused (nothing listens there)";
  if (details.includes("ENOENT")) return "no such socket";
  if (details.includes("EACCES")) return "permission denied";
  if (details.includes("ENOTFOUND") || details.includes("Name resolution failed")) return "the host name does not resolve";
  if (details.includes("EHOSTUNREACH") || details.includes("ENETUNREACH")) return "the host is unreachable";
  return `the connection failed (${details.replace(/\s*Resolution note:\s*$/, "").trim()})`;
}
