import { type DescEnum, type DescExtension, type DescFile, type DescMessage, toBinary } from "@bufbuild/protobuf";
import { BinaryReader, BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import { type Server, type ServerDuplexStream, type ServiceDefinition, status } from "@grpc/grpc-js";
import { Reason, invalid } from "../contract/errors.js";
import { rawMethod } from "../wire/service-definitions.js";
import { failStream, quoted, writeSafe } from "../wire/status.js";

/**
 * gRPC server reflection, `grpc.reflection.v1` and `v1alpha` (the same messages under two
 * names), over raw bytes: its messages are written and read here. The @grpc/reflection
 * package parses reflection.proto with @grpc/proto-loader and protobufjs, and decodes every
 * file descriptor again with protobufjs, which every start would pay for.
 *
 * It answers for the files it is given and every file they import: list_services (the
 * services of the given files), file_by_filename, file_containing_symbol (a message, enum,
 * enum value, field, oneof, service, method or extension, by its full name),
 * file_containing_extension and all_extension_numbers_of_type. A file is always sent with
 * every file it imports, directly or not. Other requests get an error_response (the stream
 * stays open), as the protocol asks; bytes that are not a ServerReflectionRequest end the
 * stream with INVALID_ARGUMENT (MALFORMED_MESSAGE).
 */

type ReflectionCall = ServerDuplexStream<Buffer, Uint8Array>;

/** ServerReflectionRequest's fields (one of 3-7 is the question). */
const REQUEST = { host: 1, fileByFilename: 3, fileContainingSymbol: 4, fileContainingExtension: 5, allExtensionNumbersOfType: 6, listServices: 7 } as const;
/** ServerReflectionResponse's fields. */
const RESPONSE = { validHost: 1, originalRequest: 2, fileDescriptor: 4, allExtensionNumbers: 5, listServices: 6, error: 7 } as const;

/** A ServerReflectionRequest: its host and the question it asks. */
interface ReflectionRequest {
  host: string;
  question:
    | { kind: "fileByFilename" | "fileContainingSymbol" | "allExtensionNumbersOfType" | "listServices"; name: string }
    | { kind: "fileContainingExtension"; containingType: string; extensionNumber: number }
    | { kind: "none" };
}

/** An answer: the response's field number (4-7) and the bytes of that field's message. */
type Answer = [field: number, message: Uint8Array];

const STRING_QUESTIONS: Record<number, ReflectionRequest["question"]["kind"]> = {
  [REQUEST.fileByFilename]: "fileByFilename",
  [REQUEST.fileContainingSymbol]: "fileContainingSymbol",
  [REQUEST.allExtensionNumbersOfType]: "allExtensionNumbersOfType",
  [REQUEST.listServices]: "listServices",
};

/**
 * Reads a ServerReflectionRequest. Unknown fields are skipped; of the question fields, the
 * last on the wire wins (a oneof).
 * @throws WeftError INVALID_ARGUMENT (MALFORMED_MESSAGE) when the bytes are not one.
 */
function readReflectionRequest(bytes: Uint8Array): ReflectionRequest {
  const request: ReflectionRequest = { host: "", question: { kind: "none" } };
  try {
    const reader = new BinaryReader(bytes);
    while (reader.pos < reader.len) {
      const [field, wireType] = reader.tag();
      const known = field === REQUEST.host || field === REQUEST.fileContainingExtension || STRING_QUESTIONS[field] !== undefined;
      if (!known) {
        reader.skip(wireType, field);
        continue;
      }
      if (wireType !== WireType.LengthDelimited) throw new Error(`field ${field} is not length-delimited`);
      if (field === REQUEST.host) request.host = reader.string();
      else if (field === REQUEST.fileContainingExtension) request.question = readExtensionRequest(reader.bytes());
      else request.question = { kind: STRING_QUESTIONS[field]!, name: reader.string() } as ReflectionRequest["question"];
    }
  } catch (e) {
    throw invalid(Reason.MALFORMED_MESSAGE, "", `the request is not a grpc.reflection ServerReflectionRequest: ${(e as Error).message}`);
  }
  return request;
}

/** ExtensionRequest{containing_type = 1, extension_number = 2}. */
function readExtensionRequest(bytes: Uint8Array): ReflectionRequest["question"] {
  const reader = new BinaryReader(bytes);
  let containingType = "";
  let extensionNumber = 0;
  while (reader.pos < reader.len) {
    const [field, wireType] = reader.tag();
    if (field === 1 && wireType === WireType.LengthDelimited) containingType = reader.string();
    else if (field === 2 && wireType === WireType.Varint) extensionNumber = reader.int32();
    else if (field === 1 || field === 2) throw new Error(`field ${field} of file_containing_extension has the wrong wire type`);
    else reader.skip(wireType, field);
  }
  return { kind: "fileContainingExtension", containingType, extensionNumber };
}

/** The files, names and extensions that reflection answers from, indexed once. */
class ReflectionIndex {
  /** Every file by its file name ("weft/v1/mesh.proto"), with what it imports, transitively. */
  private readonly files = new Map<string, DescFile>();
  /** The file declaring each full name (no leading dot). */
  private readonly symbols = new Map<string, DescFile>();
  /** Full names of every message type, nested ones included. */
  private readonly messages = new Set<string>();
  /** Per extended message: its extensions by number. */
  private readonly extensions = new Map<string, Map<number, DescFile>>();
  /** A FileDescriptorResponse per file (the file and everything it imports); made when first asked. */
  private readonly responses = new Map<DescFile, Uint8Array>();
  /** Full names of the given files' services. */
  readonly services: string[] = [];

  constructor(files: readonly DescFile[]) {
    for (const file of files) {
      for (const service of file.services) this.services.push(service.typeName);
      this.addFile(file);
    }
  }

  private addFile(file: DescFile): void {
    const name = file.proto.name;
    if (this.files.has(name)) return;
    this.files.set(name, file);
    for (const dep of file.dependencies) this.addFile(dep);
    for (const message of file.messages) this.addMessage(file, message);
    for (const e of file.enums) this.addEnum(file, e);
    for (const ext of file.extensions) this.addExtension(file, ext);
    for (const service of file.services) {
      this.symbol(service.typeName, file);
      for (const method of service.methods) this.symbol(`${service.typeName}.${method.name}`, file);
    }
  }

  private addMessage(file: DescFile, message: DescMessage): void {
    this.symbol(message.typeName, file);
    this.messages.add(message.typeName);
    for (const field of message.fields) this.symbol(`${message.typeName}.${field.name}`, file);
    for (const oneof of message.oneofs) this.symbol(`${message.typeName}.${oneof.name}`, file);
    for (const nested of message.nestedMessages) this.addMessage(file, nested);
    for (const e of message.nestedEnums) this.addEnum(file, e);
    for (const ext of message.nestedExtensions) this.addExtension(file, ext);
  }

  private addEnum(file: DescFile, e: DescEnum): void {
    this.symbol(e.typeName, file);
    // Enum values are scoped like C++ enumerators: beside the enum, not inside it.
    const scope = e.typeName.slice(0, e.typeName.length - e.name.length);
    for (const value of e.values) this.symbol(`${scope}${value.name}`, file);
  }

  private addExtension(file: DescFile, ext: DescExtension): void {
    this.symbol(ext.typeName, file);
    const numbers = this.extensions.get(ext.extendee.typeName) ?? new Map<number, DescFile>();
    numbers.set(ext.number, file);
    this.extensions.set(ext.extendee.typeName, numbers);
  }

  private symbol(name: string, file: DescFile): void {
    if (!this.symbols.has(name)) this.symbols.set(name, file);
  }

  /** The answer to one request: a response field and its message, or an error_response. */
  answer(question: ReflectionRequest["question"]): Answer {
    switch (question.kind) {
      case "listServices":
        return [RESPONSE.listServices, listServicesResponse(this.services)];
      case "fileByFilename": {
        const file = this.files.get(question.name);
        return file ? this.fileResponse(file) : errorResponse(status.NOT_FOUND, `no file ${quoted(question.name)}`);
      }
      case "fileContainingSymbol": {
        const file = this.symbols.get(question.name.replace(/^\./, ""));
        return file ? this.fileResponse(file) : errorResponse(status.NOT_FOUND, `no symbol ${quoted(question.name)}`);
      }
      case "fileContainingExtension": {
        const file = this.extensions.get(question.containingType)?.get(question.extensionNumber);
        if (file) return this.fileResponse(file);
        return errorResponse(status.NOT_FOUND, `no extension ${question.extensionNumber} of ${quoted(question.containingType)}`);
      }
      case "allExtensionNumbersOfType": {
        if (!this.messages.has(question.name)) return errorResponse(status.NOT_FOUND, `no message type ${quoted(question.name)}`);
        const numbers = [...(this.extensions.get(question.name)?.keys() ?? [])].sort((a, b) => a - b);
        return [RESPONSE.allExtensionNumbers, extensionNumbersResponse(question.name, numbers)];
      }
      case "none":
        return errorResponse(status.INVALID_ARGUMENT, "the request asks nothing: set one of file_by_filename, file_containing_symbol, file_containing_extension, all_extension_numbers_of_type or list_services");
    }
  }

  /** FileDescriptorResponse{file_descriptor_proto = 1 (repeated)}: `file` first, then what it imports. */
  private fileResponse(file: DescFile): Answer {
    let response = this.responses.get(file);
    if (!response) {
      const writer = new BinaryWriter();
      const sent = new Set<DescFile>();
      const add = (f: DescFile): void => {
        if (sent.has(f)) return;
        sent.add(f);
        writer.tag(1, WireType.LengthDelimited).bytes(toBinary(FileDescriptorProtoSchema, f.proto));
        for (const dep of f.dependencies) add(dep);
      };
      add(file);
      response = writer.finish();
      this.responses.set(file, response);
    }
    return [RESPONSE.fileDescriptor, response];
  }
}

/** ListServiceResponse{service = 1 {name = 1}}. */
function listServicesResponse(names: readonly string[]): Uint8Array {
  const writer = new BinaryWriter();
  for (const name of names) writer.tag(1, WireType.LengthDelimited).fork().tag(1, WireType.LengthDelimited).string(name).join();
  return writer.finish();
}

/** ExtensionNumberResponse{base_type_name = 1, extension_number = 2 (packed)}. */
function extensionNumbersResponse(typeName: string, numbers: readonly number[]): Uint8Array {
  const writer = new BinaryWriter().tag(1, WireType.LengthDelimited).string(typeName);
  if (numbers.length > 0) {
    writer.tag(2, WireType.LengthDelimited).fork();
    for (const n of numbers) writer.int32(n);
    writer.join();
  }
  return writer.finish();
}

/** ErrorResponse{error_code = 1, error_message = 2}. */
function errorResponse(code: status, message: string): Answer {
  return [RESPONSE.error, new BinaryWriter().tag(1, WireType.Varint).int32(code).tag(2, WireType.LengthDelimited).string(message).finish()];
}

/** ServerReflectionResponse{valid_host, original_request, one answer}. */
function response(host: string, original: Uint8Array, [field, message]: Answer): Uint8Array {
  return new BinaryWriter()
    .tag(RESPONSE.validHost, WireType.LengthDelimited)
    .string(host)
    .tag(RESPONSE.originalRequest, WireType.LengthDelimited)
    .bytes(original)
    .tag(field, WireType.LengthDelimited)
    .bytes(message)
    .finish();
}

/** Server reflection for `files` (and what they import), to add to a grpc-js server. */
export class ReflectionService {
  private readonly index: ReflectionIndex;

  constructor(files: readonly DescFile[]) {
    this.index = new ReflectionIndex(files);
  }

  addToServer(server: Server): void {
    for (const version of ["v1", "v1alpha"]) {
      const definition: ServiceDefinition = {
        ServerReflectionInfo: rawMethod(`/grpc.reflection.${version}.ServerReflection/ServerReflectionInfo`, { requestStream: true, responseStream: true }),
      };
      server.addService(definition, { ServerReflectionInfo: (call: ReflectionCall) => this.serve(call) });
    }
  }

  /** Answers each request in order; reads no further while the client is not reading. */
  private serve(call: ReflectionCall): void {
    call.on("data", (bytes: Buffer) => {
      let request: ReflectionRequest;
      try {
        request = readReflectionRequest(bytes);
      } catch (e) {
        failStream(call, e);
        return;
      }
      if (!writeSafe(call, response(request.host, bytes, this.index.answer(request.question)))) {
        call.pause();
        call.once("drain", () => call.resume());
      }
    });
    call.on("end", () => {
      if (!call.cancelled && !call.writableEnded) call.end();
    });
  }
}
