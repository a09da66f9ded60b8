import { mkdir } from "node:fs/promises";
import { EventCounters, SidecarAdmin } from "../src/admin/index.js";
import { DeliveryEngine } from "../src/delivery/delivery-engine.js";
import { ReceiveBudget } from "../src/grpc/receive-budget.js";
import type { PeerServer } from "../src/grpc/peer-server.js";
import type { ServiceServer } from "../src/grpc/server.js";
import { Dialer } from "../src/mesh/dialer.js";
import { MeshNode } from "../src/mesh/mesh-node.js";
import type { HttpServer } from "../src/ops/http-server.js";
import type { Dashboard } from "../src/dashboard/index.js";
import { SidecarMetrics } from "../src/ops/metrics.js";
import { NO_OBSERVER, type Observer, composeObservers } from "../src/ops/observer.js";
import { type LogFormat, type LogLevel, type Logger, createLogger } from "../src/ops/logger.js";
import { logObserver } from "../src/ops/log-observer.js";
import { BurstCollector } from "../src/ops/burst-collector.js";
import { OpenTelemetryTracing } from "../src/ops/tracing.js";
import { EventLog, type Retention } from "../src/log/event-log.js";
import { type ReloadResult, TlsFiles, type TlsPaths } from "../src/security/tls-files.js";
import { type PolicyConfig, type TokensConfig, accessControl } from "./access-config.js";
import { exposureProblem, insecureListeners } from "./exposure.js";
import { SOFTWARE_VERSION } from "./version.js";

/**
 * Everything a sidecar needs to run. Its values are the settings of settings/schema.ts, which
 * gives each one's default (`defaultConfig()`), plus the config file's structured sections.
 */
export interface SidecarConfig {
  /** The LevelDB directory. */
  dataDir: string;
  /** The service API address: "host:port" or a unix socket path. */
  listen: string;
  /** Sync each append batch to disk before acking it. */
  fsync: boolean;
  /** Largest encoded event, bytes. */
  maxEventBytes: number;
  /** Most events in one publish batch. */
  maxBatchEvents: number;
  /** Most Subscribe streams open at once. */
  maxSubscriptions: number;
  /** Largest gRPC request message, bytes. */
  maxMessageBytes: number;
  /** Most streams (calls) one connection to the service API may have open at once. */
  maxStreamsPerConnection: number;
  /**
   * Most bytes of request messages received in part, over every stream of a listener (the
   * service API and the peer API each); past it the stream whose message started longest
   * ago is ended (RECEIVE_BUDGET).
   */
  maxPartialMessageBytes: number;
  /** Re-publishing (source, id) within this window is a duplicate, ms. */
  dedupWindowMs: number;
  /** Default retention of every channel. */
  retention: Retention;
  /** Retention per channel, overriding the default. */
  channels: Record<string, Retention>;
  /** Publishes are refused (STORAGE_QUOTA) while the log's events take this many bytes; 0 for no quota. */
  maxStoredBytes: number;
  /**
   * Most channels this sidecar holds: channels with events (published, or dead-letter) or
   * with a group. Past it, a publish or Subscribe that would make a new one is refused
   * (TOO_MANY_CHANNELS). Relay copies are events of their channel, which their group holds.
   */
  maxChannels: number;
  /** Most groups of one channel; past it, a Subscribe or a peer's interest that would make a new one is refused (TOO_MANY_GROUPS). */
  maxGroupsPerChannel: number;
  /** How often retention runs, ms. */
  sweepIntervalMs: number;
  /** How long shutdown waits for streams to finish, ms. */
  shutdownGraceMs: number;
  /** This sidecar's name in the mesh; unique among its peers. */
  nodeId: string;
  /** The peer API address ("host:port"); peers dial it. */
  peerListen: string;
  /** The HTTP address for /metrics, /healthz, /readyz and the dashboard at / ("host:port"), or "off" for none. */
  http: string;
  /** Peer addresses to link with ("host:port"); may include this sidecar's own. */
  peers: string[];
  /** DNS names whose every address is a peer ("name:port"), re-resolved periodically. */
  peersDns: string[];
  /** How often `peersDns` names are resolved again, ms. */
  peersDnsIntervalMs: number;
  /** A peer unreachable this long loses its share of each group to the others, ms. */
  peerTimeoutMs: number;
  /** Most events forwarded to one peer for one group and not yet handled there. */
  peerWindow: number;
  /** Most bytes of events all groups hold in memory together; a group past it reads less and waits for acks. */
  maxReadAheadBytes: number;
  /** Most peers known at once (linked, or waiting out the peer timeout); a hello from one more is refused (TOO_MANY_PEERS). */
  maxPeers: number;
  /** The least severe log records written: trace, debug, info, warn, error, fatal or silent. */
  logLevel: LogLevel;
  /** Log records as JSON lines ("json") or as text for people ("pretty"), on stderr. */
  logFormat: LogFormat;
  /**
   * TLS on every listener from these PEM files, mutual TLS between peers; the node id is
   * the one the certificate names. Undefined: plaintext (refused beyond loopback unless `insecure`).
   */
  tls?: TlsPaths | undefined;
  /** Lets listeners beyond loopback run without TLS or a policy (logged as a warning at every start). */
  insecure: boolean;
  /**
   * Who may do what on the service API and HTTP (docs/security.md). Undefined: everyone,
   * everything (refused for a service API beyond loopback unless `insecure`).
   */
  policy?: PolicyConfig | undefined;
  /** Bearer tokens: identity name → "sha256:HEX" of the token. */
  tokens: TokensConfig;
  /** The unix socket's file mode, when `listen` is one. */
  socketMode: number;
  /** Host names (besides localhost and the listener's own) the dashboard answers under (a Host header check). */
  httpHosts: string[];
}

/** What `Sidecar.start` may be given besides the configuration. */
export interface SidecarStartOptions {
  /** Told what happens to events (metrics, logs, traces), besides the sidecar's own metrics. */
  observer?: Observer;
  /** Where the sidecar logs. Default: stderr, at `config.logLevel` in `config.logFormat`. */
  logger?: Logger;
}

/**
 * One running sidecar: the event log, the delivery engine, the service API, and its place
 * in the mesh (the peer API, and links dialed to the configured peers).
 * `stop()` is graceful and idempotent.
 */
export class Sidecar {
  private stopping: Promise<void> | undefined;
  /** The dashboard at / (its rate history samples each second); undefined when http is off. */
  private dashboard: Dashboard | undefined;

  private constructor(
    readonly config: SidecarConfig,
    readonly log: EventLog,
    readonly engine: DeliveryEngine,
    readonly mesh: MeshNode,
    private readonly server: ServiceServer,
    private readonly peerServer: PeerServer,
    private readonly dialer: Dialer,
    private readonly sweeper: NodeJS.Timeout,
    /** Collects the heap once a burst of appends is over. */
    private readonly collector: BurstCollector,
    /** The Prometheus metrics this sidecar serves at /metrics. */
    readonly metrics: SidecarMetrics,
    /** The HTTP listener; undefined when `config.http` is "off". Routes may be added to it. */
    readonly http: HttpServer | undefined,
    /** The operator's view and actions (weft.v1.Admin serves it; the dashboard may call it directly). */
    readonly admin: SidecarAdmin,
    /** The TLS files every listener and the dialer use; undefined without TLS. */
    readonly tls: TlsFiles | undefined,
    private readonly logger: Logger,
  ) {}

  /** The bound HTTP address (with the real port when the config asked for port 0); undefined when off. */
  get httpAddress(): string | undefined {
    return this.http?.address;
  }

  /**
   * Why the sidecar is not ready, or undefined when it is: the log is open, the listeners are
   * up, the disk of the log has room and it is not stopping. The same answer as
   * grpc.health.v1 on the service port.
   */
  notReady(): string | undefined {
    if (this.stopping) return "stopping (draining streams)";
    const full = this.log.diskFull;
    if (full) {
      return `DISK_FULL: the disk of ${this.config.dataDir} is full since ${new Date(full.since).toISOString()}; publishes are refused until a write works again (tried every second): ${full.message}`;
    }
    return this.server.health.status === "SERVING" ? undefined : "starting";
  }

  /** The log's disk filled up or has room again: grpc.health.v1 says so, as /readyz does. */
  private diskChanged(): void {
    if (this.stopping) return;
    this.server.health.set(this.log.diskFull ? "NOT_SERVING" : "SERVING");
  }

  /** The bound peer address (with the real port when the config asked for port 0). */
  get peerAddress(): string {
    return this.peerServer.address;
  }

  /** The bound service address (with the real port when the config asked for port 0). */
  get address(): string {
    return this.server.address;
  }

  /**
   * Opens the log, starts delivery and the mesh, binds the peer and service listeners and
   * dials the peers. Health (grpc.health.v1) reports NOT_SERVING until all of that is done,
   * SERVING from then on until `stop()`, except while the disk of the log is full. On
   * failure everything started is stopped again.
   */
  static async start(config: SidecarConfig, options: SidecarStartOptions = {}): Promise<Sidecar> {
    const logger = (options.logger ?? createLogger({ level: config.logLevel, format: config.logFormat })).child({ node: config.nodeId });
    const refusal = exposureProblem(config);
    if (refusal) throw new Error(refusal);
    const tls = config.tls ? await TlsFiles.open(config.tls) : undefined;
    if (tls && tls.material.identity.name !== config.nodeId) {
      throw new Error(`the node id is ${JSON.stringify(config.nodeId)} but tls.cert names ${tls.material.identity.uri}: with TLS the node id is the certificate's`);
    }
    for (const warning of insecureListeners(config)) logger.warn({ insecure: true }, `--insecure: ${warning}`);
    const access = accessControl(config.policy, config.tokens, tls?.material.identity.trustDomain);
    const tracing = new OpenTelemetryTracing({ nodeId: config.nodeId, version: SOFTWARE_VERSION });
    const metrics = new SidecarMetrics({ nodeId: config.nodeId, version: SOFTWARE_VERSION });
    const counters = new EventCounters();
    const collector = new BurstCollector();
    // Readiness follows the log's disk, once there is a sidecar to be ready.
    let started: Sidecar | undefined;
    const readiness: Observer = { ...NO_OBSERVER, diskFull: () => started?.diskChanged() };
    const observer = composeObservers(metrics, counters, logObserver(logger), collector.observer, readiness, options.observer);
    await mkdir(config.dataDir, { recursive: true });
    // The listeners' modules load on this thread while LevelDB opens (and replays its
    // write-ahead log after a crash) on its own: a restart's first delivery comes that much sooner.
    const loading = import("./listeners.js");
    loading.catch(() => undefined); // awaited below; not unhandled if the open fails first
    const log = await EventLog.open(config.dataDir, {
      fsync: config.fsync,
      dedupWindowMs: config.dedupWindowMs,
      retention: config.retention,
      channelRetention: config.channels,
      maxStoredBytes: config.maxStoredBytes,
      maxChannels: config.maxChannels,
      observer,
    });
    let listeners: typeof import("./listeners.js");
    try {
      listeners = await loading;
    } catch (e) {
      await log.close();
      throw e;
    }
    const { PeerServer, ServiceServer, HttpServer, serveOperations, serveDashboard } = listeners;
    const engine = new DeliveryEngine(log, {
      maxGroupsPerChannel: config.maxGroupsPerChannel,
      maxReadAheadBytes: config.maxReadAheadBytes,
      observer,
      onError: (err, channel, group) => logger.error({ channel, group, err }, `group ${channel}/${group}: ${(err as Error).message}`),
    });
    const limits = { maxEventBytes: config.maxEventBytes, maxBatchEvents: config.maxBatchEvents, maxSubscriptions: config.maxSubscriptions };
    const mesh = new MeshNode({
      nodeId: config.nodeId,
      log,
      engine,
      limits,
      maxMessageBytes: config.maxMessageBytes,
      peerTimeoutMs: config.peerTimeoutMs,
      peerWindow: config.peerWindow,
      maxPeers: config.maxPeers,
      softwareVersion: SOFTWARE_VERSION,
      logger,
      observer,
      tracing,
    });
    const admin = new SidecarAdmin({ nodeId: config.nodeId, log, engine, mesh, counters });
    const receiveBudget = (listener: string): ReceiveBudget =>
      new ReceiveBudget({
        limit: config.maxPartialMessageBytes,
        listener,
        cut: (message, held) => {
          observer.refused("RECEIVE_BUDGET");
          logger.warn({ listener, reason: "RECEIVE_BUDGET", held }, message);
        },
      });
    const receiving = { service: receiveBudget("the service API"), peer: receiveBudget("the peer API") };
    let server: ServiceServer | undefined;
    let peerServer: PeerServer | undefined;
    let http: HttpServer | undefined;
    try {
      await engine.start();
      mesh.start();
      peerServer = await PeerServer.start(mesh, { address: config.peerListen, maxMessageBytes: config.maxMessageBytes, receiveBudget: receiving.peer, tls }).catch((e: unknown) => {
        // Tells the operator which of the two listeners failed.
        throw Object.assign(e as Error, { listener: "peer" });
      });
      server = await ServiceServer.start({ log, engine, limits, observer, tracing }, {
        address: config.listen,
        maxMessageBytes: config.maxMessageBytes,
        maxStreamsPerConnection: config.maxStreamsPerConnection,
        receiveBudget: receiving.service,
        admin,
        tls,
        access,
        socketMode: config.socketMode,
      });
      metrics.watch({ log, engine, mesh, receiving: () => [{ listener: "service", bytes: receiving.service.bytes }, { listener: "peer", bytes: receiving.peer.bytes }] });
      if (config.http !== "off") {
        http = await HttpServer.start(config.http, tls).catch((e: unknown) => {
          throw Object.assign(e as Error, { listener: "http" });
        });
      }
    } catch (e) {
      mesh.stop();
      server?.forceShutdown();
      peerServer?.forceShutdown();
      engine.stop();
      await log.close();
      throw e;
    }
    const dialer = new Dialer(mesh, {
      peers: config.peers,
      peersDns: config.peersDns,
      dnsIntervalMs: config.peersDnsIntervalMs,
      maxMessageBytes: config.maxMessageBytes,
      logger,
      tls,
    });
    dialer.start();
    let sweeping = false;
    const sweeper = setInterval(() => {
      if (sweeping) return;
      sweeping = true;
      log
        .sweep()
        .catch((err: unknown) => logger.error({ err }, `retention sweep failed, will retry: ${(err as Error).message}`))
        .finally(() => (sweeping = false));
    }, config.sweepIntervalMs);
    sweeper.unref();
    collector.start();
    // Only now: the log is open, the engine and the mesh run, both listeners are bound.
    const sidecar = new Sidecar(config, log, engine, mesh, server, peerServer, dialer, sweeper, collector, metrics, http, admin, tls, logger);
    tls?.watch((result) => sidecar.reported(result, "the files changed"));
    if (tls) sidecar.warnIfExpiring();
    if (http) serveOperations(http, { metrics, notReady: () => sidecar.notReady() });
    if (http) {
      const guard = { access, hosts: config.httpHosts, address: http.address };
      sidecar.dashboard = serveDashboard(http, { admin, metrics, version: SOFTWARE_VERSION, notReady: () => sidecar.notReady(), guard });
    }
    started = sidecar;
    sidecar.diskChanged();
    return sidecar;
  }

  /**
   * Reads the TLS files again (the CLI calls it on SIGHUP; a change on disk does too): new
   * certificates and keys serve new connections from now on, and connections already open
   * keep theirs. Files that cannot be used, or a certificate naming another node, keep the
   * old ones in force and are logged. Resolves with what happened; without TLS, with nothing.
   */
  async reloadTls(why = "SIGHUP"): Promise<ReloadResult | undefined> {
    if (!this.tls) return undefined;
    const result = await this.tls.reload();
    this.reported(result, why);
    return result;
  }

  private reported(result: ReloadResult, why: string): void {
    if (result.changed) {
      const { identity, serial, notAfter } = result.material;
      this.logger.info({ serial, notAfter: notAfter.toISOString(), identity: identity.uri }, `TLS files reloaded (${why}): certificate ${serial}, valid until ${notAfter.toISOString()}`);
    } else if (result.error) {
      this.logger.error({ file: result.error.file, path: result.error.path }, `TLS files not reloaded (${why}), the ones in force stay: ${result.error.message}`);
    }
    this.warnIfExpiring();
  }

  /** Warns when the certificate in force expires within EXPIRY_WARNING_MS (or has): rotation is overdue. */
  private warnIfExpiring(): void {
    const material = this.tls?.material;
    if (!material) return;
    const left = material.notAfter.getTime() - Date.now();
    if (left > EXPIRY_WARNING_MS) return;
    const when = material.notAfter.toISOString();
    this.logger.warn({ serial: material.serial, notAfter: when }, left <= 0 ? `the TLS certificate in force expired on ${when}: peers and clients refuse it; rotate it` : `the TLS certificate in force expires on ${when}: rotate it`);
  }

  /**
   * Reports NOT_SERVING (before anything else stops; /readyz answers 503 from then on),
   * stops accepting, finishes accepted appends, ends streams, closes the log, and closes the
   * HTTP listener last. Idempotent.
   */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      this.server.health.set("NOT_SERVING");
      this.tls?.close();
      clearInterval(this.sweeper);
      this.collector.stop();
      this.dialer.stop();
      this.mesh.stop();
      await Promise.all([this.peerServer.shutdown(this.config.shutdownGraceMs), this.server.shutdown(this.config.shutdownGraceMs)]);
      await this.engine.close();
      await this.log.close();
      this.dashboard?.stop();
      await this.http?.close();
    })();
    return this.stopping;
  }
}

/** A certificate this close to its end is warned about at start and at each reload, ms. */
const EXPIRY_WARNING_MS = 7 * 24 * 3600_000;
