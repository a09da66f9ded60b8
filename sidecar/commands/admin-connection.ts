import type { Timestamp } from "@bufbuild/protobuf/wkt";
import { status } from "@grpc/grpc-js";
import { AdminClient, ClientError } from "../../src/client/index.js";
import { CommandError } from "./arguments.js";
import { type ClientTlsOptions, readClientTls } from "./client-tls.js";
import { reachSidecar } from "./reach-sidecar.js";

/** The options every admin command takes. */
export interface AdminOptions extends ClientTlsOptions {
  to: string;
  timeout: number;
  json?: boolean;
}

/**
 * Runs `work` with a client of the sidecar's weft.v1.Admin at `o.to`, after checking that
 * a sidecar answers there (failing fast with a clear message otherwise). Refusals become
 * CommandErrors carrying the sidecar's reason ("GROUP_NOT_FOUND: ...").
 */
export async function withAdmin<T>(o: AdminOptions, work: (admin: AdminClient) => Promise<T>): Promise<T> {
  const tls = await readClientTls(o);
  await reachSidecar(o.to, o.timeout, tls);
  const admin = new AdminClient(o.to, { timeoutMs: o.timeout, ...(tls ? { tls } : {}), ...(o.token ? { token: o.token } : {}) });
  try {
    return await work(admin);
  } catch (e) {
    throw describeFailure(e, o.to);
  } finally {
    admin.close();
  }
}

/** A failure of an admin call, in the operator's terms. */
export function describeFailure(e: unknown, address: string): unknown {
  if (!(e instanceof ClientError)) return e;
  if (e.code === status.UNIMPLEMENTED) {
    return new CommandError(`the sidecar at ${address} does not serve weft.v1.Admin (a release before the admin API?)`);
  }
  if (e.code === status.DEADLINE_EXCEEDED) return new CommandError(`the sidecar at ${address} did not answer in time (raise --timeout)`);
  return new CommandError(e.message.startsWith(e.reason) ? e.message : `${e.reason}: ${e.message}`);
}

/** A uint64 for JSON: a number, or a decimal string beyond 2^53 - 1. */
export function jsonNumber(value: bigint): number | string {
  return value <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(value) : value.toString();
}

/** A Timestamp as Unix ms; undefined when unset. */
export function timestampMs(t: Timestamp | undefined): number | undefined {
  return t === undefined ? undefined : Number(t.seconds) * 1000 + Math.floor(t.nanos / 1e6);
}

/** A Timestamp as ISO 8601 for JSON; null when unset. */
export function jsonTime(t: Timestamp | undefined): string | null {
  const ms = timestampMs(t);
  return ms === undefined ? null : new Date(ms).toISOString();
}
