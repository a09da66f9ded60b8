import { Duplex } from "node:stream";
import {
  type Metadata,
  type MethodDefinition,
  type Server,
  type ServerDuplexStream,
  type ServerUnaryCall,
  type ServerWritableStream,
  type ServiceDefinition,
  type UntypedServiceImplementation,
  type handleBidiStreamingCall,
  type handleServerStreamingCall,
  type handleUnaryCall,
  type sendUnaryData,
} from "@grpc/grpc-js";
import { Reason, type WeftError, invalid } from "../contract/errors.js";
import { failStream, serviceError } from "../wire/status.js";

/** What a kept library (grpc-health-check, @grpc/reflection) adds its services to. */
export type ServiceRegistry = Pick<Server, "addService">;

/** A method a library serves: its path, and which sides stream (client streaming is not supported). */
export interface LibraryMethod {
  path: string;
  requestStream: boolean;
  responseStream: boolean;
}

/** Adds the library's services to the registry it is given, as its `addToServer` does. */
export type AddLibraryServices = (registry: ServiceRegistry) => void;

type Handler = UntypedServiceImplementation[string];
/** A method as the library defined it, with its handler. */
type Served = { method: MethodDefinition<unknown, unknown>; handler: Handler };
type Decode = (bytes: Buffer) => unknown;

/**
 * Serves `methods` on `server` with a library that is loaded on the first call to any of
 * them: `load` imports it (a dynamic import) and resolves with what adds its services. A
 * sidecar that is never asked does not pay the library's start-up (its import and set-up, a
 * protobufjs parse of the library's .proto); calls wait for the load. If the load fails,
 * every call of `methods` ends with INTERNAL.
 *
 * Requests are decoded in the handler with the library's own deserializer, not by grpc-js:
 * grpc-js ends a call whose request does not deserialize with INTERNAL, which says the server
 * failed; here it is INVALID_ARGUMENT (MALFORMED_MESSAGE), as for Weft's own services, and
 * the library never sees the call. A bidi handler gets the call with each request decoded,
 * and no further request is read while an answer waits for the client to read it: the
 * libraries answer every request at once, so a client that sends and never reads would
 * otherwise grow the sidecar's memory by an answer per request.
 */
export function addLibraryService(server: ServiceRegistry, methods: readonly LibraryMethod[], load: () => Promise<AddLibraryServices>): void {
  const serializers = new Map<string, (value: unknown) => Buffer>();
  let loading: Promise<Map<string, Served>> | undefined;
  const served = (): Promise<Map<string, Served>> =>
    (loading ??= load().then((add) => {
      const all = collect(add, methods);
      for (const [path, s] of all) serializers.set(path, s.method.responseSerialize);
      return all;
    }));
  /** Runs what serves `path` once the library is loaded, unless the call is gone by then; `fail` if it cannot be loaded. */
  const dispatch = (path: string, call: { cancelled: boolean }, fail: (e: Error) => void, run: (s: Served, decode: Decode) => void): void => {
    served().then(
      (all) => {
        const s = all.get(path)!;
        if (!call.cancelled) run(s, decoder(s.method));
      },
      (e: unknown) => {
        if (!call.cancelled) fail(new Error(`${path}: the library that serves it did not load: ${(e as Error).message}`));
      },
    );
  };
  const definition: Record<string, MethodDefinition<Buffer, unknown>> = {};
  const handlers: UntypedServiceImplementation = {};
  for (const { path, requestStream, responseStream } of methods) {
    if (requestStream && !responseStream) throw new Error(`${path}: client-streaming methods are not supported`);
    definition[path] = {
      path,
      requestStream,
      responseStream,
      requestSerialize: (bytes: Buffer) => bytes,
      requestDeserialize: (bytes: Buffer) => bytes,
      // Only the library's handlers answer, so it is loaded by the time an answer is written.
      responseSerialize: (value: unknown) => serializers.get(path)!(value),
      responseDeserialize: (bytes: Buffer) => bytes,
    };
    if (requestStream) {
      handlers[path] = (call: ServerDuplexStream<Buffer, unknown>) =>
        dispatch(path, call, (e) => failStream(call, e), (s, decode) => {
          const handler = s.handler as handleBidiStreamingCall<unknown, unknown>;
          handler(new DecodedDuplex(call, decode) as unknown as ServerDuplexStream<unknown, unknown>);
        });
    } else if (responseStream) {
      handlers[path] = (call: ServerWritableStream<unknown, unknown>) =>
        dispatch(path, call, (e) => failStream(call, e), (s, decode) => {
          try {
            call.request = decode(call.request as Buffer);
          } catch (e) {
            failStream(call, e);
            return;
          }
          (s.handler as handleServerStreamingCall<unknown, unknown>)(call);
        });
    } else {
      handlers[path] = (call: ServerUnaryCall<unknown, unknown>, callback: sendUnaryData<unknown>) =>
        dispatch(path, call, (e) => callback(serviceError(e)), (s, decode) => {
          try {
            call.request = decode(call.request as Buffer);
          } catch (e) {
            callback(serviceError(e));
            return;
          }
          (s.handler as handleUnaryCall<unknown, unknown>)(call, callback);
        });
    }
  }
  server.addService(definition, handlers);
}

/**
 * The handler `implementation` has for the method `name` of `service`, bound to it: by that
 * name, or by the method's `originalName` (proto-loader's lowerCamelCase one), as grpc-js
 * looks it up.
 */
export function handlerOf(service: ServiceDefinition, implementation: UntypedServiceImplementation, name: string): Handler | undefined {
  const originalName = service[name]?.originalName;
  const handler = implementation[name] ?? (originalName === undefined ? undefined : implementation[originalName]);
  return handler?.bind(implementation);
}

/** The library's methods by path, each with its handler; every one of `methods` must be among them. */
function collect(add: AddLibraryServices, methods: readonly LibraryMethod[]): Map<string, Served> {
  const all = new Map<string, Served>();
  add({
    addService(service: ServiceDefinition, implementation: UntypedServiceImplementation): void {
      for (const [name, method] of Object.entries(service) as [string, MethodDefinition<unknown, unknown>][]) {
        const handler = handlerOf(service, implementation, name);
        if (handler) all.set(method.path, { method, handler });
      }
    },
  });
  for (const m of methods) {
    const s = all.get(m.path);
    if (!s || s.method.requestStream !== m.requestStream || s.method.responseStream !== m.responseStream) throw new Error(`the library does not serve ${m.path} as expected`);
  }
  return all;
}

/**
 * The library's deserializer of `method`'s requests; what it cannot read is INVALID_ARGUMENT
 * (MALFORMED_MESSAGE), naming the message type the request should have been.
 */
function decoder(method: MethodDefinition<unknown, unknown>): Decode {
  return (bytes) => {
    try {
      return method.requestDeserialize(bytes);
    } catch (e) {
      throw malformed(method, e);
    }
  };
}

function malformed(method: MethodDefinition<unknown, unknown>, e: unknown): WeftError {
  // proto-loader's definitions carry the request's DescriptorProto; its package is the service's.
  const type = (method as { requestType?: { type?: { name?: unknown } } }).requestType?.type?.name;
  const service = method.path.split("/")[1] ?? "";
  const expected = typeof type === "string" ? `a ${service.slice(0, service.lastIndexOf(".") + 1)}${type}` : `a request of ${method.path}`;
  return invalid(Reason.MALFORMED_MESSAGE, "", `the request is not ${expected}: ${(e as Error).message}`);
}

/**
 * A bidi call as a library's handler sees it: requests come out decoded, answers go into the
 * call. The call is paused while an answer waits to be written or a request waits to be
 * read, so what the sidecar holds for one stream is bounded however much the client sends.
 * Bytes that do not decode end the call with INVALID_ARGUMENT; this stream then just closes.
 */
class DecodedDuplex extends Duplex {
  constructor(
    private readonly call: ServerDuplexStream<Buffer, unknown>,
    decode: Decode,
  ) {
    super({ objectMode: true, readableHighWaterMark: 1, writableHighWaterMark: 1 });
    call.on("data", (bytes: Buffer) => {
      let request: unknown;
      try {
        request = decode(bytes);
      } catch (e) {
        failStream(call, e);
        this.destroy();
        return;
      }
      this.push(request);
      this.flow();
    });
    call.on("end", () => this.push(null));
    call.on("cancelled", () => {
      this.emit("cancelled", "cancelled");
      this.destroy();
    });
    this.on("drain", () => this.flow());
  }

  /** Reads requests from the call only while no answer and no request is waiting. */
  private flow(): void {
    if (this.writableNeedDrain || this.readableLength >= this.readableHighWaterMark) this.call.pause();
    else this.call.resume();
  }

  override _read(): void {
    this.flow();
  }

  override _write(answer: unknown, _encoding: BufferEncoding, done: (error?: Error | null) => void): void {
    const call = this.call;
    if (call.cancelled || call.destroyed || call.writableEnded) done();
    else if (call.write(answer)) done();
    else call.once("drain", () => done());
  }

  override _final(done: (error?: Error | null) => void): void {
    if (!this.call.cancelled && !this.call.writableEnded) this.call.end();
    done();
  }

  get cancelled(): boolean {
    return this.call.cancelled;
  }

  get metadata(): Metadata {
    return this.call.metadata;
  }

  getPeer(): string {
    return this.call.getPeer();
  }

  getPath(): string {
    return this.call.getPath();
  }

  getDeadline(): ReturnType<ServerDuplexStream<Buffer, unknown>["getDeadline"]> {
    return this.call.getDeadline();
  }

  sendMetadata(metadata: Metadata): void {
    this.call.sendMetadata(metadata);
  }
}
