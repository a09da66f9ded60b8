import { isNodeId } from "../src/contract/validate.js";
import { AccessControl, SOCKET_IDENTITY, type TokenHash } from "../src/security/access.js";
import { ANY_IDENTITY, type Grant, GroupPattern, NamePattern, PERMISSIONS, type Permission, Policy } from "../src/security/policy.js";

/**
 * The `policy` section of a config file: for each identity (or `*`, every authenticated
 * caller), the patterns it holds per permission.
 *
 * ```yaml
 * policy:
 *   billing:
 *     publish: [billing.>]
 *     subscribe: [orders.>/billing]
 *     settings: [orders.>/billing]
 *   ops:
 *     admin: [">"]
 * ```
 */
export type PolicyConfig = Record<string, Partial<Record<Permission, string[]>>>;

/** The `tokens` section: identity name → "sha256:HEX" of the bearer token. */
export type TokensConfig = Record<string, string>;

/** Most identities a policy or a token list may name. */
export const MAX_IDENTITIES = 1000;
/** Most patterns one identity may hold for one permission. */
export const MAX_PATTERNS = 1000;

const TOKEN_HASH = /^sha256:[0-9a-f]{64}$/;

/** Reports a value that cannot be used: the key under the section ("policy.billing.publish") and what is wrong. */
type Fail = (key: string, problem: string) => never;

/**
 * Checks a `policy` section (already a mapping of identity → mapping) and returns it as
 * plain data. Every pattern is parsed here, so a policy that loads cannot fail later.
 */
export function readPolicy(entries: Map<string, unknown>, fail: Fail): PolicyConfig {
  if (entries.size === 0) fail("policy", "is empty; name at least one identity, or remove policy (without one, every caller may do everything, on loopback only)");
  if (entries.size > MAX_IDENTITIES) fail("policy", `names ${entries.size} identities; at most ${MAX_IDENTITIES}`);
  const policy: PolicyConfig = Object.create(null);
  for (const [identity, value] of entries) {
    const at = `policy.${identity}`;
    if (identity !== ANY_IDENTITY && !isNodeId(identity)) {
      fail(at, 'is not an identity: a service name, a token\'s name or "local" (1 to 64 letters, digits, \'.\', \'_\' or \'-\'), or "*" for every authenticated caller');
    }
    if (!(value instanceof Map)) fail(at, `must be a mapping of permission to patterns (publish, subscribe, settings, admin), e.g. { publish: [orders.>] }`);
    const grant: Partial<Record<Permission, string[]>> = {};
    for (const [permission, patterns] of value as Map<unknown, unknown>) {
      const key = `${at}.${String(permission)}`;
      if (!PERMISSIONS.includes(permission as Permission)) fail(key, `is not a permission; the permissions are ${PERMISSIONS.join(", ")}`);
      if (!Array.isArray(patterns)) fail(key, "must be a list of patterns");
      if (patterns.length > MAX_PATTERNS) fail(key, `has ${patterns.length} patterns; at most ${MAX_PATTERNS}`);
      const texts: string[] = [];
      patterns.forEach((p: unknown, i) => {
        if (typeof p !== "string") fail(`${key}[${i}]`, "must be text, a pattern such as orders.> or orders.>/billing");
        const grouped = permission === "subscribe" || permission === "settings";
        const parsed = grouped ? GroupPattern.parse(p) : p.includes("/") ? "a channel pattern has no /GROUP part" : NamePattern.parse(p);
        if (typeof parsed === "string") fail(`${key}[${i}]`, `${JSON.stringify(p.slice(0, 80))} is not a pattern: ${parsed}`);
        texts.push(p);
      });
      grant[permission as Permission] = texts;
    }
    policy[identity] = grant;
  }
  return policy;
}

/** Checks a `tokens` section (a mapping of identity → "sha256:HEX"). */
export function readTokens(entries: Map<string, unknown>, fail: Fail): TokensConfig {
  if (entries.size > MAX_IDENTITIES) fail("tokens", `has ${entries.size} tokens; at most ${MAX_IDENTITIES}`);
  const tokens: TokensConfig = Object.create(null);
  for (const [name, hash] of entries) {
    const at = `tokens.${name}`;
    if (!isNodeId(name)) fail(at, "is not an identity name: 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit");
    if (name === SOCKET_IDENTITY) fail(at, `is the unix socket's identity; a token cannot stand for it`);
    if (typeof hash !== "string" || !TOKEN_HASH.test(hash)) {
      fail(at, 'must be the token\'s SHA-256, "sha256:" and 64 lowercase hex digits (weft token NAME makes a token and its line); never the token itself');
    }
    tokens[name] = hash;
  }
  return tokens;
}

/** The access rules of a configuration: its policy (if any) and tokens, for service certificates of `trustDomain`. */
export function accessControl(policy: PolicyConfig | undefined, tokens: TokensConfig, trustDomain: string | undefined): AccessControl {
  const hashes: TokenHash[] = Object.entries(tokens).map(([name, hash]) => ({ name, sha256: Buffer.from(hash.slice("sha256:".length), "hex") }));
  if (!policy) return new AccessControl(undefined, hashes, trustDomain);
  const grants = new Map<string, Grant>();
  const parse = <T>(text: string, read: (t: string) => T | string): T => {
    const p = read(text);
    if (typeof p === "string") throw new Error(`policy pattern ${text}: ${p}`); // checked by readPolicy already
    return p;
  };
  for (const [identity, g] of Object.entries(policy)) {
    grants.set(identity, {
      publish: (g.publish ?? []).map((t) => parse(t, NamePattern.parse)),
      subscribe: (g.subscribe ?? []).map((t) => parse(t, GroupPattern.parse)),
      settings: (g.settings ?? []).map((t) => parse(t, GroupPattern.parse)),
      admin: (g.admin ?? []).map((t) => parse(t, NamePattern.parse)),
    });
  }
  return new AccessControl(new Policy(grants), hashes, trustDomain);
}
