import {
  Metadata,
  type Server,
  type ServerUnaryCall,
  type ServerWritableStream,
  type ServiceDefinition,
  type sendUnaryData,
  status,
} from "@grpc/grpc-js";
import { service as healthDefinition } from "grpc-health-check";
import { Reason } from "../contract/errors.js";

/** What the sidecar reports: it serves, or it does not (starting, or stopping). */
export type ServingStatus = "SERVING" | "NOT_SERVING";

/**
 * The names the sidecar reports health for: "" (the sidecar as a whole), its service API and
 * its peer API. They always share one status: a sidecar serves all of them or none.
 */
export const HEALTH_SERVICES: readonly string[] = ["", "weft.v1.Mesh", "weft.v1.Peer"];

// grpc.health.v1 messages as grpc-health-check's definition decodes and encodes them.
interface HealthCheckRequest {
  service: string;
}
interface HealthCheckResponse {
  status: ServingStatus | "SERVICE_UNKNOWN";
}
type WatchCall = ServerWritableStream<HealthCheckRequest, HealthCheckResponse>;

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
  private readonly watching = new Set<WatchCall>();
  private closed = false;

  /** The status every name in HEALTH_SERVICES reports now. */
  get status(): ServingStatus {
    return this.current;
  }

  /** Sets the status of every name and tells the watchers of a known name. Idempotent. */
  set(serving: ServingStatus): void {
    if (serving === this.current) return;
    this.current = serving;
    for (const call of this.watching) {
      if (HEALTH_SERVICES.includes(call.request.service)) call.write({ status: serving });
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
    for (const call of [...this.watching]) endWatch(call);
    this.watching.clear();
  }

  addToServer(server: Server): void {
    server.addService(healthDefinition as unknown as ServiceDefinition, {
      Check: (call: ServerUnaryCall<HealthCheckRequest, HealthCheckResponse>, callback: sendUnaryData<HealthCheckResponse>) => {
        const name = call.request.service;
        if (HEALTH_SERVICES.includes(name)) callback(null, { status: this.current });
        else callback({ code: status.NOT_FOUND, details: `no health status for "${name}"; this sidecar reports ${HEALTH_SERVICES.map((s) => `"${s}"`).join(", ")}` });
      },
      Watch: (call: WatchCall) => {
        if (this.closed) {
          endWatch(call);
          return;
        }
        this.watching.add(call);
        const forget = (): void => void this.watching.delete(call);
        call.on("cancelled", forget);
        call.on("error", forget);
        call.write({ status: HEALTH_SERVICES.includes(call.request.service) ? this.current : "SERVICE_UNKNOWN" });
      },
      List: (_call: ServerUnaryCall<unknown, unknown>, callback: sendUnaryData<{ statuses: Record<string, HealthCheckResponse> }>) => {
        callback(null, { statuses: Object.fromEntries(HEALTH_SERVICES.map((s) => [s, { status: this.current }])) });
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
