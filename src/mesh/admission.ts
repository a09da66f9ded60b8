// Which hellos open a peer link: the hello's own checks, the peer's identity, one link per
// pair of sidecars, and room under maxPeers.
import { status } from "@grpc/grpc-js";
import { Reason, WeftError, exhausted, invalid } from "../contract/errors.js";
import { isNodeId, NODE_ID_RULE } from "../contract/validate.js";
import type { Hello } from "../gen/weft/v1/peer_pb.js";
import type { Logger } from "../ops/logger.js";
import type { Observer } from "../ops/observer.js";
import { MIN_PROTOCOL_VERSION, PROTOCOL_VERSION } from "../wire/peer-frames.js";
import type { PeerLink } from "./peer-link.js";

/** The least a peer may say it accepts: the smallest maxMessageBytes of the configuration. */
const MIN_PEER_MESSAGE_BYTES = 4096;
/** How long a link replaced by one the peer dialed may wait for the peer to end it, ms. */
const SUPERSEDED_MS = 5000;

/** A peer known here when its hello arrives on a new link. */
export interface KnownPeer {
  /** The process behind the node id, from its last hello. */
  readonly instance: bigint;
  /** Its link now; set to undefined when the new link replaces it. */
  link: PeerLink | undefined;
}

export interface AdmissionOptions {
  /** This sidecar's node id and process instance. */
  nodeId: string;
  instance: bigint;
  /** Most peers known at once. Default: no limit. */
  maxPeers?: number | undefined;
  /** For the refusal of one peer too many: how long a peer that left stays known, ms. */
  peerTimeoutMs: number;
  log: Logger;
  observer?: Observer | undefined;
}

/**
 * Which hellos open a link: a protocol range both sides speak, well-formed ids, the node id
 * the peer's certificate names, not this sidecar itself, one link per pair of sidecars
 * (the one the lower node id dialed, decided alike on both sides), and room under maxPeers.
 * Owns the links a preferred one replaced, until the peer ends them or their time is up.
 */
export class LinkAdmission {
  /** Links replaced by one the peer dialed, detached and waiting for the peer to end them, with the timer that ends them otherwise. */
  private readonly superseded = new Map<PeerLink, NodeJS.Timeout>();

  constructor(private readonly options: AdmissionOptions) {}

  /**
   * Checks the hello that arrived on `link` from `peer` (undefined for a node not known
   * here, one of `known` peers). A link that wins over the peer's current one detaches
   * that one (`peer.link` becomes undefined). Refusals that concern the operator are logged.
   * @returns the refusal, or undefined when the link may be registered for the peer.
   */
  check(link: PeerLink, hello: Hello, peer: KnownPeer | undefined, known: number): WeftError | undefined {
    const { nodeId, instance } = this.options;
    const malformed = checkHello(hello);
    if (malformed) return malformed;
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
    if (hello.nodeId === nodeId) {
      if (hello.instance === instance) {
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
      const dialedBy = (l: PeerLink): string => (l.role === "dialer" ? nodeId : hello.nodeId);
      const preferred = nodeId < hello.nodeId ? nodeId : hello.nodeId;
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
    if (!peer && known >= maxPeers) {
      this.options.observer?.refused(Reason.TOO_MANY_PEERS);
      return this.refuse(
        link,
        exhausted(
          Reason.TOO_MANY_PEERS,
          "hello.node_id",
          `this sidecar knows ${known} peers and its limit (maxPeers) is ${maxPeers}; node ${JSON.stringify(hello.nodeId)} would be one more: raise maxPeers, or wait for a peer that left to pass the peer timeout (${this.options.peerTimeoutMs} ms)`,
        ),
      );
    }
    return undefined;
  }

  /** The links replaced and not yet ended (all, or those with one node). */
  supersededLinks(nodeId?: string): PeerLink[] {
    return [...this.superseded.keys()].filter((l) => nodeId === undefined || l.nodeId === nodeId);
  }

  /** Ends a replaced link before its timer does. */
  end(link: PeerLink, why: WeftError): void {
    this.forget(link);
    link.fail(why);
  }

  /** The link ended: a replaced link's timer stops. Any other link is ignored. */
  forget(link: PeerLink): void {
    clearTimeout(this.superseded.get(link));
    this.superseded.delete(link);
  }

  /** Logs a refused link (who, and why) and returns the refusal. */
  private refuse(link: PeerLink, e: WeftError): WeftError {
    const who = link.address ? ` with ${link.address}` : "";
    this.options.log.warn({ address: link.address || undefined, reason: e.reason }, `refused a link${who}: ${e.message}`);
    return e;
  }
}

/** The hello's own fields: a protocol range both sides speak, ids present and well formed, limits in range. */
export function checkHello(hello: Hello): WeftError | undefined {
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
  return undefined;
}
