import type { ClientHttp2Session, ClientHttp2Stream } from "node:http2";

/**
 * gRPC spoken over Node's own HTTP/2, below grpc-js: for tests that must see what happens on
 * the connection itself (the windows each side advertises, when bytes left for the socket).
 */

/** Opens a gRPC call to `path` ("/package.Service/Method"), as any gRPC client does first. */
export function grpcRequest(session: ClientHttp2Session, path: string): ClientHttp2Stream {
  const stream = session.request({ ":method": "POST", ":path": path, "content-type": "application/grpc", te: "trailers" });
  stream.on("error", () => {});
  return stream;
}

/** A gRPC message frame: not compressed, 4-byte length, the bytes. */
export function grpcFrame(bytes: Uint8Array): Buffer {
  const frame = Buffer.alloc(5 + bytes.length);
  frame.writeUInt32BE(bytes.length, 1);
  frame.set(bytes, 5);
  return frame;
}

/** The gRPC messages a stream receives, decoded. */
export async function* grpcMessages<T>(stream: ClientHttp2Stream, decode: (bytes: Uint8Array) => T): AsyncGenerator<T> {
  let buffered = Buffer.alloc(0);
  for await (const chunk of stream) {
    buffered = Buffer.concat([buffered, chunk as Buffer]);
    while (buffered.length >= 5 && buffered.length >= 5 + buffered.readUInt32BE(1)) {
      const length = buffered.readUInt32BE(1);
      yield decode(buffered.subarray(5, 5 + length));
      buffered = buffered.subarray(5 + length);
    }
  }
}
