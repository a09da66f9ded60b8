import { isNodeId } from "../contract/validate.js";

/**
 * Who a certificate names, read from its one SPIFFE URI SAN (docs/security.md, "Identities"):
 *
 *   spiffe://TRUST-DOMAIN/weft/node/NODE-ID      a sidecar: the peer API accepts only these
 *   spiffe://TRUST-DOMAIN/weft/service/NAME      a service calling its sidecar's service API
 *
 * NODE-ID and NAME follow the node id rule (1 to 64 letters, digits, '.', '_' or '-',
 * starting with a letter or digit). The trust domain is lowercase letters, digits, '.', '-'
 * and '_', as the SPIFFE standard has it. A sidecar trusts identities of its own
 * certificate's trust domain only.
 */
export interface WeftIdentity {
  kind: "node" | "service";
  trustDomain: string;
  /** The node id or the service name. */
  name: string;
  /** The whole SPIFFE id, as the certificate has it. */
  uri: string;
}

const TRUST_DOMAIN = /^[a-z0-9._-]{1,255}$/;
const SPIFFE_URI = /^spiffe:\/\/([^/]+)\/weft\/(node|service)\/([^/]+)$/;

/** Reads a SPIFFE id of Weft's scheme; undefined when `uri` is not one. */
export function parseIdentity(uri: string): WeftIdentity | undefined {
  const m = SPIFFE_URI.exec(uri);
  if (!m) return undefined;
  const [, trustDomain, kind, name] = m as unknown as [string, string, "node" | "service", string];
  if (!TRUST_DOMAIN.test(trustDomain) || !isNodeId(name)) return undefined;
  return { kind, trustDomain, name, uri };
}

/** The SPIFFE id of a node, as `weft certs` writes it into a node certificate. */
export function nodeUri(trustDomain: string, nodeId: string): string {
  return `spiffe://${trustDomain}/weft/node/${nodeId}`;
}

/** The SPIFFE id of a service, as `weft certs` writes it into a service certificate. */
export function serviceUri(trustDomain: string, name: string): string {
  return `spiffe://${trustDomain}/weft/service/${name}`;
}

/** True when `domain` may be a trust domain. */
export function isTrustDomain(domain: string): boolean {
  return TRUST_DOMAIN.test(domain);
}

/**
 * The identity a certificate names, from its subject alternative names as Node.js prints
 * them ("DNS:a, URI:spiffe://…"). A certificate with no SPIFFE URI, with more than one
 * (the SPIFFE standard allows one), or with one outside Weft's scheme names nobody: the
 * answer is a sentence saying why, for the refusal.
 */
export function identityOf(subjectAltName: string | undefined): WeftIdentity | string {
  const uris = [...(subjectAltName ?? "").matchAll(/(?:^|, )URI:("?)(spiffe:[^,"]*)\1/gi)].map((m) => m[2]!);
  if (uris.length === 0) return "the certificate has no SPIFFE URI SAN (spiffe://TRUST-DOMAIN/weft/node/NODE-ID)";
  if (uris.length > 1) return `the certificate has ${uris.length} SPIFFE URI SANs; an identity has exactly one`;
  return parseIdentity(uris[0]!) ?? `the certificate's SPIFFE id ${JSON.stringify(uris[0]!.slice(0, 200))} is not spiffe://TRUST-DOMAIN/weft/node/NODE-ID or …/weft/service/NAME`;
}
