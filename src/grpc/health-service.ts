import {
  Metadata,
  type ServerUnaryCall,
  type ServerWritableStream,
  type ServiceDefinition,
  type UntypedServiceImplementation,
  type handleServerStreamingCall,
  type handleUnaryCall,
  type sendUnaryData,
  status,
} from "@grpc/grpc-js";
import type { HealthImplementation } from "grpc-health-check";
import { Reason } from "../contract/errors.js";
import { type LibraryMethod, type ServiceRegistry, addLibraryService, handlerOf } from "./library-service.js";
import { quoted } from "../wire/status.js";

/** What the sidecar reports: it serves, or it does not (starting, or stopping). */
export type ServingStatus = "SERVING" | "NOT_SERVING";

/**
 * The names the sidecar reports health for: "" (the sidecar as a whole), its service API and
 * its peer API. They always share one status: a sidecar serves all of them or none.
 */
export const HEALTH_SERVICES: readonly string[] = ["", "weft.v1.Mesh", "weft.v1.Peer"];

/** grpc.health.v1 messages as grpc-health-check's definition reads and writes them. */
interface HealthCheckRequest {
  service: string;
}
type WatchCall = ServerWritableStream<HealthCheckRequest, { status: string }>;

const HEALTH_METHODS: readonly LibraryMethod[] = [
  { path: "/grpc.health.v1.Health/Check", requestStream: false, responseStream: false },
  { path: "/grpc.health.v1.Health/Watch", requestStream: false, responseStream: true },
  { path: "/grpc.health.v1.Health/List", requestStream: false, responseStream: false },
];

/**
 * grpc.health.v1.Health (Check, Watch, List) for one sidecar, served by grpc-health-check,
 * which is loaded on the first call (addLibraryService).
 *
 * Starts NOT_SERVING; the sidecar sets SERVING once its log is open and both listeners are
 * bound, and NOT_SERVING again first thing when it stops. Check of an unknown name is
 * NOT_FOUND; Watch of one sends SERVICE_UNKNOWN and stays open, as the protocol says.
 * Watch streams get the current status at once and every change after it; `close()` ends
 * them with UNAVAILABLE, so that a watcher does not hold a stopping server open.
 *
 * The library answers for the names it was given. Other names are answered here: its
 * NOT_FOUND carries the whole name in the status (a name of 100 000 characters leaves the
 * call, and every later call on its connection, without an answer), and it keeps every name
 * ever watched for the life of the process.
 */
export class HealthService {
  private current: ServingStatus = "NOT_SERVING";
  /** Made on the first call, with the status of that moment. */
  private library: HealthImplementation | undefined;
  /** Open Watch calls, of any name. */
  private readonly watching = new Set<WatchCall>();
  private closed = false;

  /** The status every name in HEALTH_SERVICES reports now. */
  get status(): ServingStatus {
    return this.current;
  }

  /** Sets the status of every name and tells their watchers. Idempotent; ignored after `close()`. */
  set(serving: ServingStatus): void {
    if (serving === this.current || this.closed) return;
    this.current = serving;
    for (const name of HEALTH_SERVICES) this.library?.setStatus(name, serving);
  }

  /**
   * Reports NOT_SERVING for good and ends every Watch with UNAVAILABLE (reason SHUTTING_DOWN);
   * later Watch calls are refused the same way. Check and List keep answering while the
   * server still takes calls. Idempotent.
   */
  close(): void {
    this.set("NOT_SERVING");
    this.closed = true;
    for (const call of [...this.watching]) endWatch(call);
    this.watching.clear();
  }

  addToServer(server: ServiceRegistry): void {
    addLibraryService(server, HEALTH_METHODS, async () => {
      const { HealthImplementation } = await import("grpc-health-check");
      const library = new HealthImplementation(Object.fromEntries(HEALTH_SERVICES.map((name) => [name, this.current])));
      this.library = library;
      return (registry) =>
        library.addToServer({
          addService: (service, implementation) => registry.addService(service as ServiceDefinition, this.around(service as ServiceDefinition, implementation as UntypedServiceImplementation)),
        });
    });
  }

  /** The library's handlers, with unknown names, shutdown and open watches handled here. */
  private around(service: ServiceDefinition, library: UntypedServiceImplementation): UntypedServiceImplementation {
    const check = handlerOf(service, library, "Check") as handleUnaryCall<HealthCheckRequest, unknown> | undefined;
    const watch = handlerOf(service, library, "Watch") as handleServerStreamingCall<HealthCheckRequest, unknown> | undefined;
    const list = handlerOf(service, library, "List");
    if (!check || !watch || !list) throw new Error("grpc-health-check has no handler for Check, Watch or List");
    return {
      Check: (call: ServerUnaryCall<HealthCheckRequest, unknown>, callback: sendUnaryData<unknown>) => {
        const name = call.request.service;
        if (HEALTH_SERVICES.includes(name)) check(call, callback);
        else callback({ code: status.NOT_FOUND, details: `no health status for ${quoted(name)}; this sidecar reports ${HEALTH_SERVICES.map((s) => `"${s}"`).join(", ")}` });
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
        if (HEALTH_SERVICES.includes(call.request.service)) watch(call);
        else call.write({ status: "SERVICE_UNKNOWN" });
      },
      List: list,
    };
  }
}

function endWatch(call: WatchCall): void {
  if (call.cancelled || call.destroyed || call.writableEnded) return;
  const metadata = new Metadata();
  metadata.set("weft-reason", Reason.SHUTTING_DOWN);
  call.emit("error", { code: status.UNAVAILABLE, details: `${Reason.SHUTTING_DOWN}: the sidecar is shutting down`, metadata });
}
