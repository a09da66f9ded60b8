import { Metadata, type ServerDuplexStream, type ServerWritableStream, type ServiceError, status } from "@grpc/grpc-js";
import { WeftError } from "../contract/errors.js";

/**
 * Ends a server stream with the status of `error`: a WeftError keeps its code, and its
 * reason travels in the trailing metadata key "weft-reason"; anything else is INTERNAL.
 * Safe to call on a stream that is already finished.
 */
export function failStream(call: ServerDuplexStream<unknown, unknown> | ServerWritableStream<unknown, unknown>, error: unknown, trailers: Record<string, string> = {}): void {
  if (call.cancelled || call.destroyed || call.writableEnded) return;
  const failure = serviceError(error);
  for (const [k, v] of Object.entries(trailers)) failure.metadata.set(k, v);
  call.emit("error", failure);
}

/** Writes a message unless the stream is gone (cancelled by the client or already ended). */
export function writeSafe(call: ServerDuplexStream<unknown, unknown>, message: Uint8Array): boolean {
  if (call.cancelled || call.destroyed || call.writableEnded) return false;
  return call.write(message);
}

/** The status of a failure: a WeftError keeps its code and reason; anything else is INTERNAL. */
export function serviceError(error: unknown): Partial<ServiceError> & { metadata: Metadata } {
  const metadata = new Metadata();
  if (error instanceof WeftError) {
    metadata.set("weft-reason", error.reason);
    if (error.field) metadata.set("weft-field", error.field);
    return { code: error.code, details: error.message, metadata };
  }
  return { code: status.INTERNAL, details: `INTERNAL: ${(error as Error)?.message ?? String(error)}`, metadata };
}

/** A name as the error quotes it: at most 64 characters of it, so the status stays small. */
export function quoted(name: string): string {
  return name.length <= 64 ? JSON.stringify(name) : `${JSON.stringify(name.slice(0, 64))}… (${name.length} characters)`;
}
