import { hostname } from "node:os";
import { DEFAULT_LIMITS, isNodeId } from "../../src/contract/validate.js";
import { LOG_FORMATS, LOG_LEVELS } from "../../src/ops/log-levels.js";
import { httpAddress, listenAddress, peerDnsList, peerList, peerListenAddress } from "./address-types.js";
import { type FieldPath, setting } from "./setting.js";
import { boolean, directoryPath, duration, fileMode, filePath, hostList, integer, nodeId, oneOf, size } from "./value-types.js";

// The sidecar's settings, once. Each one's config-file key, environment variable, flag,
// type (with its range), default and description are here; the config file's parsing, the
// environment, the `weft sidecar` flags and their help, SidecarConfig's values and the
// settings tables of docs/configuration.md (`npm run gen:docs`) are all derived from it.
// The order is the order of the config file's keys in messages and of the flags in help.

const SECOND = 1000;
const MINUTE = 60 * SECOND;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;
const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;
const TiB = 1024 * GiB;

export const SETTINGS = [
  setting({
    key: "dataDir",
    field: "dataDir",
    env: "WEFT_DATA_DIR",
    flag: "--data-dir",
    type: directoryPath,
    default: "./weft-data",
    doc: "the LevelDB data directory",
    docMore: "Its events are in a second one, `events/` inside it. One sidecar at a time uses it (LevelDB's lock)",
    table: "settings",
  }),
  setting({
    key: "listen",
    field: "listen",
    env: "WEFT_LISTEN",
    flag: "--listen",
    type: listenAddress,
    default: "127.0.0.1:7420",
    doc: "the service API (gRPC) address",
    docMore: "Keep it on loopback or a socket",
    table: "settings",
  }),
  setting({
    key: "fsync",
    field: "fsync",
    env: "WEFT_FSYNC",
    flag: "--fsync",
    negation: "do not sync before acking (the default)",
    type: boolean,
    default: false,
    doc: "sync each append batch to disk before acking it",
    docMore: "An acked event then survives power loss, not only a crash of the sidecar",
    table: "settings",
  }),
  setting({
    key: "maxEventBytes",
    field: "maxEventBytes",
    env: "WEFT_MAX_EVENT_BYTES",
    flag: "--max-event-bytes",
    type: size(KiB, 256 * MiB),
    default: DEFAULT_LIMITS.maxEventBytes,
    rule: "at most `maxMessageBytes`",
    doc: "the largest encoded event",
    table: "settings",
  }),
  setting({
    key: "maxBatchEvents",
    field: "maxBatchEvents",
    env: "WEFT_MAX_BATCH_EVENTS",
    type: integer(1, 100_000),
    default: DEFAULT_LIMITS.maxBatchEvents,
    doc: "the most events in one publish request",
    table: "settings",
  }),
  setting({
    key: "maxSubscriptions",
    field: "maxSubscriptions",
    env: "WEFT_MAX_SUBSCRIPTIONS",
    type: integer(1, 1_000_000),
    default: DEFAULT_LIMITS.maxSubscriptions,
    doc: "the most Subscribe streams open at once",
    table: "settings",
  }),
  setting({
    key: "maxMessageBytes",
    field: "maxMessageBytes",
    env: "WEFT_MAX_MESSAGE_BYTES",
    type: size(4 * KiB, GiB),
    default: 16 * MiB,
    doc: "the largest gRPC request message",
    table: "settings",
  }),
  setting({
    key: "maxStreamsPerConnection",
    field: "maxStreamsPerConnection",
    env: "WEFT_MAX_STREAMS_PER_CONNECTION",
    type: integer(1, 100_000),
    default: 1000,
    doc: "the most streams (calls) one connection to the service API may have open at once",
    docMore:
      "It is HTTP/2's `SETTINGS_MAX_CONCURRENT_STREAMS`: gRPC clients wait for a free stream, and a stream sent past it is refused (`RST_STREAM` `REFUSED_STREAM`). The peer API allows 100 per connection (a link is one stream)",
    table: "settings",
  }),
  setting({
    key: "maxPartialMessageBytes",
    field: "maxPartialMessageBytes",
    env: "WEFT_MAX_PARTIAL_MESSAGE_BYTES",
    type: size(64 * KiB, 64 * GiB),
    default: 64 * MiB,
    rule: "at least `maxMessageBytes` and a message's 5-byte prefix",
    doc: "the most bytes of request messages received in part, over every stream of a listener (the service API and the peer API each)",
    docMore:
      "Past it, the stream whose message started longest ago is ended with `RECEIVE_BUDGET` (`weft_partial_message_bytes`; [operations.md](operations.md#memory))",
    table: "settings",
  }),
  setting({
    key: "dedupWindow",
    field: "dedupWindowMs",
    env: "WEFT_DEDUP_WINDOW",
    type: duration(SECOND, 30 * DAY),
    default: 10 * MINUTE,
    rule: "longer than `peerTimeout`",
    doc: "re-publishing (source, id) to a channel within it is a duplicate",
    table: "settings",
  }),
  setting({
    key: "retention.maxAge",
    field: "retention.maxAgeMs",
    env: "WEFT_RETENTION_MAX_AGE",
    type: duration(SECOND, 3650 * DAY),
    default: 7 * DAY,
    doc: "events older than this are removed (counted), in every channel without its own",
    table: "settings",
  }),
  setting({
    key: "retention.maxBytes",
    field: "retention.maxBytes",
    env: "WEFT_RETENTION_MAX_BYTES",
    type: size(KiB, 1024 * TiB),
    default: GiB,
    doc: "a channel over this loses its oldest events (counted), in every channel without its own",
    table: "settings",
  }),
  setting({
    key: "maxStoredBytes",
    field: "maxStoredBytes",
    env: "WEFT_MAX_STORED_BYTES",
    flag: "--max-stored-bytes",
    type: size(0, 1024 * TiB),
    default: 0,
    defaultText: "`0`, no quota",
    doc: "publishes are refused (`STORAGE_QUOTA`) while the log's events take this many bytes",
    docMore:
      "It counts the events the log retains, all channels together (what `weft_log_bytes` sums); retention frees room ([below](#the-stored-bytes-quota)). The check is made when a publish arrives: batches already accepted (at most each stream's 32 batches / 4000 events waiting for the log) are still stored, so the log can pass the quota by that much",
    table: "settings",
  }),
  setting({
    key: "maxChannels",
    field: "maxChannels",
    env: "WEFT_MAX_CHANNELS",
    flag: "--max-channels",
    type: integer(1, 10_000_000),
    default: 10_000,
    doc: "the most channels this sidecar holds (events or groups; dead-letter channels count)",
    docMore: "A publish or Subscribe that would make one more is refused with `TOO_MANY_CHANNELS` ([below](#channel-and-group-limits))",
    table: "settings",
  }),
  setting({
    key: "maxGroupsPerChannel",
    field: "maxGroupsPerChannel",
    env: "WEFT_MAX_GROUPS_PER_CHANNEL",
    flag: "--max-groups-per-channel",
    type: integer(1, 1_000_000),
    default: 1000,
    doc: "the most groups of one channel",
    docMore: "A Subscribe or a peer's interest that would make one more is refused with `TOO_MANY_GROUPS`",
    table: "settings",
  }),
  setting({
    key: "sweepInterval",
    field: "sweepIntervalMs",
    env: "WEFT_SWEEP_INTERVAL",
    type: duration(100, DAY),
    default: 10 * SECOND,
    doc: "how often retention and dedup expiry run",
    table: "settings",
  }),
  setting({
    key: "shutdownGrace",
    field: "shutdownGraceMs",
    env: "WEFT_SHUTDOWN_GRACE",
    type: duration(0, HOUR),
    default: 5 * SECOND,
    doc: "how long a graceful stop waits for streams before cutting them",
    table: "settings",
  }),
  setting({
    key: "nodeId",
    field: "nodeId",
    env: "WEFT_NODE_ID",
    flag: "--node-id",
    type: nodeId,
    default: defaultNodeId,
    defaultText: "the host name",
    doc: "this sidecar's name in the mesh, unique among its peers",
    docMore: "With TLS it is the one the certificate names, and may be left unset",
    table: "mesh",
  }),
  setting({
    key: "peerListen",
    field: "peerListen",
    env: "WEFT_PEER_LISTEN",
    flag: "--peer-listen",
    type: peerListenAddress,
    default: "127.0.0.1:7421",
    rule: "not the `listen` address",
    doc: "the peer API address; peers dial it",
    table: "mesh",
  }),
  setting({
    key: "http",
    field: "http",
    env: "WEFT_HTTP",
    flag: "--http",
    type: httpAddress,
    default: "127.0.0.1:7422",
    rule: "not the `listen` or `peerListen` address",
    doc: "the HTTP address for `/metrics`, `/healthz`, `/readyz` and the dashboard",
    docMore: "See [HTTP](#http) below",
    table: "settings",
  }),
  setting({
    key: "peers",
    field: "peers",
    env: "WEFT_PEERS",
    flag: "--peers",
    type: peerList,
    default: [],
    doc: "peer addresses to link with; may include this sidecar's own",
    table: "mesh",
  }),
  setting({
    key: "peersDns",
    field: "peersDns",
    env: "WEFT_PEERS_DNS",
    flag: "--peers-dns",
    type: peerDnsList,
    default: [],
    doc: "DNS names whose every address is a peer",
    table: "mesh",
  }),
  setting({
    key: "peersDnsInterval",
    field: "peersDnsIntervalMs",
    env: "WEFT_PEERS_DNS_INTERVAL",
    flag: "--peers-dns-interval",
    type: duration(SECOND, HOUR),
    default: 30 * SECOND,
    doc: "how often the `peersDns` names are resolved again",
    table: "mesh",
  }),
  setting({
    key: "peerTimeout",
    field: "peerTimeoutMs",
    env: "WEFT_PEER_TIMEOUT",
    flag: "--peer-timeout",
    type: duration(100, HOUR),
    default: 30 * SECOND,
    rule: "shorter than `dedupWindow`",
    doc: "how long a peer may be unreachable before the others take its share of each group",
    table: "mesh",
  }),
  setting({
    key: "peerWindow",
    field: "peerWindow",
    env: "WEFT_PEER_WINDOW",
    flag: "--peer-window",
    type: integer(1, 10_000),
    default: 5000,
    doc: "the most events forwarded to one peer for one group and not yet handled there",
    table: "mesh",
  }),
  setting({
    key: "maxPeers",
    field: "maxPeers",
    env: "WEFT_MAX_PEERS",
    flag: "--max-peers",
    type: integer(1, 100_000),
    default: 1000,
    doc: "the most peers known at once (linked, or gone for less than `peerTimeout`)",
    docMore: "A hello from a node id not known yet is refused with `TOO_MANY_PEERS` (logged at `warn`); a known peer linking again is not a new one",
    table: "mesh",
  }),
  setting({
    key: "maxReadAheadBytes",
    field: "maxReadAheadBytes",
    env: "WEFT_MAX_READ_AHEAD_BYTES",
    flag: "--max-read-ahead-bytes",
    type: size(MiB, TiB),
    default: 256 * MiB,
    doc: "the most bytes of events all groups hold in memory together; a group past it waits for acks",
    docMore:
      "It counts what groups read ahead of their cursors, waiting or in flight (`weft_read_ahead_bytes`). A group past it reads less, and deliveries go on as acks give bytes back ([operations.md](operations.md#memory))",
    table: "settings",
  }),
  setting({
    key: "logLevel",
    field: "logLevel",
    env: "WEFT_LOG_LEVEL",
    flag: "--log-level",
    type: oneOf("log level", "<level>", LOG_LEVELS),
    default: "info",
    doc: "the least severe log records written",
    docMore: "See [observability.md](observability.md)",
    table: "settings",
  }),
  setting({
    key: "logFormat",
    field: "logFormat",
    env: "WEFT_LOG_FORMAT",
    flag: "--log-format",
    type: oneOf("log format", "<format>", LOG_FORMATS),
    default: "json",
    doc: "log records on stderr as JSON lines, or as text lines for people",
    table: "settings",
  }),
  setting({
    key: "tls.cert",
    field: "tls.cert",
    env: "WEFT_TLS_CERT",
    flag: "--tls-cert",
    type: filePath("this sidecar's certificate (PEM)"),
    default: undefined,
    doc: "TLS on every listener: this sidecar's certificate (PEM), naming `spiffe://TRUST-DOMAIN/weft/node/NODE-ID`",
    docMore:
      "`tls.cert`, `tls.key` and `tls.ca` are set together or not at all: TLS on every listener, mutual TLS between peers, read again when the files change or on SIGHUP ([security.md](security.md))",
    table: "settings",
  }),
  setting({
    key: "tls.key",
    field: "tls.key",
    env: "WEFT_TLS_KEY",
    flag: "--tls-key",
    type: filePath("the certificate's private key (PEM)"),
    default: undefined,
    doc: "TLS: the certificate's private key (PEM)",
    table: "settings",
  }),
  setting({
    key: "tls.ca",
    field: "tls.ca",
    env: "WEFT_TLS_CA",
    flag: "--tls-ca",
    type: filePath("the CA certificates (PEM)"),
    default: undefined,
    doc: "TLS: the CA certificates that sign the mesh's sidecars and services (PEM); peers use mutual TLS",
    table: "settings",
  }),
  setting({
    key: "insecure",
    field: "insecure",
    env: "WEFT_INSECURE",
    flag: "--insecure",
    type: boolean,
    default: false,
    doc: "let listeners beyond loopback run without TLS, or the service API without a policy (warned at every start)",
    table: "settings",
  }),
  setting({
    key: "socketMode",
    field: "socketMode",
    env: "WEFT_SOCKET_MODE",
    flag: "--socket-mode",
    type: fileMode,
    default: 0o600,
    doc: "the unix socket's file mode when `listen` is a socket",
    docMore: "It says who may connect; their calls are the identity `local`",
    table: "settings",
  }),
  setting({
    key: "httpHosts",
    field: "httpHosts",
    env: "WEFT_HTTP_HOSTS",
    flag: "--http-hosts",
    type: hostList,
    default: [],
    doc: "host names the dashboard answers under, besides `localhost`, loopback addresses and the listener's own host",
    docMore: "It is a Host check against DNS rebinding",
    table: "settings",
  }),
] as const;

// Every value of SidecarConfig that a setting sets has one: this fails to compile, naming
// the field, when one is missing.
type Unset = Exclude<FieldPath, (typeof SETTINGS)[number]["field"]>;
const everyFieldIsSet: [Unset] extends [never] ? true : { missing: Unset } = true;
void everyFieldIsSet;

/**
 * Config-file sections that group settings ("retention: { maxAge: 7d }"): what the section
 * must be, for messages. Its keys are the settings whose key starts with the section's name.
 */
export const SECTIONS: ReadonlyMap<string, string> = new Map([
  ["retention", "a mapping with maxAge and/or maxBytes"],
  ["tls", "a mapping with cert, key and ca (paths of PEM files)"],
]);

/**
 * Keys of a config file that hold structured data, not one value, and have no variable or
 * flag: read by config-file.ts, listed last in the docs' table.
 */
export const FILE_ONLY = [
  {
    key: "channels",
    cell: "`channels.NAME.maxAge`, `.maxBytes`",
    default: "those of `retention`",
    allowed: "file only: channel name → `maxAge` and/or `maxBytes`, as in `retention`",
    doc: "retention of one channel, overriding `retention`",
  },
  {
    key: "policy",
    cell: "`policy`",
    default: "none",
    allowed: "file only: identity → permission → patterns",
    doc: "who may publish, subscribe, change group settings and administer ([security.md](security.md))",
  },
  {
    key: "tokens",
    cell: "`tokens`",
    default: "none",
    allowed: 'file only: identity → `"sha256:"` and 64 hex digits',
    doc: "bearer tokens, stored hashed ([security.md](security.md))",
  },
] as const;

/** The environment variable naming a config file when no file is given. */
export const CONFIG_ENV = "WEFT_CONFIG";

/** WEFT_ variables that are not sidecar settings but are not misspellings either. */
export const OTHER_ENV_VARS: readonly string[] = ["WEFT_ADDRESS", "WEFT_CLIENT_TLS_CA", "WEFT_CLIENT_TLS_CERT", "WEFT_CLIENT_TLS_KEY", "WEFT_TOKEN"];

/** The host name, with characters a node id may not hold replaced by "-"; "weft" if nothing of it is usable. */
export function defaultNodeId(): string {
  const id = hostname().replace(/[^A-Za-z0-9._-]/g, "-").replace(/^[^A-Za-z0-9]+/, "").slice(0, 64);
  return isNodeId(id) ? id : "weft";
}

/** Any setting of the schema. */
export type SchemaSetting = (typeof SETTINGS)[number];
/** A setting's config-file key. */
export type SettingKey = SchemaSetting["key"];

/** The setting with `key`, typed as its entry in the schema. */
export function settingOf<K extends SettingKey>(key: K): Extract<SchemaSetting, { key: K }> {
  return SETTINGS.find((s) => s.key === key) as Extract<SchemaSetting, { key: K }>;
}
