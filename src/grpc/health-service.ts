import {
  Metadata,
  type Server,
  type ServerUnaryCall,
  type ServerWritableStream,
  type ServiceDefinition,
  type sendUnaryData,
  status,
} from "@grpc/grpc-js";
import { BinaryReader, BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import { Reason, invalid } from "../contract/errors.js";
import { rawMethod } from "../wire/service-definitions.js";
import { failStream, quoted, serviceError } from "../wire/status.js";

/** What the sidecar reports: it serves, or it does not (starting, or stopping). */
export type ServingStatus = "SERVING" | "NOT_SERVING";

/**
 * The names the sidecar reports health for: "" (the sidecar as a whole), its service API and
 * its peer API. They always share one status: a sidecar serves all of them or none.
 */
export const HEALTH_SERVICES: readonly string[] = ["", "weft.v1.Mesh", "weft.v1.Peer"];

/** grpc.health.v1's HealthCheckResponse.ServingStatus, by number. */
const STATUS_NUMBERS = { SERVING: 1, NOT_SERVING: 2, SERVICE_UNKNOWN: 3 } as const;
type ReportedStatus = keyof typeof STATUS_NUMBERS;
type WatchCall = ServerWritableStream<Buffer, Uint8Array>;

/**
 * grpc.health.v1.Health over raw bytes, its three small messages written and read here: the
 * grpc-health-check package's definition parses health.proto with @grpc/proto-loader on
 * import, which every start would pay for.
 */
const healthDefinition: ServiceDefinition = {
  Check: rawMethod("/grpc.health.v1.Health/Check", { requestStream: false, responseStream: false }),
  Watch: rawMethod("/grpc.health.v1.Health/Watch", { requestStream: false, responseStream: true }),
  List: rawMethod("/grpc.health.v1.Health/List", { requestStream: false, responseStream: false }),
};

/**
 * The `service` of a HealthCheckRequest (field 1, a string; other fields are skipped).
 * @throws WeftError INVALID_ARGUMENT (MALFORMED_MESSAGE) when the bytes are not one.
 */
function readServiceName(bytes: Uint8Array): string {
  let service = "";
  try {
    const reader = new BinaryReader(bytes);
    while (reader.pos < reader.len) {
      const [field, wireType] = reader.tag();
      if (field === 1 && wireType !== WireType.LengthDelimited) throw new Error("field 1 (service) is not a string");
      if (field === 1) service = reader.string();
      else reader.skip(wireType, field);
    }
  } catch (e) {
    throw invalid(Reason.MALFORMED_MESSAGE, "", `the request is not a grpc.health.v1.HealthCheckRequest: ${(e as Error).message}`);
  }
  return service;
}

/** HealthCheckResponse{status}. */
function checkResponse(reported: ReportedStatus): Uint8Array {
  return new BinaryWriter().tag(1, WireType.Varint).int32(STATUS_NUMBERS[reported]).finish();
}

/** HealthListResponse{statuses}: a map of name to HealthCheckResponse. */
function listResponse(statuses: [string, ReportedStatus][]): Uint8Array {
  const writer = new BinaryWriter();
  for (const [name, reported] of statuses) {
    writer.tag(1, WireType.LengthDelimited).fork().tag(1, WireType.LengthDelimited).string(name).tag(2, WireType.LengthDelimited).bytes(checkResponse(reported)).join();
  }
  return writer.finish();
}

/**
 * grpc.health.v1.Health (Check, Watch, List) for one sidecar.
 *
 * Starts NOT_SERVING; the sidecar sets SERVING once its log is open and both listeners are
 * bound, and NOT_SERVING again first thing when it stops. Check of an unknown name is
 * NOT_FOUND; Watch of one sends SERVICE_UNKNOWN and stays open, as the protocol says.
 * Watch streams get the current status at once and every change after it; `close()` ends
 * them with UNAVAILABLE, so that a watcher does not hold a stopping server open.
 */
export class HealthService {
  private current: ServingStatus = "NOT_SERVING";
  /** Open Watch calls, each with the name it watches. */
  private readonly watching = new Map<WatchCall, string>();
  private closed = false;

  /** The status every name in HEALTH_SERVICES reports now. */
  get status(): ServingStatus {
    return this.current;
  }

  /** Sets the status of every name and tells the watchers of a known name. Idempotent. */
  set(serving: ServingStatus): void {
    if (serving === this.current) return;
    this.current = serving;
    for (const [call, name] of this.watching) {
      if (HEALTH_SERVICES.includes(name)) call.write(checkResponse(serving));
    }
  }

  /**
   * Reports NOT_SERVING and ends every Watch with UNAVAILABLE (reason SHUTTING_DOWN); later
   * Watch calls are refused the same way. Check and List keep answering while the server
   * still takes calls. Idempotent.
   */
  close(): void {
    this.set("NOT_SERVING");
    this.closed = true;
    for (const call of [...this.watching.keys()]) endWatch(call);
    this.watching.clear();
  }

  addToServer(server: Server): void {
    server.addService(healthDefinition, {
      Check: (call: ServerUnaryCall<Buffer, Uint8Array>, callback: sendUnaryData<Uint8Array>) => {
        let name: string;
        try {
          name = readServiceName(call.request);
        } catch (e) {
          callback(serviceError(e));
          return;
        }
        if (HEALTH_SERVICES.includes(name)) callback(null, checkResponse(this.current));
        else callback({ code: status.NOT_FOUND, details: `no health status for ${quoted(name)}; this sidecar reports ${HEALTH_SERVICES.map((s) => `"${s}"`).join(", ")}` });
      },
      Watch: (call: WatchCall) => {
        let name: string;
        try {
          name = readServiceName(call.request);
        } catch (e) {
          failStream(call, e);
          return;
        }
        if (this.closed) {
          endWatch(call);
          return;
        }
        this.watching.set(call, name);
        const forget = (): void => void this.watching.delete(call);
        call.on("cancelled", forget);
        call.on("error", forget);
        call.write(checkResponse(HEALTH_SERVICES.includes(name) ? this.current : "SERVICE_UNKNOWN"));
      },
      // HealthListRequest has no fields: whatever it holds is ignored.
      List: (_call: ServerUnaryCall<Buffer, Uint8Array>, callback: sendUnaryData<Uint8Array>) => {
        callback(null, listResponse(HEALTH_SERVICES.map((s) => [s, this.current])));
      },
    });
  }
}

function endWatch(call: WatchCall): void {
  if (call.cancelled || call.destroyed || call.writableEnded) return;
  const metadata = new Metadata();
  metadata.set("weft-reason", Reason.SHUTTING_DOWN);
  call.emit("error", { code: status.UNAVAILABLE, details: `${Reason.SHUTTING_DOWN}: the sidecar is shutting down`, metadata });
}
