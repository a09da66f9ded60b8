import { lookup } from "node:dns/promises";
import { type ChannelCredentials, type Client, type ClientDuplexStream, makeGenericClientConstructor } from "@grpc/grpc-js";
import { Reason } from "../contract/errors.js";
import { Peer as PeerDesc } from "../gen/weft/v1/peer_pb.js";
import { rawServiceDefinition } from "../wire/service-definitions.js";
import { WIDE_RECEIVE_WINDOW } from "../wire/receive-window.js";
import { peerChannelCredentials } from "../security/credentials.js";
import type { TlsFiles } from "../security/tls-files.js";
import type { Logger } from "../ops/logger.js";
import type { MeshNode } from "./mesh-node.js";
import { type LinkClosed, PeerLink, clientTransport } from "./peer-link.js";

export interface DialerOptions {
  /** Static peer addresses, "host:port". */
  peers: string[];
  /** DNS names whose every address is a peer, "name:port". */
  peersDns: string[];
  /** How often DNS names are resolved again, ms. */
  dnsIntervalMs: number;
  /** Largest message accepted from a peer, bytes. */
  maxMessageBytes: number;
  /** Told about names that do not resolve and addresses it cannot link with. */
  logger: Logger;
  /** Mutual TLS with these files; plaintext without. */
  tls?: TlsFiles | undefined;
  /** Resolves a DNS name to its addresses. Default: the system resolver (dns.lookup). */
  lookup?: (name: string) => Promise<{ address: string; family: number }[]>;
}

/** The TLS server name a sidecar asks for when it dials a peer (SNI); not checked. */
const PEER_SERVER_NAME = "weft-peer";

/** Resolutions in a row without an address before it stops being dialed. */
const DNS_MISSES_TO_FORGET = 3;

const PeerClient = makeGenericClientConstructor(rawServiceDefinition(PeerDesc), "Peer");

/**
 * Keeps a link dialed to every peer address: the static list and every address the DNS
 * names resolve to (re-resolved periodically, as a Kubernetes headless Service needs).
 * A dropped link is dialed again with backoff. An address that turns out to be this
 * sidecar's own is skipped from then on; an address whose sidecar already has a link with
 * this one (it dialed first) is dialed again only once that link is gone.
 */
export class Dialer {
  private readonly targets = new Map<string, DialTarget>();
  /** Addresses DNS gave, and how many resolutions in a row have not given them since. */
  private readonly dnsAddresses = new Map<string, number>();
  private dnsTimer: NodeJS.Timeout | undefined;
  private stopped = false;
  /** One credentials object for every target: grpc-js watches the TLS files once for all. */
  private readonly credentials: ChannelCredentials;

  constructor(
    private readonly node: MeshNode,
    private readonly options: DialerOptions,
  ) {
    this.credentials = peerChannelCredentials(options.tls);
  }

  start(): void {
    for (const a of this.options.peers) this.target(a);
    if (this.options.peersDns.length > 0) {
      void this.resolve();
      this.dnsTimer = setInterval(() => void this.resolve(), this.options.dnsIntervalMs);
      this.dnsTimer.unref();
    }
  }

  stop(): void {
    this.stopped = true;
    if (this.dnsTimer) clearInterval(this.dnsTimer);
    for (const t of this.targets.values()) t.stop();
  }

  /** The addresses being dialed, and whether each turned out to be this sidecar. */
  status(): { address: string; self: boolean; nodeId: string }[] {
    return [...this.targets.values()].map((t) => ({ address: t.address, self: t.self, nodeId: t.nodeId }));
  }

  private target(address: string): void {
    if (this.stopped || this.targets.has(address)) return;
    const t = new DialTarget(address, this.node, this.options, this.credentials);
    this.targets.set(address, t);
    void t.run();
  }

  private async resolve(): Promise<void> {
    const seen = new Set<string>();
    let complete = true;
    for (const entry of this.options.peersDns) {
      const i = entry.lastIndexOf(":");
      const name = entry.slice(0, i).replace(/^\[(.*)\]$/, "$1");
      const port = entry.slice(i + 1);
      try {
        const found = await (this.options.lookup ?? ((n: string) => lookup(n, { all: true })))(name);
        for (const a of found) {
          const address = a.family === 6 ? `[${a.address}]:${port}` : `${a.address}:${port}`;
          seen.add(address);
          this.dnsAddresses.set(address, 0);
          this.target(address);
        }
      } catch (e) {
        complete = false;
        this.options.logger.warn({ name }, `cannot resolve peer name ${name} (will try again in ${this.options.dnsIntervalMs} ms): ${(e as Error).message}`);
      }
    }
    // An address gone from DNS (a pod replaced) stops being dialed after three resolutions
    // without it; a link it has stays until it ends. Not after a failed lookup: DNS may be down.
    if (!complete || this.stopped) return;
    for (const [address, missed] of this.dnsAddresses) {
      if (seen.has(address)) continue;
      if (missed + 1 < DNS_MISSES_TO_FORGET || this.options.peers.includes(address)) {
        this.dnsAddresses.set(address, missed + 1);
        continue;
      }
      this.dnsAddresses.delete(address);
      this.targets.get(address)?.retire();
      this.targets.delete(address);
    }
  }
}

class DialTarget {
  /** The address is this sidecar's own. */
  self = false;
  /** The node at the address, once known. */
  nodeId = "";
  private stopped = false;
  private readonly client: Client;
  private call: ClientDuplexStream<Uint8Array, Buffer> | undefined;
  private wake: (() => void) | undefined;

  constructor(
    readonly address: string,
    private readonly node: MeshNode,
    private readonly options: DialerOptions,
    credentials: ChannelCredentials,
  ) {
    this.client = new PeerClient(address, credentials, {
      "grpc.max_receive_message_length": options.maxMessageBytes,
      "grpc.max_send_message_length": -1,
      "grpc.initial_reconnect_backoff_ms": 100,
      "grpc.max_reconnect_backoff_ms": 2000,
      // Forwards of hundreds of events come in on a link the peer accepted, too.
      ...WIDE_RECEIVE_WINDOW,
      // Peers are dialed by address and known by their certificate's SPIFFE id, not a host
      // name: a fixed TLS server name keeps an IP address out of SNI.
      ...(options.tls ? { "grpc.ssl_target_name_override": PEER_SERVER_NAME } : {}),
    });
  }

  async run(): Promise<void> {
    let delay = 100;
    let lastReason = "";
    let failures = 0;
    while (!this.stopped && !this.self) {
      if (this.nodeId && this.node.hasLink(this.nodeId)) {
        await this.sleep(this.node.heartbeatMs);
        continue;
      }
      const { why, wasUp } = await this.dialOnce();
      if (this.stopped) break;
      if (why.nodeId) this.nodeId = why.nodeId;
      if (why.reason === Reason.SELF_LINK) {
        this.self = true;
        break;
      }
      if (wasUp) {
        delay = 100;
        failures = 0;
      } else if (why.reason === Reason.LINK_EXISTS) {
        this.options.logger.debug({ address: this.address, peer: this.nodeId }, `${this.address} is ${this.nodeId || "a peer"}, linked already: dialed again once that link is gone`);
      } else {
        // Said once per kind of failure, and only when it persists: peers starting together
        // refuse each other for a moment.
        failures = why.reason === lastReason ? failures + 1 : 1;
        if (failures === 3 || (failures === 1 && why.reason !== "UNAVAILABLE")) {
          this.options.logger.warn({ address: this.address, reason: why.reason }, `cannot link with ${this.address}: ${why.reason}: ${why.message} (retrying)`);
        }
      }
      lastReason = why.reason;
      await this.sleep(delay / 2 + (Math.random() * delay) / 2);
      delay = Math.min(delay * 2, 5000);
    }
    this.client.close();
  }

  stop(): void {
    this.stopped = true;
    this.call?.cancel();
    this.wake?.();
  }

  /** Stops dialing again, leaving a link that is up to end by itself. */
  retire(): void {
    this.stopped = true;
    this.wake?.();
  }

  private dialOnce(): Promise<{ why: LinkClosed; wasUp: boolean }> {
    return new Promise((resolve) => {
      const call = this.client.makeBidiStreamRequest(`/${PeerDesc.typeName}/Link`, (b: Uint8Array) => Buffer.from(b.buffer, b.byteOffset, b.byteLength), (b: Buffer) => b) as ClientDuplexStream<Uint8Array, Buffer>;
      this.call = call;
      const transport = clientTransport(call, this.options.tls?.material.identity.trustDomain);
      const link = new PeerLink(transport, "dialer", this.node, this.node.heartbeatMs, this.address);
      transport.onClose((why) => {
        this.call = undefined;
        if (link.peer) this.nodeId = link.peer.nodeId;
        resolve({ why, wasUp: link.peer !== undefined && why.reason !== Reason.LINK_EXISTS });
      });
    });
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        this.wake = undefined;
        resolve();
      }, ms);
      t.unref();
      this.wake = () => {
        clearTimeout(t);
        resolve();
      };
    });
  }
}
