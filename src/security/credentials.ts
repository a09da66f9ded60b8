import type { PeerCertificate } from "node:tls";
import { type ChannelCredentials, ServerCredentials, credentials, experimental } from "@grpc/grpc-js";
import { type WeftIdentity, identityOf } from "./spiffe.js";
import type { TlsFiles } from "./tls-files.js";

/**
 * The service API's credentials: TLS with the sidecar's certificate. A client certificate
 * is asked for but not required (a service may use a token or a unix socket instead); one
 * that does not verify against tls.ca gives no identity (grpc-js reports an empty auth context).
 * Without TLS files: plaintext.
 */
export function serviceServerCredentials(tls: TlsFiles | undefined): ServerCredentials {
  return tls ? experimental.createCertificateProviderServerCredentials(tls, tls, false) : ServerCredentials.createInsecure();
}

/**
 * The peer API's credentials: mutual TLS. A peer that presents no certificate, or one that
 * tls.ca did not sign, fails the handshake. Without TLS files: plaintext.
 */
export function peerServerCredentials(tls: TlsFiles | undefined): ServerCredentials {
  return tls ? experimental.createCertificateProviderServerCredentials(tls, tls, true) : ServerCredentials.createInsecure();
}

/**
 * The credentials a sidecar dials its peers with: its own certificate, and a peer's
 * certificate must be signed by tls.ca and name a node of this sidecar's trust domain. Peers
 * are dialed by address, so host names are not checked: the SPIFFE id is the identity.
 * Without TLS files: plaintext.
 */
export function peerChannelCredentials(tls: TlsFiles | undefined): ChannelCredentials {
  if (!tls) return credentials.createInsecure();
  return experimental.createCertificateProviderChannelCredentials(tls, tls, {
    checkServerIdentity: (_host, cert) => {
      const node = nodeOfCertificate(cert, tls.material.identity.trustDomain);
      return typeof node === "string" ? new Error(node) : undefined;
    },
  });
}

/**
 * The node a verified peer certificate names, or a sentence saying why it names none: no
 * SPIFFE id of Weft's scheme, a service's id, or another trust domain.
 */
export function nodeOfCertificate(cert: PeerCertificate | undefined, trustDomain: string): WeftIdentity | string {
  if (!cert || Object.keys(cert).length === 0) return "the peer presented no verified certificate";
  const identity = identityOf(cert.subjectaltname);
  if (typeof identity === "string") return identity;
  if (identity.kind !== "node") return `the certificate names the service ${identity.uri}; only sidecars (…/weft/node/NODE-ID) may link`;
  if (identity.trustDomain !== trustDomain) return `the certificate names ${identity.uri}, of trust domain ${identity.trustDomain}; this mesh's is ${trustDomain}`;
  return identity;
}
