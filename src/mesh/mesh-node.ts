// The mesh node: the host of the peer links, which knows the peers and their timeout and
// hands each frame to the part that owns it.
import { randomBytes } from "node:crypto";
import { status } from "@grpc/grpc-js";
import { Reason, WeftError } from "../contract/errors.js";
import type { Limits } from "../contract/validate.js";
import type { DeliveryEngine } from "../delivery/delivery-engine.js";
import type { Hello } from "../gen/weft/v1/peer_pb.js";
import type { EventLog } from "../log/event-log.js";
import { type Logger, createLogger } from "../ops/logger.js";
import type { Observer } from "../ops/observer.js";
import type { EventTracing } from "../ops/tracing.js";
import { type IncomingFrame, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION, writeFrame } from "../wire/peer-frames.js";
import { LinkAdmission } from "./admission.js";
import { Forwarding, type ForwardingPeer } from "./forwarding.js";
import { LocalInterest, groupKey } from "./interest.js";
import type { LinkClosed, LinkHost, PeerLink } from "./peer-link.js";
import { RelayCopies } from "./relay-copies.js";

export { sendable } from "./interest.js";

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

/** What this sidecar knows of one peer (by node id); outlives its links until the peer timeout. */
interface PeerState extends ForwardingPeer {
  instance: bigint;
  link: PeerLink | undefined;
  lost: NodeJS.Timeout | undefined;
  /** When the last link came up or went down, Unix ms (for operators). */
  since: number;
  /** The peer's software version, from its last hello. */
  softwareVersion: string;
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

/** How long a new link must stay up before a peer waiting out its timeout counts as back (at most half the peer timeout). */
const PROOF_MS = 2000;

/**
 * This sidecar's place in the mesh, and the host of its peer links: it knows the peers
 * (linked, or waiting out the peer timeout) and hands each link's frames to the part that
 * owns them. Which hellos open a link is LinkAdmission's (admission.ts). As an origin,
 * each group behind a peer is a member of the local group, and its deliveries become
 * forwards (Forwarding, forwarding.ts). As a receiver, forwarded events are stored as relay
 * copies, and their outcomes go back to the origin (RelayCopies, relay-copies.ts). What
 * this sidecar advertises to its peers is LocalInterest's (interest.ts).
 */
export class MeshNode implements LinkHost {
  readonly instance: bigint = randomInstance();
  private readonly peers = new Map<string, PeerState>();
  private stopped = false;
  readonly heartbeatMs: number;
  private readonly log: Logger;
  private readonly admission: LinkAdmission;
  private readonly interest: LocalInterest;
  private readonly forwarding: Forwarding;
  private readonly copies: RelayCopies;

  constructor(private readonly options: MeshNodeOptions) {
    this.heartbeatMs = options.heartbeatMs ?? Math.max(20, Math.min(1000, Math.floor(options.peerTimeoutMs / 5)));
    this.log = options.logger ?? createLogger().child({ node: options.nodeId });
    const { engine, observer, tracing, peerTimeoutMs } = options;
    const log = this.log;
    this.admission = new LinkAdmission({ nodeId: options.nodeId, instance: this.instance, maxPeers: options.maxPeers, peerTimeoutMs, log, observer });
    this.interest = new LocalInterest({
      engine,
      lingerMs: options.lingerMs ?? Math.min(5000, peerTimeoutMs),
      peerTimeoutMs,
      log,
      links: () => this.openLinks(),
      flushOutcomes: () => this.copies.flush(),
    });
    this.forwarding = new Forwarding({ engine, peerWindow: options.peerWindow, log, observer, tracing });
    this.copies = new RelayCopies({
      engine,
      limits: options.limits,
      maxMessageBytes: options.maxMessageBytes,
      interest: this.interest,
      linkTo: (nodeId) => this.peers.get(nodeId)?.link,
      log,
    });
  }

  get nodeId(): string {
    return this.options.nodeId;
  }

  /** Starts advertising this sidecar's groups and reporting relay outcomes. */
  start(): void {
    this.interest.start();
    // Relay copies are kept while their group is advertised here; a copy done here is
    // reported to its origin, which waits for the outcome.
    this.options.engine.routeOrigins({
      done: (channel, group, origin) => this.copies.queueOutcome(origin.node, origin.log, channel, group, "done", origin.sequence),
      returned: (channel, group, origin, attempts) => this.copies.queueAttempted(origin.node, origin.log, channel, group, origin.sequence, attempts),
      keeps: (channel, group) => this.interest.has(groupKey(channel, group)),
    });
  }

  /** Ends every link and timer; forwarding state stays in the log for the next start. */
  stop(): void {
    this.stopped = true;
    this.interest.stop();
    for (const peer of this.peers.values()) {
      if (peer.lost) clearTimeout(peer.lost);
      peer.link?.fail(shuttingDown());
    }
    for (const link of this.admission.supersededLinks()) this.admission.end(link, shuttingDown());
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
    if (this.stopped) return shuttingDown();
    let peer = this.peers.get(hello.nodeId);
    const refused = this.admission.check(link, hello, peer, this.peers.size);
    if (refused) return refused;
    if (!peer) {
      peer = { nodeId: hello.nodeId, instance: hello.instance, link: undefined, groups: new Map(), lost: undefined, since: Date.now(), softwareVersion: "" };
      this.peers.set(hello.nodeId, peer);
    }
    // A peer waiting out its timeout stays on the clock until the new link proves itself
    // (see prove): a link that fails at once, again and again, must not keep it forever.
    peer.instance = hello.instance;
    peer.softwareVersion = hello.softwareVersion;
    peer.link = link;
    return undefined;
  }

  up(link: PeerLink): void {
    // Within the peer timeout: a link that stays up must stop the clock before it runs out.
    setTimeout(() => this.prove(link), Math.min(PROOF_MS, Math.floor(this.options.peerTimeoutMs / 2))).unref();
    const linked = this.peers.get(link.nodeId);
    if (linked?.link === link) linked.since = Date.now();
    this.options.observer?.peerLink(link.nodeId, true);
    const role = link.role === "dialer" ? "dialed" : "accepted";
    this.log.info({ peer: link.nodeId, address: link.address || undefined, role }, `linked with ${link.nodeId}${link.address ? ` at ${link.address}` : ""} (${role})`);
    const groups = this.interest.snapshot(link);
    link.send(writeFrame({ case: "interest", value: { snapshot: true, groups } as never }));
  }

  closed(link: PeerLink, why: LinkClosed): void {
    this.admission.forget(link);
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
      this.copies.receive(link, frame.forwardId, frame.events);
      return;
    }
    const f = frame.frame;
    switch (f.case) {
      case "interest":
        this.forwarding.interest(this.peers.get(link.nodeId)!, link, f.value);
        break;
      case "outcomes":
        this.prove(link);
        this.forwarding.outcomes(this.peers.get(link.nodeId)!, f.value);
        break;
      case "stored":
        this.prove(link);
        break;
      case "heartbeat":
        break;
    }
  }

  // ---- the peer timeout ----

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
    this.forwarding.lose(peer);
    const silent = new WeftError(status.UNAVAILABLE, Reason.PEER_SILENT, `no link with ${peer.nodeId} stayed up for the peer timeout; its share went to others`);
    peer.link?.fail(silent);
    for (const link of this.admission.supersededLinks(peer.nodeId)) this.admission.end(link, silent);
    this.options.observer?.peerGone(peer.nodeId);
  }

  /** The links up now, one per peer at most (a link replaced by another is not the peer's). */
  private *openLinks(): Iterable<PeerLink> {
    for (const peer of this.peers.values()) if (peer.link?.open) yield peer.link;
  }
}

const shuttingDown = (): WeftError => new WeftError(status.UNAVAILABLE, Reason.SHUTTING_DOWN, "the sidecar is shutting down");

function randomInstance(): bigint {
  const n = randomBytes(8).readBigUInt64BE(0);
  return n === 0n ? 1n : n;
}
