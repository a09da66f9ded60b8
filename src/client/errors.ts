import { type ServiceError, status } from "@grpc/grpc-js";

/** A refusal from the sidecar, or a failure of the client, with a gRPC code and a stable reason. */
export class ClientError extends Error {
  constructor(
    /** The gRPC status code. */
    readonly code: status,
    /** The sidecar's stable reason (e.g. "INVALID_CHANNEL"), or the client's own. */
    readonly reason: string,
    message: string,
    /** The offending field, when the sidecar named one. */
    readonly field = "",
  ) {
    super(message);
    this.name = "ClientError";
  }
}

/** Wraps a grpc-js error, reading the reason from the "weft-reason" trailer. */
export function toClientError(e: ServiceError): ClientError {
  const reason = String(e.metadata?.get("weft-reason")[0] ?? status[e.code] ?? "UNKNOWN");
  const field = String(e.metadata?.get("weft-field")[0] ?? "");
  return new ClientError(e.code, reason, e.details || e.message, field);
}

/**
 * Codes after which reconnecting can help: the sidecar went away, is restarting, or cut the
 * call when its shutdown grace ran out (CANCELLED; the client's own cancels never get here).
 */
export function isRetryable(code: status): boolean {
  return code === status.UNAVAILABLE || code === status.DEADLINE_EXCEEDED || code === status.ABORTED || code === status.CANCELLED;
}

/** Exponential backoff with jitter, 100 ms up to 5 s. */
export class Backoff {
  private attempt = 0;
  constructor(
    private readonly baseMs = 100,
    private readonly maxMs = 5000,
  ) {}
  next(): number {
    const ceiling = Math.min(this.maxMs, this.baseMs * 2 ** this.attempt++);
    return ceiling / 2 + Math.random() * (ceiling / 2);
  }
  reset(): void {
    this.attempt = 0;
  }
}
