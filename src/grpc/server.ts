import { Server, type ServerCredentials } from "@grpc/grpc-js";
import type { SidecarAdmin } from "../admin/sidecar-admin.js";
import { Admin as AdminDesc, file_weft_v1_admin } from "../gen/weft/v1/admin_pb.js";
import { file_weft_v1_mesh, Mesh as MeshDesc } from "../gen/weft/v1/mesh_pb.js";
import { AdminService } from "./admin-service.js";
import { rawServiceDefinition } from "../wire/service-definitions.js";
import { HealthService } from "./health-service.js";
import { MeshService, type MeshServiceDeps } from "./mesh-service.js";
import type { ReceiveBudget } from "./receive-budget.js";
import { addReflection } from "./reflection-service.js";
import { chmod } from "node:fs/promises";
import { OPEN_ACCESS, type AccessControl } from "../security/access.js";
import { serviceServerCredentials } from "../security/credentials.js";
import type { TlsFiles } from "../security/tls-files.js";

/** Most streams one connection may open on the service API unless told otherwise. */
export const DEFAULT_MAX_STREAMS = 1000;

export interface ServiceServerOptions {
  /** "host:port", "unix:/path" or an absolute socket path. Port 0 picks a free port. */
  address: string;
  /** Largest request message accepted, in bytes (bigger is RESOURCE_EXHAUSTED). */
  maxMessageBytes: number;
  /** Most streams (calls) open at once on one connection (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS). Default 1000. */
  maxStreamsPerConnection?: number;
  /** Bounds the bytes of messages received in part on this listener, when given. */
  receiveBudget?: ReceiveBudget | undefined;
  /** Serves weft.v1.Admin on the same listener when given. */
  admin?: SidecarAdmin | undefined;
  /** TLS with these files (a client certificate is asked for, not required); plaintext without. */
  tls?: TlsFiles | undefined;
  /** Who may call weft.v1.Mesh and weft.v1.Admin, and what they may do. Default: everyone, everything. */
  access?: AccessControl | undefined;
  /**
   * The mode the unix socket file is given (default 0600: only the sidecar's user, and
   * root, can connect). Ignored for a TCP address.
   */
  socketMode?: number | undefined;
}

/**
 * The gRPC server of the service API: weft.v1.Mesh, weft.v1.Admin (when given an admin),
 * grpc.health.v1.Health and server reflection on one listener.
 *
 * Health starts NOT_SERVING: whoever runs the server (the sidecar) sets `health` to SERVING
 * once everything behind it is up, and `shutdown()` sets it back first.
 */
export class ServiceServer {
  private constructor(
    private readonly server: Server,
    private readonly mesh: MeshService,
    /** grpc.health.v1 for "", weft.v1.Mesh and weft.v1.Peer; NOT_SERVING until set. */
    readonly health: HealthService,
    /** The bound address, with the real port when 0 was asked for. */
    readonly address: string,
  ) {}

  static async start(deps: MeshServiceDeps, options: ServiceServerOptions): Promise<ServiceServer> {
    const server = newServer(options.maxMessageBytes, options.maxStreamsPerConnection ?? DEFAULT_MAX_STREAMS);
    const target = bindTarget(options.address);
    const callers = { access: options.access ?? OPEN_ACCESS, socket: target.startsWith("unix:") };
    const mesh = new MeshService({ ...deps, callers });
    server.addService(rawServiceDefinition(MeshDesc), mesh.implementation());
    if (options.admin) server.addService(rawServiceDefinition(AdminDesc), new AdminService(options.admin, callers).implementation());
    const health = new HealthService();
    health.addToServer(server);
    const files = options.admin ? [file_weft_v1_mesh, file_weft_v1_admin] : [file_weft_v1_mesh];
    addReflection(server, files);
    const address = await bindSocket(server, target, serviceServerCredentials(options.tls), options.socketMode ?? DEFAULT_SOCKET_MODE);
    options.receiveBudget?.watch(server);
    return new ServiceServer(server, mesh, health, address);
  }

  /**
   * Graceful shutdown: reports NOT_SERVING, stops accepting calls, lets accepted publish
   * batches finish storing, ends every stream with UNAVAILABLE (health Watch streams last,
   * so that watchers see NOT_SERVING while the streams drain), then closes the listener.
   * Calls still open after `graceMs` are cut.
   */
  async shutdown(graceMs = 5000): Promise<void> {
    this.health.set("NOT_SERVING");
    const stopped = new Promise<void>((resolve) => this.server.tryShutdown(() => resolve()));
    await this.mesh.drain();
    this.health.close();
    const timer = setTimeout(() => this.server.forceShutdown(), graceMs);
    await stopped;
    clearTimeout(timer);
  }

  /** Cuts every call and the listener at once. */
  forceShutdown(): void {
    this.server.forceShutdown();
  }
}

/** Turns a configured address into a grpc-js bind target. */
export function bindTarget(address: string): string {
  if (address.startsWith("unix:")) return address;
  if (address.startsWith("/")) return `unix:${address}`;
  return address;
}

/** Only the sidecar's own user (and root) may connect to its unix socket. */
export const DEFAULT_SOCKET_MODE = 0o600;

/**
 * Binds `target`; a unix socket is created under a umask that leaves it no wider than
 * `mode` and then given exactly `mode`, so that it is never reachable by others, not even
 * between the bind and the chmod. The umask is the process's: it is only ever narrowed
 * meanwhile, so files others create during the bind (LevelDB's) get no wider modes.
 */
async function bindSocket(server: Server, target: string, credentials: ServerCredentials, mode: number): Promise<string> {
  if (!target.startsWith("unix:")) return bind(server, target, credentials);
  const previous = process.umask(0o177);
  let address: string;
  try {
    address = await bind(server, target, credentials);
  } finally {
    process.umask(previous);
  }
  await chmod(target.slice("unix:".length), mode);
  return address;
}

/**
 * A grpc-js server that accepts requests up to `maxMessageBytes`, sends any size, and lets a
 * connection open at most `maxStreams` streams at once: HTTP/2 tells the client so
 * (SETTINGS_MAX_CONCURRENT_STREAMS), and a stream past it is refused (RST_STREAM
 * REFUSED_STREAM; gRPC clients wait for a free stream instead of sending it).
 */
export function newServer(maxMessageBytes: number, maxStreams = DEFAULT_MAX_STREAMS): Server {
  return new Server({
    "grpc.max_receive_message_length": maxMessageBytes,
    "grpc.max_concurrent_streams": maxStreams,
    "grpc.max_send_message_length": -1,
    "grpc.keepalive_permit_without_calls": 1,
  });
}

/** Binds `server` to a grpc-js target; resolves with the bound address (the real port for 0). */
export async function bind(server: Server, target: string, credentials: ServerCredentials): Promise<string> {
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(target, credentials, (err, p) => (err ? reject(err) : resolve(p))),
  );
  return target.startsWith("unix:") ? target : target.replace(/:\d+$/, `:${port}`);
}
