import { fromBinary } from "@bufbuild/protobuf";
import { BinaryReader, BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import { type FileDescriptorProto, FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import { type Client, type ClientDuplexStream, type ServiceError, status } from "@grpc/grpc-js";
import { wireFields } from "./wire-fields.js";

/**
 * A client of gRPC server reflection with no generated code: requests and responses encoded
 * by hand from reflection.proto's field numbers, as a client of another language would.
 */

const raw = (b: Buffer): Buffer => b;

export const text = (b: number | Uint8Array | undefined): string => Buffer.from(b as Uint8Array).toString();
export const field = (message: Uint8Array, no: number): number | Uint8Array | undefined => wireFields(message).find(([n]) => n === no)?.[1];

/** A ServerReflectionRequest: `host` (1) and one string question (3, 4, 6 or 7). */
export function request(question: number, value: string, host = ""): Buffer {
  const w = new BinaryWriter();
  if (host) w.tag(1, WireType.LengthDelimited).string(host);
  return Buffer.from(w.tag(question, WireType.LengthDelimited).string(value).finish());
}
export const FILE_BY_FILENAME = 3;
export const FILE_CONTAINING_SYMBOL = 4;
export const ALL_EXTENSION_NUMBERS_OF_TYPE = 6;
export const LIST_SERVICES = 7;

/** What a ServerReflectionResponse answers: files, services, extension numbers or an error. */
export interface Answer {
  host: string;
  original: Uint8Array;
  files?: FileDescriptorProto[];
  services?: string[];
  extensionNumbers?: { baseType: string; numbers: number[] };
  error?: { code: number; message: string };
}

function readAnswer(bytes: Uint8Array): Answer {
  const answer: Answer = { host: "", original: new Uint8Array() };
  for (const [no, value] of wireFields(bytes)) {
    const v = value as Uint8Array;
    if (no === 1) answer.host = text(v);
    else if (no === 2) answer.original = v;
    else if (no === 4) answer.files = wireFields(v).map(([, f]) => fromBinary(FileDescriptorProtoSchema, f as Uint8Array));
    else if (no === 5) {
      const r = new BinaryReader(field(v, 2) as Uint8Array | undefined ?? new Uint8Array());
      const numbers: number[] = [];
      while (r.pos < r.len) numbers.push(r.int32());
      answer.extensionNumbers = { baseType: text(field(v, 1)), numbers };
    } else if (no === 6) answer.services = wireFields(v).map(([, s]) => text(field(s as Uint8Array, 1)));
    else if (no === 7) answer.error = { code: field(v, 1) as number, message: text(field(v, 2) ?? new Uint8Array()) };
  }
  return answer;
}

/** One ServerReflectionInfo stream: requests go in, answers come out in order. */
export class ReflectionStream {
  private readonly call: ClientDuplexStream<Buffer, Buffer>;
  private readonly answers: Answer[] = [];
  private waiting: ((a: Answer) => void) | undefined;
  /** Resolves with the stream's end: undefined when it ended OK, else its error. */
  readonly ended: Promise<ServiceError | undefined>;

  constructor(client: Client, version = "v1") {
    this.call = client.makeBidiStreamRequest(`/grpc.reflection.${version}.ServerReflection/ServerReflectionInfo`, raw, raw);
    this.call.on("data", (b: Buffer) => {
      const a = readAnswer(b);
      if (this.waiting) this.waiting(a);
      else this.answers.push(a);
      this.waiting = undefined;
    });
    this.ended = new Promise((resolve) => {
      this.call.on("error", (e: ServiceError) => resolve(e));
      this.call.on("status", (s) => s.code === status.OK && resolve(undefined));
    });
  }

  send(bytes: Buffer): void {
    this.call.write(bytes);
  }

  next(): Promise<Answer> {
    const a = this.answers.shift();
    return a ? Promise.resolve(a) : new Promise((resolve) => (this.waiting = resolve));
  }

  async ask(bytes: Buffer): Promise<Answer> {
    this.send(bytes);
    return this.next();
  }

  end(): void {
    this.call.end();
  }
}
