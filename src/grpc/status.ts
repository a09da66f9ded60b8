import { Metadata, type ServerDuplexStream, type ServiceError, status } from "@grpc/grpc-js";
import { WeftError } from "../contract/errors.js";

/**
 * Ends a server stream with the status of `error`: a WeftError keeps its code, and its
 * reason travels in the trailing metadata key "weft-reason"; anything else is INTERNAL.
 * Safe to call on a stream that is already finished.
 */
export function failStream(call: ServerDuplexStream<unknown, unknown>, error: unknown, trailers: Record<string, string> = {}): void {
  if (call.cancelled || call.destroyed || call.writableEnded) return;
  const metadata = new Metadata();
  for (const [k, v] of Object.entries(trailers)) metadata.set(k, v);
  let code = status.INTERNAL;
  let details = `INTERNAL: ${(error as Error)?.message ?? String(error)}`;
  if (error instanceof WeftError) {
    code = error.code;
    details = error.message;
    metadata.set("weft-reason", error.reason);
    if (error.field) metadata.set("weft-field", error.field);
  }
  call.emit("error", { code, details, metadata });
}

/** Writes a message unless the stream is gone (cancelled by the client or already ended). */
export function writeSafe(call: ServerDuplexStream<unknown, unknown>, message: Uint8Array): boolean {
  if (call.cancelled || call.destroyed || call.writableEnded) return false;
  return call.write(message);
}

/** The status of a failure: a WeftError keeps its code and reason; anything else is INTERNAL. */
export function serviceError(error: unknown): Partial<ServiceError> {
  const metadata = new Metadata();
  if (error instanceof WeftError) {
    metadata.set("weft-reason", error.reason);
    if (error.field) metadata.set("weft-field", error.field);
    return { code: error.code, details: error.message, metadata };
  }
  return { code: status.INTERNAL, details: `INTERNAL: ${(error as Error)?.message ?? String(error)}`, metadata };
}
