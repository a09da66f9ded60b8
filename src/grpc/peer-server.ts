import type { Server, ServerDuplexStream } from "@grpc/grpc-js";
import { Peer as PeerDesc } from "../gen/weft/v1/peer_pb.js";
import type { MeshNode } from "../mesh/mesh-node.js";
import { PeerLink, serverTransport } from "../mesh/peer-link.js";
import { rawServiceDefinition } from "../wire/service-definitions.js";
import { nodeOfCertificate, peerServerCredentials } from "../security/credentials.js";
import type { TlsFiles } from "../security/tls-files.js";
import type { ReceiveBudget } from "./receive-budget.js";
import { widenReceiveWindow } from "../wire/receive-window.js";
import { bind, newServer } from "./server.js";

/**
 * Most streams one connection may open on the peer API. A sidecar opens one (its link) per
 * connection; the rest is room for a link replacing one that has not ended yet.
 */
export const PEER_MAX_STREAMS = 100;

export interface PeerServerOptions {
  /** "host:port"; port 0 picks a free port. */
  address: string;
  /** Largest frame accepted from a peer, bytes. */
  maxMessageBytes: number;
  /** Bounds the bytes of frames received in part on this listener, when given. */
  receiveBudget?: ReceiveBudget | undefined;
  /** Mutual TLS with these files: a peer is the node its certificate names. Plaintext without. */
  tls?: TlsFiles | undefined;
}

/**
 * The gRPC server of the peer API (weft.v1.Peer), on its own listener so that it can be
 * bound wider than the service API. With TLS files, only a peer whose certificate tls.ca
 * signed gets through the handshake, and its link is the node that certificate names.
 */
export class PeerServer {
  private constructor(
    private readonly server: Server,
    /** The bound address, with the real port when 0 was asked for. */
    readonly address: string,
  ) {}

  static async start(node: MeshNode, options: PeerServerOptions): Promise<PeerServer> {
    const server = newServer(options.maxMessageBytes, PEER_MAX_STREAMS);
    server.addService(rawServiceDefinition(PeerDesc), {
      Link: (call: ServerDuplexStream<Buffer, Uint8Array>) => {
        // Forwards of hundreds of events come in on it; outcomes go out.
        widenReceiveWindow(call);
        const tls = options.tls;
        const certified = tls ? nodeOfCertificate(call.getAuthContext()?.sslPeerCertificate, tls.material.identity.trustDomain) : undefined;
        new PeerLink(serverTransport(call, node.nodeId, certified), "acceptor", node, node.heartbeatMs);
      },
    });
    const address = await bind(server, options.address, peerServerCredentials(options.tls));
    options.receiveBudget?.watch(server);
    return new PeerServer(server, address);
  }

  /** Stops accepting links; links still open after `graceMs` are cut. */
  async shutdown(graceMs = 1000): Promise<void> {
    const stopped = new Promise<void>((resolve) => this.server.tryShutdown(() => resolve()));
    const timer = setTimeout(() => this.server.forceShutdown(), graceMs);
    await stopped;
    clearTimeout(timer);
  }

  /** Cuts every link and the listener at once. */
  forceShutdown(): void {
    this.server.forceShutdown();
  }
}
