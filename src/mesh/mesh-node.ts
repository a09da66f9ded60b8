import { randomBytes } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { status } from "@grpc/grpc-js";
import { Reason, WeftError, exhausted, invalid } from "../contract/errors.js";
import { MAX_ATTEMPTS, MAX_SEQUENCE, MAX_TIME_MS, SEQUENCE_RULE, TIME_MS_RULE, clamp } from "../contract/ranges.js";
import { type Limits, checkEvent, isName, isNodeId, NODE_ID_RULE } from "../contract/validate.js";
import type { DeliveryEngine } from "../delivery/delivery-engine.js";
import { joinSettings } from "../delivery/join-settings.js";
import type { HeldCopy, JoinSettings, KnownGroup, Membership, OutgoingDelivery, StartAt } from "../delivery/types.js";
import { StartPosition_Kind, StartPositionSchema, SubscribeOpenSchema, type StartPosition } from "../gen/weft/v1/mesh_pb.js";
import type { GroupInterest, Hello, Interest, Outcomes } from "../gen/weft/v1/peer_pb.js";
import { readEvent } from "../wire/messages.js";
import type { EventLog } from "../log/event-log.js";
import { type Logger, createLogger } from "../ops/logger.js";
import type { Observer } from "../ops/observer.js";
import type { EventTracing } from "../ops/tracing.js";
import {
  type ForwardedEvent,
  type GroupOutcomes,
  type IncomingFrame,
  MAX_FORWARD_EVENTS,
  MIN_PROTOCOL_VERSION,
  PROTOCOL_VERSION,
  writeForward,
  writeFrame,
  writeOutcomes,
  writeStored,
} from "../wire/peer-frames.js";
import type { LinkClosed, LinkHost, PeerLink } from "./peer-link.js";

export interface MeshNodeOptions {
  nodeId: string;
  log: EventLog;
  engine: DeliveryEngine;
  limits: Limits;
  /** The largest frame this sidecar accepts from a peer, bytes. */
  maxMessageBytes: number;
  /** A peer unreachable this long loses its share of each group, ms. */
  peerTimeoutMs: number;
  /** Most events forwarded to one peer for one group and not yet handled there. */
  peerWindow: number;
  /**
   * Most peers known at once: linked, or waiting out the peer timeout. A hello from a node
   * id not known yet is refused with TOO_MANY_PEERS past it. Default: no limit.
   */
  maxPeers?: number;
  /** Longest silence on a link before a heartbeat, ms. Default: a fifth of the peer timeout, at most 1 s. */
  heartbeatMs?: number;
  /** How long a group stays advertised after its last member here left, ms. Default min(5 s, peer timeout). */
  lingerMs?: number;
  softwareVersion?: string;
  /** Told about links coming and going, peers refused and groups it cannot serve. Default: stderr. */
  logger?: Logger;
  /** Told about forwards and links. */
  observer?: Observer;
  /** Adds spans to the traces of forwarded events. */
  tracing?: EventTracing;
}

/** A group behind a peer, as a member of this sidecar's group: the origin's side of forwarding. */
interface RemoteGroup {
  key: string;
  settings: JoinSettings;
  membership: Membership | undefined;
  removed: boolean;
  /** Forwarded and not yet reported handled, by sequence. */
  readonly inflight: Map<number, OutgoingDelivery>;
}

/** What this sidecar knows of one peer (by node id); outlives its links until the peer timeout. */
interface PeerState {
  nodeId: string;
  instance: bigint;
  link: PeerLink | undefined;
  readonly groups: Map<string, RemoteGroup>;
  lost: NodeJS.Timeout | undefined;
  /** When the last link came up or went down, Unix ms (for operators). */
  since: number;
  /** The peer's software version, from its last hello. */
  softwareVersion: string;
}

/** Per link: what was advertised on it and whether the peer's snapshot arrived. */
interface LinkState {
  readonly advertised: Set<string>;
  snapshot: boolean;
}

/** A link's view for operators and tests. */
export interface PeerStatus {
  nodeId: string;
  connected: boolean;
  /** Groups behind the peer that this sidecar forwards to. */
  groups: string[];
  /** Events forwarded to the peer and not yet reported handled. */
  inflight: number;
}

/** A peer in detail, for operators (weft.v1.Admin). */
export interface PeerDetail extends PeerStatus {
  /** The address this sidecar dialed; "" when the peer dialed in (or no link is up). */
  address: string;
  /** The peer's software version, from its last hello. */
  softwareVersion: string;
  /** When the link came up (connected) or went down, Unix ms. */
  since: number;
  /** Per group forwarded to, events not yet reported handled. */
  forwarding: { channel: string; group: string; inflight: number }[];
}

/** Most bytes of events in one forward frame (a single larger event still goes, alone). */
const MAX_FORWARD_BYTES = 3 * 1024 * 1024;
/** A peer that does not say its limit takes gRPC's default. */
const DEFAULT_PEER_MESSAGE_BYTES = 4 * 1024 * 1024;
/** The least a peer may say it accepts: the smallest maxMessageBytes of the configuration. */
const MIN_PEER_MESSAGE_BYTES = 4096;
/** Room for the frame's own tags and lengths, and per event for its names, numbers and tags. */
const FRAME_OVERHEAD = 64;
const EVENT_OVERHEAD = 48;
/** How long a new link must stay up before a peer waiting out its timeout counts as back (at most half the peer timeout). */
const PROOF_MS = 2000;
/** How long a link replaced by one the peer dialed may wait for the peer to end it, ms. */
const SUPERSEDED_MS = 5000;
/** Most sequences in one outcomes frame. */
const MAX_OUTCOMES = 10_000;

/**
 * This sidecar's place in the mesh. As an origin, each group behind a peer is a member of
 * the local group (one remote member per peer and group, within the peer window): the
 * dispatcher chooses it like any member, by credits and key, and its deliveries become
 * forwards on the link, kept until the peer reports them handled (or given back, or the
 * peer times out). As a receiver, forwarded events are stored as relay copies: events of
 * their channel held for the group they were forwarded for (one per origin, group and
 * sequence, however often a forward is retried), which that group's dispatcher delivers to
 * its local members like this sidecar's own events; their outcomes come back through the
 * engine's origin route and go to the origin in outcome frames.
 */
export class MeshNode implements LinkHost {
  readonly instance: bigint = randomInstance();
  private readonly peers = new Map<string, PeerState>();
  private readonly linkStates = new WeakMap<PeerLink, LinkState>();
  /** The groups this sidecar advertises with members (members here, or lingering). */
  private readonly advertised = new Map<string, JoinSettings>();
  private readonly lingering = new Map<string, NodeJS.Timeout>();
  /** Links replaced by one the peer dialed, detached and waiting for the peer to end them, with the timer that ends them otherwise. */
  private readonly superseded = new Map<PeerLink, NodeJS.Timeout>();
  private readonly outcomes = new Map<string, Map<string, { channel: string; group: string; done: number[]; returned: number[] }>>();
  private outcomesScheduled = false;
  private nextForwardId = 1;
  private readonly unsubscribe: (() => void)[] = [];
  private stopped = false;
  readonly heartbeatMs: number;
  private readonly lingerMs: number;
  private readonly log: Logger;

  constructor(private readonly options: MeshNodeOptions) {
    this.heartbeatMs = options.heartbeatMs ?? Math.max(20, Math.min(1000, Math.floor(options.peerTimeoutMs / 5)));
    this.lingerMs = options.lingerMs ?? Math.min(5000, options.peerTimeoutMs);
    this.log = options.logger ?? createLogger().child({ node: options.nodeId });
  }

  get nodeId(): string {
    return this.options.nodeId;
  }

  /** Starts advertising this sidecar's groups and reporting relay outcomes. */
  start(): void {
    const { engine } = this.options;
    for (const s of engine.interest()) this.advertised.set(groupKey(s.channel, s.group), s);
    // A group whose relay copies were in flight to members when the sidecar stopped stays
    // advertised with members for a peer timeout, so that its members can come back before
    // the origins give the copies to others. (Copies of a group withdrawn earlier had no
    // members, so nothing in flight: that group is not advertised again.)
    for (const r of engine.interrupted()) {
      const key = groupKey(r.channel, r.group);
      if (this.advertised.has(key)) continue;
      this.advertised.set(key, {
        channel: r.channel,
        group: r.group,
        start: { kind: "latest" },
        maxInFlight: 0,
        ackDeadlineMs: 0,
        maxAttempts: r.maxAttempts,
        deadLetterChannel: r.deadLetterChannel,
      });
      this.linger(key, this.options.peerTimeoutMs);
    }
    this.unsubscribe.push(
      engine.onInterest((settings, present) => {
        const key = groupKey(settings.channel, settings.group);
        if (present) this.advertise(key, settings);
        else this.linger(key, this.lingerMs);
      }),
      engine.onGroupCreated((g) => this.broadcast(this.interestOf([g], () => this.advertised.has(groupKey(g.channel, g.group))))),
    );
    // Relay copies are kept while their group is advertised here; a copy done here is
    // reported to its origin, which waits for the outcome.
    engine.routeOrigins({
      done: (channel, group, origin) => this.queueOutcome(origin.node, origin.log, channel, group, "done", origin.sequence),
      keeps: (channel, group) => this.advertised.has(groupKey(channel, group)),
    });
  }

  /** Ends every link and timer; forwarding state stays in the log for the next start. */
  stop(): void {
    this.stopped = true;
    for (const u of this.unsubscribe) u();
    for (const t of this.lingering.values()) clearTimeout(t);
    for (const peer of this.peers.values()) {
      if (peer.lost) clearTimeout(peer.lost);
      peer.link?.fail(new WeftError(status.UNAVAILABLE, Reason.SHUTTING_DOWN, "the sidecar is shutting down"));
    }
    for (const link of [...this.superseded.keys()]) this.endSuperseded(link, new WeftError(status.UNAVAILABLE, Reason.SHUTTING_DOWN, "the sidecar is shutting down"));
  }

  /** Ends a link detached by a replacement before its timer does. */
  private endSuperseded(link: PeerLink, why: WeftError): void {
    clearTimeout(this.superseded.get(link));
    this.superseded.delete(link);
    link.fail(why);
  }

  /** True while a link with `nodeId` is up. */
  hasLink(nodeId: string): boolean {
    return this.peers.get(nodeId)?.link?.open ?? false;
  }

  /** Every peer known, linked or waiting out its timeout. */
  status(): PeerStatus[] {
    return [...this.peers.values()].map((p) => ({
      nodeId: p.nodeId,
      connected: p.link?.open ?? false,
      groups: [...p.groups.keys()],
      inflight: [...p.groups.values()].reduce((n, g) => n + g.inflight.size, 0),
    }));
  }

  /** Every peer known, in detail (what status() says, plus address, version, since and per group). */
  describePeers(): PeerDetail[] {
    return this.status().map((s) => {
      const p = this.peers.get(s.nodeId)!;
      return {
        ...s,
        address: p.link?.address ?? "",
        softwareVersion: p.link?.peer?.softwareVersion ?? p.softwareVersion,
        since: p.since,
        forwarding: [...p.groups.values()].map((g) => ({ channel: g.settings.channel, group: g.settings.group, inflight: g.inflight.size })),
      };
    });
  }

  // ---- LinkHost ----

  hello(): Omit<Hello, "$typeName"> {
    return {
      nodeId: this.options.nodeId,
      instance: this.instance,
      maxProtocolVersion: PROTOCOL_VERSION,
      minProtocolVersion: MIN_PROTOCOL_VERSION,
      softwareVersion: this.options.softwareVersion ?? "",
      heartbeatIntervalMs: this.heartbeatMs,
      logId: this.options.log.id,
      maxMessageBytes: Math.min(this.options.maxMessageBytes, 0xffffffff),
    };
  }

  admit(link: PeerLink, hello: Hello): WeftError | undefined {
    if (this.stopped) return new WeftError(status.UNAVAILABLE, Reason.SHUTTING_DOWN, "the sidecar is shutting down");
    const ours = `${MIN_PROTOCOL_VERSION}..${PROTOCOL_VERSION}`;
    if (hello.minProtocolVersion < 1 || hello.minProtocolVersion > hello.maxProtocolVersion) {
      return invalid(Reason.UNSUPPORTED_PROTOCOL, "hello.min_protocol_version", `the hello's protocol range ${hello.minProtocolVersion}..${hello.maxProtocolVersion} is empty; send min 1 <= max`);
    }
    if (hello.maxProtocolVersion < MIN_PROTOCOL_VERSION || hello.minProtocolVersion > PROTOCOL_VERSION) {
      return new WeftError(
        status.FAILED_PRECONDITION,
        Reason.UNSUPPORTED_PROTOCOL,
        `the peer speaks protocol versions ${hello.minProtocolVersion}..${hello.maxProtocolVersion}; this sidecar speaks ${ours}: upgrade the older sidecar`,
        "hello.max_protocol_version",
      );
    }
    if (!isNodeId(hello.nodeId)) {
      return invalid(Reason.PROTOCOL_VIOLATION, "hello.node_id", `node id ${JSON.stringify(hello.nodeId.slice(0, 80))} is not valid: ${NODE_ID_RULE}`);
    }
    if (hello.instance === 0n) return invalid(Reason.PROTOCOL_VIOLATION, "hello.instance", "hello.instance is required (non-zero)");
    if (hello.logId === 0n) return invalid(Reason.PROTOCOL_VIOLATION, "hello.log_id", "hello.log_id is required (non-zero)");
    if (hello.heartbeatIntervalMs > 3_600_000) {
      return invalid(Reason.PROTOCOL_VIOLATION, "hello.heartbeat_interval_ms", `hello.heartbeat_interval_ms is ${hello.heartbeatIntervalMs}; use 0 to 3600000`);
    }
    // A peer that accepts less than the smallest maxMessageBytes a sidecar can be given would
    // have every event refused for it (an attempt each, then dead-lettered).
    if (hello.maxMessageBytes !== 0 && hello.maxMessageBytes < MIN_PEER_MESSAGE_BYTES) {
      return invalid(
        Reason.PROTOCOL_VIOLATION,
        "hello.max_message_bytes",
        `hello.max_message_bytes is ${hello.maxMessageBytes}; use 0 (4 MiB) or ${MIN_PEER_MESSAGE_BYTES} to 4294967295`,
      );
    }
    // With mutual TLS the certificate says who the peer is; the hello must agree with it.
    const certified = link.certified;
    if (typeof certified === "string") return this.refuse(link, new WeftError(status.PERMISSION_DENIED, Reason.NOT_A_PEER, `${certified}: a peer link needs a node certificate`));
    if (certified && hello.nodeId !== certified.name) {
      return this.refuse(
        link,
        new WeftError(
          status.PERMISSION_DENIED,
          Reason.NODE_ID_MISMATCH,
          `the hello names node ${JSON.stringify(hello.nodeId)}, but the peer's certificate names ${certified.uri}: a sidecar's node id is the one its certificate names`,
          "hello.node_id",
        ),
      );
    }
    if (hello.nodeId === this.options.nodeId) {
      if (hello.instance === this.instance) {
        return new WeftError(status.ALREADY_EXISTS, Reason.SELF_LINK, `this address is this sidecar's own (node ${hello.nodeId}); it is skipped`);
      }
      return this.refuse(
        link,
        new WeftError(
          status.PERMISSION_DENIED,
          Reason.DUPLICATE_NODE_ID,
          `another sidecar uses this sidecar's node id ${JSON.stringify(hello.nodeId)}: every sidecar of a mesh needs its own --node-id`,
          "hello.node_id",
        ),
      );
    }
    let peer = this.peers.get(hello.nodeId);
    if (peer?.link && peer.link !== link) {
      if (peer.instance !== hello.instance) {
        return this.refuse(
          link,
          new WeftError(
            status.PERMISSION_DENIED,
            Reason.DUPLICATE_NODE_ID,
            `a sidecar with node id ${JSON.stringify(hello.nodeId)} is already linked here (another process: either a duplicate node id, or a restart whose old link has not yet timed out)`,
            "hello.node_id",
          ),
        );
      }
      // Two links between the same two sidecars (both dialed, or one dialed twice at two
      // addresses): the one the lower node id dialed is kept, and both sides decide alike.
      const dialedBy = (l: PeerLink): string => (l.role === "dialer" ? this.options.nodeId : hello.nodeId);
      const preferred = this.options.nodeId < hello.nodeId ? this.options.nodeId : hello.nodeId;
      if (dialedBy(link) !== preferred) {
        return new WeftError(status.ALREADY_EXISTS, Reason.LINK_EXISTS, `this sidecar already has a link with ${hello.nodeId}`);
      }
      const old = peer.link;
      peer.link = undefined;
      const replaced = new WeftError(status.ALREADY_EXISTS, Reason.LINK_EXISTS, `replaced by the link ${preferred} dialed`);
      if (link.role === "dialer") {
        // The peer already took this link (it sent its hello): the old one can end.
        old.fail(replaced);
      } else {
        // The peer dialed this link and ends the old one itself once our hello reaches it.
        // Ended here first, the old link's end could reach the peer before that hello, and
        // the peer would take its healthy link for lost. Until then the old link is only
        // detached: frames still arriving on it are handled and answered as the peer's, and
        // nothing else goes on it. It is ended here if the peer has not within SUPERSEDED_MS.
        const timer = setTimeout(() => {
          this.superseded.delete(old);
          old.fail(replaced);
        }, SUPERSEDED_MS);
        timer.unref();
        this.superseded.set(old, timer);
      }
    }
    const maxPeers = this.options.maxPeers ?? Infinity;
    if (!peer && this.peers.size >= maxPeers) {
      this.options.observer?.refused(Reason.TOO_MANY_PEERS);
      return this.refuse(
        link,
        exhausted(
          Reason.TOO_MANY_PEERS,
          "hello.node_id",
          `this sidecar knows ${this.peers.size} peers and its limit (maxPeers) is ${maxPeers}; node ${JSON.stringify(hello.nodeId)} would be one more: raise maxPeers, or wait for a peer that left to pass the peer timeout (${this.options.peerTimeoutMs} ms)`,
        ),
      );
    }
    if (!peer) {
      peer = { nodeId: hello.nodeId, instance: hello.instance, link: undefined, groups: new Map(), lost: undefined, since: Date.now(), softwareVersion: "" };
      this.peers.set(hello.nodeId, peer);
    }
    // A peer waiting out its timeout stays on the clock until the new link proves itself
    // (see prove): a link that fails at once, again and again, must not keep it forever.
    peer.instance = hello.instance;
    peer.softwareVersion = hello.softwareVersion;
    peer.link = link;
    this.linkStates.set(link, { advertised: new Set(), snapshot: false });
    return undefined;
  }

  /** Logs a refused link (who, and why) and returns the refusal. */
  private refuse(link: PeerLink, e: WeftError): WeftError {
    const who = link.address ? ` with ${link.address}` : "";
    this.log.warn({ address: link.address || undefined, reason: e.reason }, `refused a link${who}: ${e.message}`);
    return e;
  }

  up(link: PeerLink): void {
    // Within the peer timeout: a link that stays up must stop the clock before it runs out.
    setTimeout(() => this.prove(link), Math.min(PROOF_MS, Math.floor(this.options.peerTimeoutMs / 2))).unref();
    const linked = this.peers.get(link.nodeId);
    if (linked?.link === link) linked.since = Date.now();
    this.options.observer?.peerLink(link.nodeId, true);
    const role = link.role === "dialer" ? "dialed" : "accepted";
    this.log.info({ peer: link.nodeId, address: link.address || undefined, role }, `linked with ${link.nodeId}${link.address ? ` at ${link.address}` : ""} (${role})`);
    const state = this.linkStates.get(link)!;
    const groups = this.interestOf(this.options.engine.knownGroups(), (g) => this.advertised.has(groupKey(g.channel, g.group)));
    for (const g of groups) if (g.members) state.advertised.add(groupKey(g.channel, g.group));
    link.send(writeFrame({ case: "interest", value: { snapshot: true, groups } as never }));
  }

  closed(link: PeerLink, why: LinkClosed): void {
    clearTimeout(this.superseded.get(link));
    this.superseded.delete(link);
    const peer = this.peers.get(link.nodeId);
    if (!peer || peer.link !== link) return; // refused or replaced
    peer.link = undefined;
    peer.since = Date.now();
    this.options.observer?.peerLink(peer.nodeId, false);
    if (this.stopped) return;
    this.log.warn(
      { peer: peer.nodeId, reason: why.reason, peerTimeoutMs: this.options.peerTimeoutMs },
      `link with ${peer.nodeId} lost (${why.reason}: ${why.message}); its share waits ${this.options.peerTimeoutMs} ms for it to come back`,
    );
    // A timer already running (a link that failed before it proved itself) keeps counting.
    peer.lost ??= setTimeout(() => this.lose(peer), this.options.peerTimeoutMs);
    peer.lost.unref();
  }

  frame(link: PeerLink, frame: IncomingFrame): void {
    if (frame.case === "forward") {
      this.receiveForward(link, frame.forwardId, frame.events);
      return;
    }
    const f = frame.frame;
    switch (f.case) {
      case "interest":
        this.receiveInterest(link, f.value);
        break;
      case "outcomes":
        this.prove(link);
        this.receiveOutcomes(link, f.value);
        break;
      case "stored":
        this.prove(link);
        break;
      case "heartbeat":
        break;
    }
  }

  // ---- origin side: groups behind peers ----

  private receiveInterest(link: PeerLink, interest: Interest): void {
    const peer = this.peers.get(link.nodeId)!;
    const state = this.linkStates.get(link)!;
    if (!interest.snapshot && !state.snapshot) {
      throw new WeftError(status.INVALID_ARGUMENT, Reason.PROTOCOL_VIOLATION, "the first interest frame on a link must be a snapshot");
    }
    if (interest.snapshot && state.snapshot) {
      throw new WeftError(status.INVALID_ARGUMENT, Reason.PROTOCOL_VIOLATION, "a link carries one interest snapshot, after hello; send deltas after it");
    }
    const entries = interest.groups.map((g, i) => ({ members: g.members, settings: this.remoteSettings(g, `interest.groups[${i}]`) }));
    if (interest.snapshot) {
      state.snapshot = true;
      const keep = new Set(entries.filter((e) => e.members).map((e) => groupKey(e.settings.channel, e.settings.group)));
      for (const rg of [...peer.groups.values()]) if (!keep.has(rg.key)) this.removeRemote(peer, rg);
    }
    for (const { members, settings } of entries) {
      if (members) {
        this.addRemote(peer, settings);
        continue;
      }
      const rg = peer.groups.get(groupKey(settings.channel, settings.group));
      if (rg) this.removeRemote(peer, rg);
      // Durable: this sidecar keeps the group's events from its creation on, members or not.
      this.options.engine
        .ensure(settings)
        .catch((e: unknown) =>
          this.log.error({ peer: peer.nodeId, channel: settings.channel, group: settings.group, err: e }, `cannot create ${settings.channel}/${settings.group} learnt from ${peer.nodeId}: ${(e as Error).message}`),
        );
    }
  }

  /**
   * Checks a peer's group like a Subscribe open; the window is the peer window. A group that
   * started at "latest" where it was created starts here at its creation time, so that
   * events published here after it was created (and before this sidecar heard of it) reach it.
   */
  private remoteSettings(g: GroupInterest, field: string): JoinSettings {
    if (g.createdUnixMs < 0n || g.createdUnixMs > BigInt(MAX_TIME_MS)) {
      throw invalid(Reason.INVALID_START, `${field}.created_unix_ms`, `${field}.created_unix_ms is ${g.createdUnixMs}; use ${TIME_MS_RULE} in Unix ms, or 0 for unknown`);
    }
    const createdAt = Number(g.createdUnixMs) || undefined;
    const start =
      g.start?.kind === StartPosition_Kind.LATEST && createdAt !== undefined
        ? create(StartPositionSchema, { kind: StartPosition_Kind.TIME, time: timestampFromMs(createdAt) })
        : g.start;
    try {
      const settings = joinSettings(
        create(SubscribeOpenSchema, {
          channel: g.channel,
          group: g.group,
          start,
          maxInFlight: this.options.peerWindow,
          maxAttempts: g.maxAttempts,
          deadLetterChannel: g.deadLetterChannel,
        }),
      );
      return { ...settings, createdAt };
    } catch (e) {
      if (e instanceof WeftError) throw new WeftError(e.code, e.reason, `${field}: ${e.message}`, `${field}.${e.field.replace(/^open\./, "")}`);
      throw e;
    }
  }

  private addRemote(peer: PeerState, settings: JoinSettings): void {
    const key = groupKey(settings.channel, settings.group);
    const existing = peer.groups.get(key);
    if (existing) {
      // Known from before the link dropped: what is still in flight goes again (the peer
      // stores it once, and reports again what it already finished).
      this.forward(peer, existing, [...existing.inflight.values()].sort((a, b) => a.event.sequence - b.event.sequence));
      return;
    }
    const rg: RemoteGroup = { key, settings, membership: undefined, removed: false, inflight: new Map() };
    peer.groups.set(key, rg);
    this.options.engine
      .join(
        settings,
        {
          send: (deliveries) => {
            if (rg.removed) return;
            for (const d of deliveries) rg.inflight.set(d.event.sequence, d);
            this.forward(peer, rg, deliveries);
          },
        },
        { peer: peer.nodeId },
      )
      .then(
        (m) => {
          if (rg.removed) m.leave(true);
          else rg.membership = m;
        },
        (e: unknown) => {
          peer.groups.delete(key);
          this.log.error(
            { peer: peer.nodeId, channel: settings.channel, group: settings.group, reason: (e as Partial<WeftError>).reason },
            `cannot forward ${settings.channel}/${settings.group} to ${peer.nodeId}: ${(e as Error).message}`,
          );
        },
      );
  }

  /** The peer has no members of the group any more: what it had in flight goes to the others, uncounted. */
  private removeRemote(peer: PeerState, rg: RemoteGroup): void {
    rg.removed = true;
    peer.groups.delete(rg.key);
    rg.inflight.clear();
    rg.membership?.leave(true);
  }

  /** The link has stayed up (or the peer made progress on it): the peer is back for good. */
  private prove(link: PeerLink): void {
    const peer = this.peers.get(link.nodeId);
    if (!peer || peer.link !== link || !link.open || !peer.lost) return;
    clearTimeout(peer.lost);
    peer.lost = undefined;
  }

  /**
   * The peer stayed away past the peer timeout (or only ever came back on links that failed
   * at once): its share goes to the group's other members. A link it has now is ended, and
   * the peer starts afresh when it links again.
   */
  private lose(peer: PeerState): void {
    if (this.stopped || this.peers.get(peer.nodeId) !== peer) return;
    this.log.warn(
      { peer: peer.nodeId, peerTimeoutMs: this.options.peerTimeoutMs, groups: peer.groups.size },
      `peer ${peer.nodeId} gone for ${this.options.peerTimeoutMs} ms: its unfinished events go to the other members of ${peer.groups.size} group(s)`,
    );
    this.peers.delete(peer.nodeId);
    for (const rg of peer.groups.values()) {
      rg.removed = true;
      rg.inflight.clear();
      rg.membership?.leave(false);
    }
    const silent = new WeftError(status.UNAVAILABLE, Reason.PEER_SILENT, `no link with ${peer.nodeId} stayed up for the peer timeout; its share went to others`);
    peer.link?.fail(silent);
    for (const link of [...this.superseded.keys()]) if (link.nodeId === peer.nodeId) this.endSuperseded(link, silent);
    this.options.observer?.peerGone(peer.nodeId);
  }

  private forward(peer: PeerState, rg: RemoteGroup, deliveries: readonly OutgoingDelivery[]): void {
    const link = peer.link;
    if (!link?.open || !this.linkStates.get(link)?.snapshot || deliveries.length === 0) return; // resent after the next snapshot
    // Frames stay within what the peer accepts (names, numbers and tags take the overhead).
    const limit = Math.min(MAX_FORWARD_BYTES, (link.peer!.maxMessageBytes || DEFAULT_PEER_MESSAGE_BYTES) - FRAME_OVERHEAD);
    const perEvent = rg.settings.channel.length + rg.settings.group.length + EVENT_OVERHEAD;
    let batch: ForwardedEvent[] = [];
    let bytes = 0;
    const flush = (): void => {
      if (batch.length === 0) return;
      link.send(writeForward(this.nextForwardId++, batch));
      this.options.tracing?.forwarding(peer.nodeId, batch);
      this.options.observer?.forwarded(peer.nodeId, rg.settings.channel, rg.settings.group, batch.length, bytes);
      batch = [];
      bytes = 0;
    };
    for (const d of deliveries) {
      const size = d.event.bytes.length + perEvent;
      if (size > limit) {
        this.unsendable(peer, rg, d, limit);
        continue;
      }
      if (batch.length === MAX_FORWARD_EVENTS || bytes + size > limit) flush();
      batch.push({ channel: rg.settings.channel, group: rg.settings.group, sequence: d.event.sequence, attempt: d.attempt, bytes: d.event.bytes });
      bytes += size;
    }
    flush();
  }

  /**
   * An event larger than the peer accepts: it cannot go there. It is refused like a nack
   * (an attempt), so it goes to another member or, at max attempts, to the dead letters.
   */
  private unsendable(peer: PeerState, rg: RemoteGroup, d: OutgoingDelivery, limit: number): void {
    rg.inflight.delete(d.event.sequence);
    this.log.warn(
      { peer: peer.nodeId, channel: rg.settings.channel, group: rg.settings.group, sequence: d.event.sequence, bytes: d.event.bytes.length, limit },
      `${rg.settings.channel}#${d.event.sequence} (${d.event.bytes.length} bytes) is too large for ${peer.nodeId}, which accepts frames of ${limit} bytes; refused for ${rg.settings.group} there (raise maxMessageBytes on ${peer.nodeId})`,
    );
    setImmediate(() => {
      if (!rg.removed) rg.membership?.nack([d.deliveryId], 0);
    });
  }

  private receiveOutcomes(link: PeerLink, outcomes: Outcomes): void {
    const peer = this.peers.get(link.nodeId)!;
    // Every sequence is checked before any is applied: a bad frame changes nothing.
    outcomes.groups.forEach((g, i) => {
      for (const [name, seqs] of [["done", g.done], ["returned", g.returned]] as const) {
        const j = seqs.findIndex((s) => s < 1n || s > BigInt(MAX_SEQUENCE));
        if (j >= 0) {
          const field = `outcomes.groups[${i}].${name}[${j}]`;
          throw invalid(Reason.PROTOCOL_VIOLATION, field, `${field} is ${seqs[j]}; a sequence is ${SEQUENCE_RULE}`);
        }
      }
    });
    for (const g of outcomes.groups) {
      const rg = peer.groups.get(groupKey(g.channel, g.group));
      if (!rg?.membership) continue; // given back or timed out meanwhile: late reports are ignored
      const ids = (seqs: bigint[]): number[] => {
        const out: number[] = [];
        for (const s of seqs) {
          const d = rg.inflight.get(Number(s));
          if (!d) continue;
          rg.inflight.delete(Number(s));
          out.push(d.deliveryId);
        }
        return out;
      };
      const done = ids(g.done);
      if (done.length > 0) rg.membership.ack(done);
      const returned = ids(g.returned);
      if (returned.length > 0) rg.membership.giveBack(returned);
    }
  }

  // ---- receiver side: relay copies ----

  private receiveForward(link: PeerLink, forwardId: bigint, events: ForwardedEvent[]): void {
    const origin = link.nodeId;
    const originLog = link.peer!.logId.toString(16);
    const state = this.linkStates.get(link)!;
    const copies: HeldCopy[] = [];
    // Every event is checked before any is stored: a bad forward changes nothing.
    events.forEach((f, i) => {
      const field = `forward.events[${i}]`;
      if (!isName(f.channel) || !isName(f.group)) {
        throw invalid(Reason.INVALID_CHANNEL, `${field}.channel`, `${field} names channel ${JSON.stringify(f.channel.slice(0, 80))} and group ${JSON.stringify(f.group.slice(0, 80))}; both must follow the name grammar`);
      }
      if (f.sequence < 1) throw invalid(Reason.PROTOCOL_VIOLATION, `${field}.sequence`, `${field}.sequence must be ${SEQUENCE_RULE}`);
      if (f.attempt < 1) throw invalid(Reason.PROTOCOL_VIOLATION, `${field}.attempt`, `${field}.attempt is 0; use 1 to 4294967295`);
      let key: string;
      try {
        const event = readEvent(f.bytes);
        // The origin applied its publish limits; here an event need only fit in a frame
        // (sidecars with different max event sizes must not refuse each other's events).
        // "weft." attributes are allowed: the origin sidecar sets them (dead letters, redrives).
        checkEvent(event, f.bytes.length, { ...this.options.limits, maxEventBytes: this.options.maxMessageBytes }, { allowReserved: true });
        if (event.channel !== f.channel) throw new Error(`the event's channel ${JSON.stringify(event.channel)} is not ${JSON.stringify(f.channel)}`);
        key = event.key;
      } catch (e) {
        if (e instanceof WeftError) throw new WeftError(e.code, e.reason, `${field}: ${e.message}`, `${field}.event`);
        throw invalid(Reason.INVALID_EVENT, `${field}.event`, `${field}.event is not a valid weft.v1.Event: ${(e as Error).message}`);
      }
      const gk = groupKey(f.channel, f.group);
      if (!this.advertised.has(gk)) {
        if (state.advertised.has(gk)) {
          // Withdrawn while the forward was on its way: given back, not stored.
          this.queueOutcome(origin, originLog, f.channel, f.group, "returned", f.sequence);
          return;
        }
        throw new WeftError(
          status.FAILED_PRECONDITION,
          Reason.NOT_ADVERTISED,
          `${field} is for ${f.channel}/${f.group}, which this sidecar never advertised on this link: forward only to groups in the receiver's interest`,
          `${field}.group`,
        );
      }
      // One relay copy per origin log, group and origin sequence, however often it is forwarded.
      copies.push({ channel: f.channel, group: f.group, origin: { node: origin, log: originLog, sequence: f.sequence }, key, bytes: f.bytes });
    });
    const answer = (): void => link.send(writeStored(forwardId));
    if (copies.length === 0) {
      answer();
      return;
    }
    this.options.engine.appendCopies(copies).then(
      (results) => {
        results.forEach((r, i) => {
          const c = copies[i]!;
          // A retried forward of an event already finished here: report it again.
          if (r.done) this.queueOutcome(origin, originLog, c.channel, c.group, "done", c.origin.sequence);
        });
        answer();
      },
      (e: unknown) => {
        if (e instanceof WeftError && e.reason === Reason.TOO_MANY_CHANNELS) {
          // The origin keeps what it forwarded, and forwards it again on the next link.
          this.log.warn({ peer: origin, reason: e.reason }, `refused a forward from ${origin}: ${e.message}`);
          link.fail(e);
          return;
        }
        link.fail(new WeftError(status.UNAVAILABLE, Reason.LOG_CLOSED, `relay copies could not be stored: ${(e as Error).message}`));
      },
    );
  }

  /**
   * Queues an outcome for the origin log that forwarded the event. Outcomes name sequences,
   * which a wiped origin reuses: a report for another log than the one now behind the node
   * is dropped, never applied to the new log's events.
   */
  private queueOutcome(origin: string, log: string, channel: string, group: string, kind: "done" | "returned", sequence: number): void {
    const to = `${origin}/${log}`;
    let byGroup = this.outcomes.get(to);
    if (!byGroup) this.outcomes.set(to, (byGroup = new Map()));
    const key = groupKey(channel, group);
    let g = byGroup.get(key);
    if (!g) byGroup.set(key, (g = { channel, group, done: [], returned: [] }));
    g[kind].push(sequence);
    if (!this.outcomesScheduled) {
      this.outcomesScheduled = true;
      setImmediate(() => this.flushOutcomes());
    }
  }

  /** Sends queued outcomes to their origins; an origin not linked now will forward again, and hear again. */
  private flushOutcomes(): void {
    this.outcomesScheduled = false;
    for (const [to, byGroup] of this.outcomes) {
      const [origin = "", log = ""] = to.split("/");
      const link = this.peers.get(origin)?.link;
      if (!link?.open || link.peer!.logId.toString(16) !== log) continue;
      let groups: GroupOutcomes[] = [];
      let count = 0;
      const send = (): void => {
        if (groups.length > 0) link.send(writeOutcomes(groups));
        groups = [];
        count = 0;
      };
      for (const g of byGroup.values()) {
        for (let i = 0; i < Math.max(g.done.length, g.returned.length); i += MAX_OUTCOMES) {
          const done = g.done.slice(i, i + MAX_OUTCOMES);
          const returned = g.returned.slice(i, i + MAX_OUTCOMES);
          groups.push({ channel: g.channel, group: g.group, done, returned });
          count += done.length + returned.length;
          if (count >= MAX_OUTCOMES) send();
        }
      }
      send();
    }
    this.outcomes.clear();
  }

  // ---- this sidecar's interest ----

  private advertise(key: string, settings: JoinSettings): void {
    const timer = this.lingering.get(key);
    if (timer) clearTimeout(timer);
    this.lingering.delete(key);
    const known = this.advertised.has(key);
    this.advertised.set(key, settings);
    if (!known) this.broadcast(this.interestOf([this.known(settings)], () => true));
  }

  /** The group as peers learn of it (it exists once a member joined; settings otherwise). */
  private known(settings: JoinSettings): KnownGroup {
    return (
      this.options.engine.knownGroups().find((g) => g.channel === settings.channel && g.group === settings.group) ?? {
        channel: settings.channel,
        group: settings.group,
        start: settings.start,
        maxAttempts: settings.maxAttempts,
        deadLetterChannel: settings.deadLetterChannel,
        createdAt: 0,
      }
    );
  }

  /**
   * The group lost its last member here: it stays advertised for `ms`, then it is withdrawn
   * and its origins give what they forwarded here to the group's members elsewhere. The
   * relay copies held for it are given up (GroupDispatcher.release): done for the group here,
   * without an outcome; an origin that forwards one again later has it stored as a new copy.
   */
  private linger(key: string, ms: number): void {
    const previous = this.lingering.get(key);
    if (previous) clearTimeout(previous);
    const timer = setTimeout(() => {
      this.lingering.delete(key);
      const settings = this.advertised.get(key);
      if (!settings || this.options.engine.interest().some((s) => groupKey(s.channel, s.group) === key)) return;
      this.advertised.delete(key);
      this.broadcast(this.interestOf([this.known(settings)], () => false));
      // The origins give back what they forwarded here: the copies held for the group go.
      this.options.engine.release(settings.channel, settings.group);
    }, ms);
    timer.unref();
    this.lingering.set(key, timer);
  }

  /**
   * The groups as interest entries, each with whether it has members behind this sidecar.
   * A group stored out of range (by an older release, or a hand-edited data directory) is
   * clamped or left out with an error logged (see `sendable`): encoding interest never
   * throws, and peers never refuse a link over a group this sidecar stored.
   */
  private interestOf(groups: readonly KnownGroup[], members: (g: KnownGroup) => boolean): GroupInterest[] {
    const out: GroupInterest[] = [];
    for (const g of groups) {
      const { group, problems } = sendable(g);
      if (problems.length > 0) {
        this.log.error(
          { channel: String(g.channel), group: String(g.group), problems },
          `group ${String(g.channel)}/${String(g.group)} is stored out of range (${problems.join("; ")}): ${group ? "peers learn it clamped" : "peers do not learn of it"}`,
        );
      }
      if (group) out.push(toGroupInterest(group, members(g)));
    }
    return out;
  }

  private broadcast(groups: GroupInterest[]): void {
    if (groups.length === 0) return;
    const frame = writeFrame({ case: "interest", value: { snapshot: false, groups } as never });
    for (const peer of this.peers.values()) {
      const link = peer.link;
      if (!link?.open) continue;
      const state = this.linkStates.get(link)!;
      for (const g of groups) if (g.members) state.advertised.add(groupKey(g.channel, g.group));
      link.send(frame);
    }
  }
}

const groupKey = (channel: string, group: string): string => `${channel}!${group}`;

function toGroupInterest(g: KnownGroup, members: boolean): GroupInterest {
  return {
    $typeName: "weft.v1.GroupInterest",
    channel: g.channel,
    group: g.group,
    start: toStartPosition(g.start),
    maxAttempts: g.maxAttempts,
    deadLetterChannel: g.deadLetterChannel,
    members,
    createdUnixMs: BigInt(Math.round(g.createdAt)),
  };
}

/**
 * `g` within what a peer accepts in a GroupInterest (the checks of a Subscribe open, and
 * src/contract/ranges.ts), with what was wrong: numbers out of range are clamped (a creation
 * time out of range is sent as unknown), a bad dead-letter channel is sent as empty (the
 * receiver's default), and a group with a bad name, or a start or max attempts that are not
 * numbers at all, is undefined: it cannot be sent.
 */
export function sendable(g: KnownGroup): { group: KnownGroup | undefined; problems: string[] } {
  const problems: string[] = [];
  if (typeof g.channel !== "string" || typeof g.group !== "string" || !isName(g.channel) || !isName(g.group)) {
    return { group: undefined, problems: ["its channel or group breaks the name grammar"] };
  }
  const maxAttempts = clamp(g.maxAttempts, 1, MAX_ATTEMPTS);
  if (maxAttempts === undefined) return { group: undefined, problems: [`max attempts ${String(g.maxAttempts)} is not a number`] };
  if (maxAttempts !== g.maxAttempts) problems.push(`max attempts ${g.maxAttempts} sent as ${maxAttempts} (1 to ${MAX_ATTEMPTS})`);
  let deadLetterChannel = g.deadLetterChannel;
  if (typeof deadLetterChannel !== "string" || (deadLetterChannel !== "" && (!isName(deadLetterChannel) || deadLetterChannel === g.channel))) {
    problems.push(`dead-letter channel ${JSON.stringify(deadLetterChannel)} sent as the default`);
    deadLetterChannel = "";
  }
  let createdAt = g.createdAt;
  if (clamp(createdAt, 0, MAX_TIME_MS) !== createdAt) {
    problems.push(`creation time ${String(createdAt)} ms sent as unknown (${TIME_MS_RULE})`);
    createdAt = 0;
  }
  let start: StartAt;
  const stored = g.start as Partial<Record<string, unknown>> | undefined;
  switch (stored?.kind) {
    case "latest":
    case "earliest":
      start = { kind: stored.kind };
      break;
    case "sequence": {
      const sequence = clamp(stored.sequence, 1, MAX_SEQUENCE);
      if (sequence === undefined) return { group: undefined, problems: [...problems, `start sequence ${String(stored.sequence)} is not a number`] };
      if (sequence !== stored.sequence) problems.push(`start sequence ${String(stored.sequence)} sent as ${sequence} (${SEQUENCE_RULE})`);
      start = { kind: "sequence", sequence };
      break;
    }
    case "time": {
      const time = clamp(stored.time, 0, MAX_TIME_MS);
      if (time === undefined) return { group: undefined, problems: [...problems, `start time ${String(stored.time)} ms is not a number`] };
      if (time !== stored.time) problems.push(`start time ${String(stored.time)} ms sent as ${time} (${TIME_MS_RULE})`);
      start = { kind: "time", time };
      break;
    }
    default:
      return { group: undefined, problems: [...problems, `start ${JSON.stringify(stored)} is not a start position`] };
  }
  return { group: { channel: g.channel, group: g.group, start, maxAttempts, deadLetterChannel, createdAt }, problems };
}

function toStartPosition(start: StartAt): StartPosition {
  const base = { $typeName: "weft.v1.StartPosition", sequence: 0n, time: undefined } as const;
  switch (start.kind) {
    case "latest":
      return { ...base, kind: StartPosition_Kind.LATEST };
    case "earliest":
      return { ...base, kind: StartPosition_Kind.EARLIEST };
    case "sequence":
      return { ...base, kind: StartPosition_Kind.SEQUENCE, sequence: BigInt(start.sequence) };
    case "time":
      return { ...base, kind: StartPosition_Kind.TIME, time: timestampFromMs(start.time) };
  }
}

function randomInstance(): bigint {
  const n = randomBytes(8).readBigUInt64BE(0);
  return n === 0n ? 1n : n;
}
