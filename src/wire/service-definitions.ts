import { type DescMethod, type DescService, fromBinary, toBinary } from "@bufbuild/protobuf";
import type { MethodDefinition, ServiceDefinition } from "@grpc/grpc-js";

/**
 * grpc-js service definitions built from protobuf-es descriptors.
 *
 * The server side passes raw bytes both ways: handlers decode requests themselves (so a
 * malformed message becomes INVALID_ARGUMENT rather than a transport error, and event bytes
 * are kept as received) and encode responses themselves. The client side is typed.
 */

const asBuffer = (b: Uint8Array): Buffer => Buffer.from(b.buffer, b.byteOffset, b.byteLength);

const streaming = (method: DescMethod): { requestStream: boolean; responseStream: boolean } => ({
  requestStream: method.methodKind === "client_streaming" || method.methodKind === "bidi_streaming",
  responseStream: method.methodKind === "server_streaming" || method.methodKind === "bidi_streaming",
});

/** A method whose handler receives request bytes and writes response bytes. */
function rawMethod(path: string, kind: { requestStream: boolean; responseStream: boolean }): MethodDefinition<Buffer, Uint8Array> {
  return {
    path,
    ...kind,
    requestSerialize: asBuffer,
    requestDeserialize: (b: Buffer) => b,
    responseSerialize: asBuffer,
    responseDeserialize: (b: Buffer) => b,
  };
}

/** A definition whose handlers receive request bytes and write response bytes. */
export function rawServiceDefinition(service: DescService): ServiceDefinition {
  const def: Record<string, MethodDefinition<Buffer, Uint8Array>> = {};
  for (const method of service.methods) def[method.name] = rawMethod(`/${service.typeName}/${method.name}`, streaming(method));
  return def;
}

/**
 * A definition for clients: requests are encoded from, responses decoded to, messages.
 * `readers` decode the responses of the named methods instead of `fromBinary` (hand-written
 * decoders of hot messages, which must give the same message).
 */
export function typedServiceDefinition(service: DescService, readers: Record<string, (bytes: Buffer) => unknown> = {}): ServiceDefinition {
  const def: Record<string, MethodDefinition<unknown, unknown>> = {};
  for (const method of service.methods) {
    def[method.name] = {
      path: `/${service.typeName}/${method.name}`,
      ...streaming(method),
      // eslint-disable-next-line @typescript-eslint/no-explicit-any
      // A request the caller already encoded (the publisher's batches) goes as it is.
      requestSerialize: (m: any) => asBuffer(m instanceof Uint8Array ? m : toBinary(method.input, m)),
      requestDeserialize: (b: Buffer) => fromBinary(method.input, b),
      // eslint-disable-next-line @typescript-eslint/no-explicit-any
      responseSerialize: (m: any) => asBuffer(toBinary(method.output, m)),
      responseDeserialize: readers[method.name] ?? ((b: Buffer) => fromBinary(method.output, b)),
    };
  }
  return def;
}
