import { open } from "node:fs/promises";
import { isIPv6 } from "node:net";
import { dirname, resolve } from "node:path";
import { WeftError } from "../src/contract/errors.js";
import { NODE_ID_RULE, checkChannel, isNodeId } from "../src/contract/validate.js";
import type { Retention } from "../src/log/origin-log.js";
import { LOG_FORMATS, LOG_LEVELS, type LogFormat, type LogLevel } from "../src/ops/logger.js";
import { TlsFileError, readTlsFiles } from "../src/security/tls-files.js";
import { type PolicyConfig, type TokensConfig, readPolicy, readTokens } from "./access-config.js";
import { addressProblem, addressRule } from "./address.js";
import { type SidecarConfig, defaultConfig } from "./sidecar.js";
import { DURATION_RULE, SIZE_RULE, formatDuration, formatSize, parseDuration, parseSize } from "./units.js";

/** Config files larger than this are refused: a config file is a page of settings, not data. */
export const MAX_CONFIG_FILE_BYTES = 1024 * 1024;

/** Where a setting came from, lowest precedence first: defaults < file < env < flags. */
export type ConfigSource =
  | { kind: "default" }
  | { kind: "file"; path: string }
  | { kind: "env"; name: string }
  | { kind: "flag"; name: string };

/**
 * A setting, a config file or a combination of settings that cannot be used. The message
 * names where the value came from (file and key, environment variable, or flag), what is
 * wrong and what is allowed.
 */
export class ConfigError extends Error {
  constructor(
    /** Where the offending value came from. */
    readonly source: ConfigSource,
    /** The setting, as spelled in a config file ("retention.maxAge"); "" for the file itself. */
    readonly key: string,
    /** What is wrong and what is allowed, without the source. */
    readonly problem: string,
  ) {
    super(`${describeSource(source, key)}: ${problem}`);
    this.name = "ConfigError";
  }
}

/** The flags of `weft sidecar` that override configuration. Values are checked like the rest. */
export interface ConfigFlags {
  /** --data-dir */
  dataDir?: string;
  /** --listen */
  listen?: string;
  /** --fsync / --no-fsync */
  fsync?: boolean;
  /** --max-event-bytes: bytes, or a size such as "512KiB". */
  maxEventBytes?: string | number;
  /** --max-stored-bytes: bytes, or a size such as "50GiB"; 0 for no quota. */
  maxStoredBytes?: string | number;
  /** --max-channels: a whole number. */
  maxChannels?: string | number;
  /** --max-groups-per-channel: a whole number. */
  maxGroupsPerChannel?: string | number;
  /** --node-id */
  nodeId?: string;
  /** --peer-listen: host:port. */
  peerListen?: string;
  /** --http: host:port, or "off". */
  http?: string;
  /** --peers: comma-separated host:port, or a list of them. */
  peers?: string | readonly string[];
  /** --peers-dns: comma-separated name:port, or a list of them. */
  peersDns?: string | readonly string[];
  /** --peers-dns-interval: ms, or a duration such as "30s". */
  peersDnsInterval?: string | number;
  /** --peer-timeout: ms, or a duration such as "30s". */
  peerTimeout?: string | number;
  /** --peer-window: a whole number. */
  peerWindow?: string | number;
  /** --max-read-ahead-bytes: bytes, or a size such as "512MiB". */
  maxReadAheadBytes?: string | number;
  /** --max-peers: a whole number. */
  maxPeers?: string | number;
  /** --log-level: trace, debug, info, warn, error, fatal or silent. */
  logLevel?: string;
  /** --log-format: json or pretty. */
  logFormat?: string;
  /** --tls-cert: a PEM file. */
  tlsCert?: string;
  /** --tls-key: a PEM file. */
  tlsKey?: string;
  /** --tls-ca: a PEM file. */
  tlsCa?: string;
  /** --insecure */
  insecure?: boolean;
  /** --socket-mode: octal, e.g. "0600". */
  socketMode?: string;
  /** --http-hosts: comma-separated host names. */
  httpHosts?: string | readonly string[];
}

/** The inputs of {@link resolveConfig}. */
export interface ConfigInput {
  /** A YAML or JSON config file. Default: the WEFT_CONFIG environment variable, else none. */
  file?: string | undefined;
  /** The environment, usually `process.env`. Empty values count as unset. */
  env: Record<string, string | undefined>;
  /** Command-line flags; undefined entries count as unset. */
  flags?: ConfigFlags;
  /** Told about environment variables that look like misspelt settings. */
  warn?: (message: string) => void;
}

/** One setting as it is read from files, the environment and flags. */
interface Setting<T> {
  /** The environment variable that sets it. */
  env: string;
  /** The `weft sidecar` flag that sets it, if there is one. */
  flag?: keyof ConfigFlags;
  /** Checks a raw value; `text` is true for environment variables, whose values are strings. */
  read(value: unknown, text: boolean): T;
}

/** A value that cannot be used; the caller adds where it came from. */
class Problem extends Error {}

/** The settings, flat, keyed as they are spelled in a config file. */
interface Flat {
  dataDir: string;
  listen: string;
  fsync: boolean;
  maxEventBytes: number;
  maxBatchEvents: number;
  maxSubscriptions: number;
  maxMessageBytes: number;
  maxStreamsPerConnection: number;
  maxPartialMessageBytes: number;
  dedupWindow: number;
  "retention.maxAge": number;
  "retention.maxBytes": number;
  maxStoredBytes: number;
  maxChannels: number;
  maxGroupsPerChannel: number;
  sweepInterval: number;
  shutdownGrace: number;
  nodeId: string;
  peerListen: string;
  http: string;
  peers: string[];
  peersDns: string[];
  peersDnsInterval: number;
  peerTimeout: number;
  peerWindow: number;
  maxPeers: number;
  maxReadAheadBytes: number;
  logLevel: LogLevel;
  logFormat: LogFormat;
  "tls.cert": string;
  "tls.key": string;
  "tls.ca": string;
  insecure: boolean;
  socketMode: number;
  httpHosts: string[];
}
type FlatKey = keyof Flat;
type Found = { [K in FlatKey]?: { value: Flat[K]; source: ConfigSource } };

const SECOND = 1000;
const HOUR = 3_600_000;
const DAY = 86_400_000;
const KiB = 1024;
const MiB = 1024 ** 2;
const GiB = 1024 ** 3;

const RETENTION_AGE = duration(SECOND, 3650 * DAY);
const RETENTION_BYTES = size(KiB, 1024 ** 5);

/** Most entries in `peers` or `peersDns`; a larger mesh is found through DNS, not listed. */
export const MAX_PEER_ENTRIES = 1000;

const PEER_LISTEN_RULE = 'host:port (TCP; port 0-65535, 0 picks a free port; an IPv6 host in brackets, e.g. "[::1]:7421")';
const HTTP_RULE = 'host:port (TCP; port 0-65535, 0 picks a free port; an IPv6 host in brackets, e.g. "[::1]:7422"), or "off" for no HTTP listener';
const PEER_RULE = 'host:port (TCP; port 1-65535; an IPv6 host in brackets, e.g. "10.0.0.7:7421" or "[fd00::7]:7421")';
const PEER_DNS_RULE = 'name:port (a DNS name, or an IP address; port 1-65535; e.g. "weft-peers.mesh.svc:7421")';

const SETTINGS: { [K in FlatKey]: Setting<Flat[K]> } = {
  dataDir: { env: "WEFT_DATA_DIR", flag: "dataDir", read: path },
  listen: { env: "WEFT_LISTEN", flag: "listen", read: listenAddress },
  fsync: { env: "WEFT_FSYNC", flag: "fsync", read: boolean },
  maxEventBytes: { env: "WEFT_MAX_EVENT_BYTES", flag: "maxEventBytes", read: size(KiB, 256 * MiB) },
  maxBatchEvents: { env: "WEFT_MAX_BATCH_EVENTS", read: integer(1, 100_000) },
  maxSubscriptions: { env: "WEFT_MAX_SUBSCRIPTIONS", read: integer(1, 1_000_000) },
  maxMessageBytes: { env: "WEFT_MAX_MESSAGE_BYTES", read: size(4 * KiB, GiB) },
  maxStreamsPerConnection: { env: "WEFT_MAX_STREAMS_PER_CONNECTION", read: integer(1, 100_000) },
  maxPartialMessageBytes: { env: "WEFT_MAX_PARTIAL_MESSAGE_BYTES", read: size(64 * KiB, 64 * GiB) },
  dedupWindow: { env: "WEFT_DEDUP_WINDOW", read: duration(SECOND, 30 * DAY) },
  "retention.maxAge": { env: "WEFT_RETENTION_MAX_AGE", read: RETENTION_AGE },
  "retention.maxBytes": { env: "WEFT_RETENTION_MAX_BYTES", read: RETENTION_BYTES },
  maxStoredBytes: { env: "WEFT_MAX_STORED_BYTES", flag: "maxStoredBytes", read: size(0, 1024 ** 5) },
  maxChannels: { env: "WEFT_MAX_CHANNELS", flag: "maxChannels", read: integer(1, 10_000_000) },
  maxGroupsPerChannel: { env: "WEFT_MAX_GROUPS_PER_CHANNEL", flag: "maxGroupsPerChannel", read: integer(1, 1_000_000) },
  sweepInterval: { env: "WEFT_SWEEP_INTERVAL", read: duration(100, DAY) },
  shutdownGrace: { env: "WEFT_SHUTDOWN_GRACE", read: duration(0, HOUR) },
  nodeId: { env: "WEFT_NODE_ID", flag: "nodeId", read: nodeId },
  peerListen: { env: "WEFT_PEER_LISTEN", flag: "peerListen", read: peerListenAddress },
  http: { env: "WEFT_HTTP", flag: "http", read: httpAddress },
  peers: { env: "WEFT_PEERS", flag: "peers", read: addressList("peer address", PEER_RULE) },
  peersDns: { env: "WEFT_PEERS_DNS", flag: "peersDns", read: addressList("DNS name and port", PEER_DNS_RULE) },
  peersDnsInterval: { env: "WEFT_PEERS_DNS_INTERVAL", flag: "peersDnsInterval", read: duration(SECOND, HOUR) },
  peerTimeout: { env: "WEFT_PEER_TIMEOUT", flag: "peerTimeout", read: duration(100, HOUR) },
  peerWindow: { env: "WEFT_PEER_WINDOW", flag: "peerWindow", read: integer(1, 10_000) },
  maxPeers: { env: "WEFT_MAX_PEERS", flag: "maxPeers", read: integer(1, 100_000) },
  maxReadAheadBytes: { env: "WEFT_MAX_READ_AHEAD_BYTES", flag: "maxReadAheadBytes", read: size(MiB, 1024 ** 4) },
  logLevel: { env: "WEFT_LOG_LEVEL", flag: "logLevel", read: oneOf("log level", LOG_LEVELS) },
  logFormat: { env: "WEFT_LOG_FORMAT", flag: "logFormat", read: oneOf("log format", LOG_FORMATS) },
  "tls.cert": { env: "WEFT_TLS_CERT", flag: "tlsCert", read: filePath("this sidecar's certificate (PEM)") },
  "tls.key": { env: "WEFT_TLS_KEY", flag: "tlsKey", read: filePath("the certificate's private key (PEM)") },
  "tls.ca": { env: "WEFT_TLS_CA", flag: "tlsCa", read: filePath("the CA certificates (PEM)") },
  insecure: { env: "WEFT_INSECURE", flag: "insecure", read: boolean },
  socketMode: { env: "WEFT_SOCKET_MODE", flag: "socketMode", read: fileMode },
  httpHosts: { env: "WEFT_HTTP_HOSTS", flag: "httpHosts", read: hostList },
};
const FLAT_KEYS = Object.keys(SETTINGS) as FlatKey[];

/** The environment variable naming a config file when no file is given. */
export const CONFIG_ENV = "WEFT_CONFIG";
/** Every environment variable {@link resolveConfig} reads. */
export const CONFIG_ENV_VARS: readonly string[] = [CONFIG_ENV, ...FLAT_KEYS.map((k) => SETTINGS[k].env)];
/**
 * Each setting's config-file key ("retention.maxAge" for a key in a section), environment
 * variable and `weft sidecar` flag as a ConfigFlags key: what the CLI's options and
 * docs/configuration.md must agree with (test/settings-names.unit.test.ts).
 */
export const SETTING_NAMES: readonly { key: string; env: string; flag: keyof ConfigFlags | undefined }[] = FLAT_KEYS.map((k) => ({
  key: k,
  env: SETTINGS[k].env,
  flag: SETTINGS[k].flag,
}));
/** WEFT_ variables that are not sidecar settings but are not misspellings either. */
const OTHER_ENV_VARS = ["WEFT_ADDRESS", "WEFT_CLIENT_TLS_CA", "WEFT_CLIENT_TLS_CERT", "WEFT_CLIENT_TLS_KEY", "WEFT_TOKEN"];

/** Settings grouped under a key in a config file ("retention: { maxAge: 7d }"), and the keys in each. */
const SECTIONS = new Map<string, { keys: string[]; shape: string }>([
  ["retention", { keys: ["maxAge", "maxBytes"], shape: "a mapping with maxAge and/or maxBytes" }],
  ["tls", { keys: ["cert", "key", "ca"], shape: "a mapping with cert, key and ca (paths of PEM files)" }],
]);
const TOP_KEYS = [...FLAT_KEYS.filter((k) => !k.includes(".")), ...SECTIONS.keys(), "channels", "policy", "tokens"];
const RETENTION_KEYS = SECTIONS.get("retention")!.keys;
const MAX_CHANNELS = 10_000;

/**
 * Resolves the sidecar configuration from, lowest precedence first: `defaultConfig()`, a
 * YAML or JSON config file, environment variables, then flags. Pure apart from reading the
 * file. Relative paths in a config file are relative to the file's directory; relative
 * paths elsewhere are relative to the working directory.
 *
 * @throws ConfigError naming the first unusable value and its source.
 */
export async function resolveConfig(input: ConfigInput): Promise<SidecarConfig> {
  const found: Found = {};
  let channels: Record<string, Partial<Retention>> = {};
  let access: FileAccess = { tokens: {} };

  const file = input.file ?? nonEmpty(input.env[CONFIG_ENV]);
  if (file !== undefined) {
    const source: ConfigSource = { kind: "file", path: file };
    const fromFile = readSettings(await readConfigFile(file), source);
    Object.assign(found, fromFile.found);
    channels = fromFile.channels;
    access = fromFile.access;
    for (const key of ["dataDir", "tls.cert", "tls.key", "tls.ca"] as const) {
      const entry = found[key];
      if (entry) entry.value = resolve(dirname(file), entry.value);
    }
  }

  for (const key of FLAT_KEYS) {
    const name = SETTINGS[key].env;
    const raw = nonEmpty(input.env[name]);
    if (raw !== undefined) set(found, key, raw, { kind: "env", name }, true);
  }
  warnAboutEnv(input.env, input.warn);

  for (const key of FLAT_KEYS) {
    const flag = SETTINGS[key].flag;
    if (flag === undefined || input.flags?.[flag] === undefined) continue;
    const raw = input.flags[flag];
    set(found, key, raw, { kind: "flag", name: `--${kebab(flag)}` }, typeof raw === "string");
  }

  const config = { ...build(found, channels), policy: access.policy, tokens: access.tokens };
  if (config.tls) config.nodeId = await certifiedNodeId(found, config);
  return config;
}

/** Who may call, from the config file only (a policy is structured data, not one value). */
interface FileAccess {
  policy?: PolicyConfig;
  tokens: TokensConfig;
}

/**
 * Reads the TLS files and returns the node id their certificate names: the sidecar's node
 * id when none was set, and one that was set must be the same.
 * @throws ConfigError naming the file that cannot be used, or the node id that disagrees.
 */
async function certifiedNodeId(found: Found, config: SidecarConfig): Promise<string> {
  let identity;
  try {
    identity = (await readTlsFiles(config.tls!)).identity;
  } catch (e) {
    if (!(e instanceof TlsFileError)) throw e;
    throw new ConfigError(found[e.file]!.source, e.file, `${describe(e.path)} ${e.problem}`);
  }
  const set = found.nodeId;
  if (set && set.value !== identity.name) {
    throw new ConfigError(
      set.source,
      "nodeId",
      `${describe(set.value)} is not the node tls.cert names (${identity.uri}): with TLS the node id is the certificate's; leave nodeId unset or make them agree`,
    );
  }
  return identity.name;
}

/**
 * Reads and parses a config file: a regular file of at most {@link MAX_CONFIG_FILE_BYTES},
 * UTF-8, one YAML document (JSON is YAML). Returns the document with mappings as `Map`s.
 * @throws ConfigError naming the file and what is wrong with it.
 */
async function readConfigFile(path: string): Promise<unknown> {
  const source: ConfigSource = { kind: "file", path };
  const fail = (problem: string): never => {
    throw new ConfigError(source, "", problem);
  };
  let bytes: Buffer;
  let handle;
  try {
    handle = await open(path, "r");
  } catch (e) {
    return fail(fileProblem(e));
  }
  try {
    const stat = await handle.stat();
    if (stat.isDirectory()) fail("is a directory; pass a YAML or JSON file");
    if (!stat.isFile()) fail("is not a regular file; pass a YAML or JSON file");
    if (stat.size > MAX_CONFIG_FILE_BYTES) {
      fail(`is ${stat.size} bytes; a config file may be at most ${formatSize(MAX_CONFIG_FILE_BYTES)}`);
    }
    // Read at most one byte past the limit, in case the file grew since stat.
    const buffer = Buffer.alloc(MAX_CONFIG_FILE_BYTES + 1);
    let length = 0;
    for (;;) {
      const { bytesRead } = await handle.read(buffer, length, buffer.length - length, length);
      if (bytesRead === 0) break;
      length += bytesRead;
      if (length > MAX_CONFIG_FILE_BYTES) fail(`is larger than ${formatSize(MAX_CONFIG_FILE_BYTES)}, the most a config file may be`);
    }
    bytes = buffer.subarray(0, length);
  } catch (e) {
    if (e instanceof ConfigError) throw e;
    return fail(fileProblem(e));
  } finally {
    await handle.close();
  }

  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    return fail("is not UTF-8 text; a config file is YAML or JSON");
  }
  // Loaded only here: the yaml package is slow to load, and most sidecars start without a file.
  const { parseDocument } = await import("yaml");
  const doc = parseDocument(text, { schema: "core", uniqueKeys: true, prettyErrors: true, strict: true });
  const error = doc.errors[0] ?? doc.warnings[0];
  if (error) return fail(`is not valid YAML or JSON: ${error.message.split("\n")[0]!.replace(/:$/, "")}`);
  try {
    return doc.toJS({ mapAsMap: true, maxAliasCount: 100 });
  } catch (e) {
    return fail(`is not usable YAML: ${(e as Error).message}`);
  }
}

// ---- reading the file's settings ----

function readSettings(doc: unknown, source: ConfigSource): { found: Found; channels: Record<string, Partial<Retention>>; access: FileAccess } {
  const found: Found = {};
  const channels: Record<string, Partial<Retention>> = Object.create(null);
  const access: FileAccess = { tokens: {} };
  if (doc === null || doc === undefined) return { found, channels, access }; // an empty file: all defaults
  const fail = (key: string, problem: string): never => {
    throw new ConfigError(source, key, problem);
  };
  const top = mapping(doc, source, "", "a mapping of settings (e.g. `listen: 127.0.0.1:7420`)");
  for (const [key, value] of top) {
    const section = SECTIONS.get(key);
    if (section) {
      for (const [sub, v] of mapping(value, source, key, section.shape)) {
        const flat = `${key}.${sub}`;
        if (!section.keys.includes(sub)) unknownKey(source, flat, sub, section.keys, key);
        set(found, flat as FlatKey, v, source, false);
      }
    } else if (key === "channels") {
      const entries = mapping(value, source, key, 'a mapping of channel name to retention (e.g. `"orders.created": { maxAge: 1d }`)');
      if (entries.size > MAX_CHANNELS) {
        throw new ConfigError(source, key, `has ${entries.size} channels; at most ${MAX_CHANNELS} may have their own retention`);
      }
      for (const [name, v] of entries) channels[name] = readChannel(name, v, source);
    } else if (key === "policy") {
      access.policy = readPolicy(mapping(value, source, key, "a mapping of identity to permissions (e.g. `billing: { publish: [billing.>] }`)"), fail);
    } else if (key === "tokens") {
      access.tokens = readTokens(mapping(value, source, key, 'a mapping of identity to the token\'s SHA-256 (e.g. `billing: "sha256:…"`)'), fail);
    } else if (TOP_KEYS.includes(key)) {
      set(found, key as FlatKey, value, source, false);
    } else {
      unknownKey(source, key, key, TOP_KEYS, "");
    }
  }
  return { found, channels, access };
}

function readChannel(name: string, value: unknown, source: ConfigSource): Partial<Retention> {
  const key = `channels.${name}`;
  try {
    checkChannel(name, "channel name");
  } catch (e) {
    if (!(e instanceof WeftError)) throw e;
    throw new ConfigError(source, key, e.message.slice(e.reason.length + 2));
  }
  const entry = mapping(value, source, key, "a mapping with maxAge and/or maxBytes (e.g. `{ maxAge: 1d }`)");
  if (entry.size === 0) throw new ConfigError(source, key, "is empty; set maxAge and/or maxBytes, or remove the channel");
  const retention: Partial<Retention> = {};
  for (const [sub, v] of entry) {
    const at = `${key}.${sub}`;
    if (sub === "maxAge") retention.maxAgeMs = readValue(RETENTION_AGE, v, source, at, false);
    else if (sub === "maxBytes") retention.maxBytes = readValue(RETENTION_BYTES, v, source, at, false);
    else unknownKey(source, at, sub, RETENTION_KEYS, key);
  }
  return retention;
}

/** Checks that `value` is a mapping with string keys; `what` says what kind of mapping. */
function mapping(value: unknown, source: ConfigSource, key: string, what: string): Map<string, unknown> {
  if (!(value instanceof Map)) throw new ConfigError(source, key, `must be ${what}, not ${kindOf(value)}`);
  for (const k of value.keys()) {
    if (typeof k !== "string") {
      throw new ConfigError(source, key, `has the key ${describe(k)}, which is ${kindOf(k)}; keys must be text`);
    }
  }
  return value as Map<string, unknown>;
}

function unknownKey(source: ConfigSource, at: string, key: string, known: string[], parent: string): never {
  const guess = suggest(key, known);
  const where = parent ? ` in ${parent}` : "";
  const hint = guess ? `did you mean "${guess}"? ` : "";
  throw new ConfigError(source, at, `is not a setting${where}; ${hint}the settings are ${known.join(", ")}`);
}

// ---- merging and the final check ----

function set<K extends FlatKey>(found: Found, key: K, raw: unknown, source: ConfigSource, text: boolean): void {
  const value = readValue((SETTINGS[key] as Setting<Flat[K]>).read, raw, source, key, text);
  (found as Record<string, { value: unknown; source: ConfigSource }>)[key] = { value, source };
}

function readValue<T>(read: Setting<T>["read"], raw: unknown, source: ConfigSource, key: string, text: boolean): T {
  try {
    return read(raw, text);
  } catch (e) {
    if (e instanceof Problem) throw new ConfigError(source, key, e.message);
    throw e;
  }
}

function build(found: Found, fileChannels: Record<string, Partial<Retention>>): SidecarConfig {
  const d = defaultConfig();
  const pick = <K extends FlatKey>(key: K, fallback: Flat[K]): Flat[K] => found[key]?.value ?? fallback;
  const retention: Retention = {
    maxAgeMs: pick("retention.maxAge", d.retention.maxAgeMs),
    maxBytes: pick("retention.maxBytes", d.retention.maxBytes),
  };
  // No prototype: a channel named "constructor" must not find Object's.
  const channels: Record<string, Retention> = Object.create(null);
  for (const [name, r] of Object.entries(fileChannels)) channels[name] = { ...retention, ...r };
  const config: SidecarConfig = {
    dataDir: pick("dataDir", d.dataDir),
    listen: pick("listen", d.listen),
    fsync: pick("fsync", d.fsync),
    maxEventBytes: pick("maxEventBytes", d.maxEventBytes),
    maxBatchEvents: pick("maxBatchEvents", d.maxBatchEvents),
    maxSubscriptions: pick("maxSubscriptions", d.maxSubscriptions),
    maxMessageBytes: pick("maxMessageBytes", d.maxMessageBytes),
    maxStreamsPerConnection: pick("maxStreamsPerConnection", d.maxStreamsPerConnection),
    maxPartialMessageBytes: pick("maxPartialMessageBytes", d.maxPartialMessageBytes),
    dedupWindowMs: pick("dedupWindow", d.dedupWindowMs),
    retention,
    channels,
    maxStoredBytes: pick("maxStoredBytes", d.maxStoredBytes),
    maxChannels: pick("maxChannels", d.maxChannels),
    maxGroupsPerChannel: pick("maxGroupsPerChannel", d.maxGroupsPerChannel),
    sweepIntervalMs: pick("sweepInterval", d.sweepIntervalMs),
    shutdownGraceMs: pick("shutdownGrace", d.shutdownGraceMs),
    nodeId: pick("nodeId", d.nodeId),
    peerListen: pick("peerListen", d.peerListen),
    http: pick("http", d.http),
    peers: pick("peers", d.peers),
    peersDns: pick("peersDns", d.peersDns),
    peersDnsIntervalMs: pick("peersDnsInterval", d.peersDnsIntervalMs),
    peerTimeoutMs: pick("peerTimeout", d.peerTimeoutMs),
    peerWindow: pick("peerWindow", d.peerWindow),
    maxPeers: pick("maxPeers", d.maxPeers),
    maxReadAheadBytes: pick("maxReadAheadBytes", d.maxReadAheadBytes),
    logLevel: pick("logLevel", d.logLevel),
    logFormat: pick("logFormat", d.logFormat),
    tls: tlsPaths(found),
    insecure: pick("insecure", d.insecure),
    socketMode: pick("socketMode", d.socketMode),
    httpHosts: pick("httpHosts", d.httpHosts),
    tokens: {},
  };
  checkPeerListen(found, config);
  checkHttp(found, config, "listen");
  checkHttp(found, config, "peerListen");
  if (config.maxEventBytes > config.maxMessageBytes) {
    // Blame the setting that was set; when both were, the event limit.
    const event = found.maxEventBytes;
    const message = found.maxMessageBytes;
    const fix = "an event must fit in one gRPC message: raise maxMessageBytes or lower maxEventBytes";
    if (event || !message) {
      const from = message ? describeSource(message.source, "maxMessageBytes") : "the default";
      throw new ConfigError(
        event?.source ?? { kind: "default" },
        "maxEventBytes",
        `${formatSize(config.maxEventBytes)} is larger than maxMessageBytes (${formatSize(config.maxMessageBytes)}, from ${from}); ${fix}`,
      );
    }
    throw new ConfigError(
      message.source,
      "maxMessageBytes",
      `${formatSize(config.maxMessageBytes)} is smaller than maxEventBytes (${formatSize(config.maxEventBytes)}, from the default); ${fix}`,
    );
  }
  // The budget counts each message's 5-byte gRPC prefix too.
  if (config.maxPartialMessageBytes < config.maxMessageBytes + 5) {
    // Blame the setting that was set; when both were, the budget.
    const budget = found.maxPartialMessageBytes;
    const message = found.maxMessageBytes;
    const fix = "one message of the largest size must fit in the budget: raise maxPartialMessageBytes or lower maxMessageBytes";
    if (budget || !message) {
      const from = message ? describeSource(message.source, "maxMessageBytes") : "the default";
      throw new ConfigError(
        budget?.source ?? { kind: "default" },
        "maxPartialMessageBytes",
        `${formatSize(config.maxPartialMessageBytes)} is smaller than maxMessageBytes (${formatSize(config.maxMessageBytes)}, from ${from}) plus a message's 5-byte prefix; ${fix}`,
      );
    }
    throw new ConfigError(
      message.source,
      "maxMessageBytes",
      `${formatSize(config.maxMessageBytes)} is larger than maxPartialMessageBytes (${formatSize(config.maxPartialMessageBytes)}, from the default); ${fix}`,
    );
  }
  if (config.peerTimeoutMs >= config.dedupWindowMs) {
    // A forward retried after the dedup window would be stored twice at the receiver.
    const fix = "a peer must time out within the dedup window, which keeps relay copies from being stored twice: lower peerTimeout or raise dedupWindow";
    const timeout = found.peerTimeout;
    const window = found.dedupWindow;
    if (timeout || !window) {
      throw new ConfigError(
        timeout?.source ?? { kind: "default" },
        "peerTimeout",
        `${formatDuration(config.peerTimeoutMs)} is not shorter than dedupWindow (${formatDuration(config.dedupWindowMs)}); ${fix}`,
      );
    }
    throw new ConfigError(
      window.source,
      "dedupWindow",
      `${formatDuration(config.dedupWindowMs)} is not longer than peerTimeout (${formatDuration(config.peerTimeoutMs)}); ${fix}`,
    );
  }
  return config;
}

/** Refuses a peer listener on the service listener's address: the two APIs need their own sockets. */
function checkPeerListen(found: Found, config: SidecarConfig): void {
  if (!sameListener(config.listen, config.peerListen)) return;
  const clash = config.listen === config.peerListen ? "is the same address as" : "binds the same port, on an overlapping host, as";
  const fix = "the service API and the peer API each need their own port (port 0 picks a free one)";
  // Blame the setting that was set; when both were, the peer listener.
  const peer = found.peerListen;
  const listen = found.listen;
  if (peer || !listen) {
    const from = listen ? describeSource(listen.source, "listen") : "the default";
    throw new ConfigError(
      peer?.source ?? { kind: "default" },
      "peerListen",
      `${describe(config.peerListen)} ${clash} listen (${config.listen}, from ${from}); ${fix}: give peerListen another port`,
    );
  }
  throw new ConfigError(
    listen.source,
    "listen",
    `${describe(config.listen)} ${clash} peerListen (${config.peerListen}, from the default); ${fix}: give listen another port, or set peerListen`,
  );
}

/** Refuses an HTTP listener on the service or peer listener's address. */
function checkHttp(found: Found, config: SidecarConfig, other: "listen" | "peerListen"): void {
  if (config.http === "off" || !sameListener(config.http, config[other])) return;
  const clash = config.http === config[other] ? "is the same address as" : "binds the same port, on an overlapping host, as";
  const fix = "the HTTP listener needs its own port (port 0 picks a free one)";
  // Blame the setting that was set; when both were, the HTTP listener.
  const http = found.http;
  const set = found[other];
  if (http || !set) {
    const from = set ? describeSource(set.source, other) : "the default";
    throw new ConfigError(http?.source ?? { kind: "default" }, "http", `${describe(config.http)} ${clash} ${other} (${config[other]}, from ${from}); ${fix}: give http another port`);
  }
  throw new ConfigError(set.source, other, `${describe(config[other])} ${clash} http (${config.http}, from the default); ${fix}: give ${other} another port, or set http`);
}

/**
 * True when two listen addresses would bind one TCP port: the same port (not 0, which picks a
 * free one each time) on the same host, on a wildcard host, or on "localhost" and a loopback
 * address. Host names are not resolved; a clash they hide is reported when the sidecar starts.
 */
function sameListener(a: string, b: string): boolean {
  const x = splitHostPort(a);
  const y = splitHostPort(b);
  if (!x || !y || x.port !== y.port || x.port === 0) return false;
  const wildcard = (h: string): boolean => h === "0.0.0.0" || h === "::";
  const loopback = (h: string): boolean => h === "localhost" || h === "::1" || h.startsWith("127.");
  if (x.host === y.host || wildcard(x.host) || wildcard(y.host)) return true;
  return (x.host === "localhost" || y.host === "localhost") && loopback(x.host) && loopback(y.host);
}

/** A TCP address's host (lowercase, without brackets or a trailing dot, IPv6 canonical) and port. */
function splitHostPort(address: string): { host: string; port: number } | undefined {
  if (address.startsWith("/") || address.startsWith("unix:")) return undefined;
  const colon = address.lastIndexOf(":");
  if (colon < 0) return undefined;
  let host = address.slice(0, colon).toLowerCase().replace(/\.$/, "");
  if (host.startsWith("[") && host.endsWith("]")) {
    host = host.slice(1, -1);
    if (isIPv6(host)) host = new URL(`http://[${host}]/`).hostname.slice(1, -1);
  }
  return { host, port: Number(address.slice(colon + 1)) };
}

/** The TLS files, when all three are set; none is plaintext; some is an error naming what is missing. */
function tlsPaths(found: Found): SidecarConfig["tls"] {
  const keys = ["tls.cert", "tls.key", "tls.ca"] as const;
  const set = keys.filter((k) => found[k]);
  if (set.length === 0) return undefined;
  if (set.length < keys.length) {
    const missing = keys.filter((k) => !found[k]);
    const given = found[set[0]!]!;
    throw new ConfigError(
      given.source,
      set[0]!,
      `is set but ${missing.join(" and ")} ${missing.length > 1 ? "are" : "is"} not: TLS needs all three (this sidecar's certificate, its key, and the CA that signs the mesh's certificates)`,
    );
  }
  return { cert: found["tls.cert"]!.value, key: found["tls.key"]!.value, ca: found["tls.ca"]!.value };
}

// ---- value readers ----

function path(value: unknown): string {
  if (typeof value !== "string") throw new Problem(`must be a directory path, not ${kindOf(value)}`);
  if (value.length === 0) throw new Problem("is empty; use a directory path");
  if (value.includes("\0")) throw new Problem("contains a NUL character; use a directory path");
  if (Buffer.byteLength(value) > 4096) throw new Problem("is longer than 4096 bytes; use a shorter directory path");
  return value;
}

/** A reader of a path of a file; `what` says what the file holds. */
function filePath(what: string): Setting<string>["read"] {
  return (value) => {
    if (typeof value !== "string") throw new Problem(`must be the path of ${what}, not ${kindOf(value)}`);
    if (value.length === 0) throw new Problem(`is empty; use the path of ${what}`);
    if (value.includes("\0")) throw new Problem(`contains a NUL character; use the path of ${what}`);
    if (Buffer.byteLength(value) > 4096) throw new Problem(`is longer than 4096 bytes; use a shorter path`);
    return value;
  };
}

/** A unix socket's file mode: octal digits ("0600", "660"; a YAML number 600 reads as 0600), with owner read and write. */
function fileMode(value: unknown): number {
  const text = typeof value === "number" && Number.isInteger(value) ? String(value) : value;
  if (typeof text !== "string" || !/^0?[0-7]{3}$/.test(text.trim())) throw new Problem(`${describe(value)} is not a file mode; use octal digits such as 0600 or 0660`);
  const mode = Number.parseInt(text.trim(), 8);
  if ((mode & 0o600) !== 0o600) throw new Problem(`${describe(value)} does not let the sidecar's own user read and write the socket; use 0600 to 0777`);
  return mode;
}

/** Host names the HTTP listener answers the dashboard for: a list, or one comma-separated text. */
function hostList(value: unknown): string[] {
  const entries = typeof value === "string" ? (value.trim() === "" ? [] : value.split(",", MAX_PEER_ENTRIES + 1)) : value;
  if (!Array.isArray(entries)) throw new Problem(`must be a list of host names, or one text of them separated by commas, not ${kindOf(value)}`);
  if (entries.length > MAX_PEER_ENTRIES) throw new Problem(`has more than ${MAX_PEER_ENTRIES} entries`);
  return entries.map((raw: unknown, i) => {
    const host = typeof raw === "string" ? raw.trim().toLowerCase().replace(/^\[(.*)\]$/, "$1") : "";
    if (host === "" || addressProblem(`${host.includes(":") && !host.startsWith("[") ? `[${host}]` : host}:1`, true) !== undefined) {
      throw new Problem(`entry ${i + 1}, ${describe(raw)}, is not a host name or an IP address (without a port)`);
    }
    return host;
  });
}

function listenAddress(value: unknown): string {
  if (typeof value !== "string") throw new Problem(`must be text, not ${kindOf(value)}; use ${addressRule(false)}`);
  const problem = addressProblem(value);
  if (problem) throw new Problem(`${describe(value)} is not an address to listen on (${problem}); use ${addressRule(false)}`);
  return value;
}

function nodeId(value: unknown): string {
  if (typeof value !== "string") {
    const hint = typeof value === "number" ? ` (quote a number in YAML: nodeId: "${value}")` : "";
    throw new Problem(`must be text, not ${kindOf(value)}${hint}; use ${NODE_ID_RULE}`);
  }
  if (!isNodeId(value)) throw new Problem(`${describe(value)} is not a node id; use ${NODE_ID_RULE}`);
  return value;
}

function peerListenAddress(value: unknown): string {
  if (typeof value !== "string") throw new Problem(`must be text, not ${kindOf(value)}; use ${PEER_LISTEN_RULE}`);
  const problem = tcpAddressProblem(value, false);
  if (problem) throw new Problem(`${describe(value)} is not an address for the peer API (${problem}); use ${PEER_LISTEN_RULE}`);
  return value;
}

function httpAddress(value: unknown): string {
  if (typeof value !== "string") throw new Problem(`must be text, not ${kindOf(value)}; use ${HTTP_RULE}`);
  if (value.trim().toLowerCase() === "off") return "off";
  const problem = tcpAddressProblem(value, false, "the HTTP listener is TCP only");
  if (problem) throw new Problem(`${describe(value)} is not an address for HTTP (${problem}); use ${HTTP_RULE}`);
  return value;
}

/**
 * Returns a reader of a list of TCP addresses to connect to: a list of text, or one text of
 * comma-separated entries. Entries are trimmed; empty ones are refused; duplicates (ignoring
 * case) are dropped, keeping the first. An empty text is an empty list.
 */
function addressList(noun: string, rule: string): Setting<string[]>["read"] {
  const shape = `a list of ${rule}, or one text of them separated by commas`;
  return (value) => {
    let entries: unknown[];
    if (typeof value === "string") {
      // Split no further than one past the limit: a hostile value costs no more than a full list.
      entries = value.trim() === "" ? [] : value.split(",", MAX_PEER_ENTRIES + 1);
      if (entries.length > MAX_PEER_ENTRIES) {
        throw new Problem(`has more than ${MAX_PEER_ENTRIES} entries; at most ${MAX_PEER_ENTRIES} may be listed (use peersDns for a larger mesh)`);
      }
    } else if (Array.isArray(value)) {
      entries = value;
      if (entries.length > MAX_PEER_ENTRIES) {
        throw new Problem(`has ${entries.length} entries; at most ${MAX_PEER_ENTRIES} may be listed (use peersDns for a larger mesh)`);
      }
    } else {
      throw new Problem(`must be ${shape}, not ${kindOf(value)}`);
    }
    const seen = new Set<string>();
    const addresses: string[] = [];
    entries.forEach((raw, i) => {
      const at = `entry ${i + 1}`;
      const empty = typeof value === "string" ? `${at} is empty (a doubled or trailing comma?); each entry is ${rule}` : `${at} is empty; each entry is ${rule}`;
      if (raw === null || raw === undefined) throw new Problem(empty);
      if (typeof raw !== "string") throw new Problem(`${at} is ${kindOf(raw)} (${describe(raw)}), not text; each entry is ${rule}`);
      const entry = raw.trim();
      if (entry === "") throw new Problem(empty);
      if (typeof value !== "string" && entry.includes(",")) {
        throw new Problem(`${at}, ${describe(entry)}, contains a comma; in a list, give one ${noun} per entry`);
      }
      const problem = tcpAddressProblem(entry, true);
      if (problem) throw new Problem(`${at}, ${describe(entry)}, is not a ${noun} (${problem}); use ${rule}`);
      const key = entry.toLowerCase();
      if (!seen.has(key)) {
        seen.add(key);
        addresses.push(entry);
      }
    });
    return addresses;
  };
}

/** Checks a TCP host:port, as {@link addressProblem} does, but refusing unix sockets. */
function tcpAddressProblem(address: string, forConnect: boolean, why = "peers connect over TCP only"): string | undefined {
  if (address.startsWith("unix:") || address.startsWith("/")) return `a unix socket cannot be used: ${why}`;
  const colon = address.lastIndexOf(":");
  if (colon >= 0) {
    const port = address.slice(colon + 1);
    const min = forConnect ? 1 : 0;
    if (!/^\d{1,5}$/.test(port) || Number(port) < min || Number(port) > 65535) {
      return `port ${describe(port)} is not a number from ${min} to 65535`;
    }
  }
  return addressProblem(address, forConnect);
}

const TRUE = ["true", "1", "yes", "on"];
const FALSE = ["false", "0", "no", "off"];

function boolean(value: unknown, text: boolean): boolean {
  if (typeof value === "boolean") return value;
  if (text && typeof value === "string") {
    const v = value.trim().toLowerCase();
    if (TRUE.includes(v)) return true;
    if (FALSE.includes(v)) return false;
    throw new Problem(`${describe(value)} is not a boolean; use one of ${[...TRUE, ...FALSE].join(", ")}`);
  }
  const hint = typeof value === "string" ? " (YAML reads yes, no, on and off as text)" : "";
  throw new Problem(`${describe(value)} is not a boolean${hint}; use true or false`);
}

function integer(min: number, max: number): Setting<number>["read"] {
  return (value, text) => {
    let n: number | undefined;
    if (typeof value === "number") n = value;
    else if (text && typeof value === "string" && /^\s*\d+\s*$/.test(value)) n = Number(value);
    if (n === undefined || !Number.isSafeInteger(n)) {
      throw new Problem(`${describe(value)} is not a whole number; use ${min} to ${max}`);
    }
    if (n < min || n > max) throw new Problem(`${n} is out of range; use ${min} to ${max}`);
    return n;
  };
}

function duration(min: number, max: number): Setting<number>["read"] {
  const range = `${formatDuration(min)} to ${formatDuration(max)}`;
  return (value) => {
    if (isNegative(value)) throw new Problem(`${describe(value)} is negative; use a duration from ${range}`);
    const ms = parseDuration(value);
    if (ms === undefined) throw new Problem(`${describe(value)} is not a duration; use ${DURATION_RULE}`);
    if (ms < min) throw new Problem(`${describe(value)} is too short; use ${range}`);
    if (ms > max) throw new Problem(`${describe(value)} is too long; use ${range}`);
    return ms;
  };
}

function size(min: number, max: number): Setting<number>["read"] {
  const range = `${formatSize(min)} to ${formatSize(max)}`;
  return (value) => {
    if (isNegative(value)) throw new Problem(`${describe(value)} is negative; use a size from ${range}`);
    const bytes = parseSize(value);
    if (bytes === undefined) throw new Problem(`${describe(value)} is not a size; use ${SIZE_RULE}`);
    if (bytes < min) throw new Problem(`${describe(value)} is too small; use ${range}`);
    if (bytes > max) throw new Problem(`${describe(value)} is too large; use ${range}`);
    return bytes;
  };
}

/** A reader of one of `choices`, as text; case and surrounding spaces are ignored. */
function oneOf<T extends string>(noun: string, choices: readonly T[]): Setting<T>["read"] {
  return (value) => {
    const v = typeof value === "string" ? value.trim().toLowerCase() : undefined;
    const choice = choices.find((c) => c === v);
    if (choice === undefined) throw new Problem(`${describe(value)} is not a ${noun}; use one of ${choices.join(", ")}`);
    return choice;
  };
}

function isNegative(value: unknown): boolean {
  return (typeof value === "number" && value < 0) || (typeof value === "string" && value.trim().startsWith("-"));
}

// ---- helpers ----

/** Describes where a value came from, for messages. */
function describeSource(source: ConfigSource, key: string): string {
  switch (source.kind) {
    case "default":
      return "the default";
    case "file":
      return key ? `config file ${source.path}, key "${key}"` : `config file ${source.path}`;
    case "env":
      return `environment variable ${source.name}`;
    case "flag":
      return `flag ${source.name}`;
  }
}

/** A value as an error message shows it: short, quoted, and never the whole of a hostile input. */
function describe(value: unknown): string {
  if (value === null || value === undefined) return "empty";
  if (value instanceof Map) return "a mapping";
  if (Array.isArray(value)) return "a list";
  if (typeof value === "string") return JSON.stringify(value.length > 64 ? `${value.slice(0, 64)}…` : value);
  if (typeof value === "number" || typeof value === "boolean") return String(value);
  return `a ${typeof value}`;
}

/** What kind of value this is, for "must be X, not Y" messages. */
function kindOf(value: unknown): string {
  if (value === null || value === undefined) return "empty";
  if (value instanceof Map) return "a mapping";
  if (Array.isArray(value)) return "a list";
  if (typeof value === "string") return "text";
  if (typeof value === "number") return "a number";
  if (typeof value === "boolean") return "true or false";
  return `a ${typeof value}`;
}

function nonEmpty(value: string | undefined): string | undefined {
  return value === undefined || value === "" ? undefined : value;
}

function kebab(name: string): string {
  return name.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
}

function warnAboutEnv(env: Record<string, string | undefined>, warn: ((message: string) => void) | undefined): void {
  if (!warn) return;
  for (const name of Object.keys(env)) {
    if (!name.startsWith("WEFT_") || CONFIG_ENV_VARS.includes(name) || OTHER_ENV_VARS.includes(name)) continue;
    const guess = suggest(name, [...CONFIG_ENV_VARS, ...OTHER_ENV_VARS]);
    if (guess) warn(`ignoring environment variable ${name}: it is not a setting; did you mean ${guess}?`);
  }
}

/** The known name closest to `name`, if one is close enough to be a likely misspelling. */
function suggest(name: string, known: string[]): string | undefined {
  const normal = (s: string): string => s.toLowerCase().replace(/[-_\s]/g, "").replace(/ms$/, "");
  const exact = known.find((k) => normal(k) === normal(name));
  if (exact) return exact;
  let best: string | undefined;
  let bestDistance = 3;
  for (const k of known) {
    const d = distance(normal(k), normal(name));
    if (d < bestDistance) {
      best = k;
      bestDistance = d;
    }
  }
  return best;
}

function distance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) {
      row[j] = Math.min(previous[j]! + 1, row[j - 1]! + 1, previous[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    previous = row;
  }
  return previous[b.length]!;
}

function fileProblem(e: unknown): string {
  const code = (e as NodeJS.ErrnoException).code;
  switch (code) {
    case "ENOENT":
      return "does not exist";
    case "EACCES":
    case "EPERM":
      return "cannot be read (permission denied)";
    case "EISDIR":
      return "is a directory; pass a YAML or JSON file";
    case "ENOTDIR":
      return "does not exist (a part of its path is not a directory)";
    case "ENAMETOOLONG":
      return "cannot be opened: the path is too long";
    default:
      return `cannot be read: ${(e as Error).message}`;
  }
}
