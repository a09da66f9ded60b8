import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CONFIG_ENV_VARS, ConfigError, type ConfigInput, MAX_CONFIG_FILE_BYTES, MAX_PEER_ENTRIES, defaultConfig, resolveConfig } from "../sidecar/settings/index.js";
import { formatDuration, formatSize, parseDuration, parseSize } from "../sidecar/units.js";
import { makeCa, makeNodeCert, makeServiceCert } from "../sidecar/dev-certs.js";

let dir: string;
let files = 0;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "weft-config-"));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** Writes a config file and returns its path. */
async function file(content: string | Buffer, name = `weft-${++files}.yaml`): Promise<string> {
  const path = join(dir, name);
  await writeFile(path, content);
  return path;
}

/** Resolves a config from YAML text alone. */
async function fromYaml(yaml: string) {
  return resolveConfig({ file: await file(yaml), env: {} });
}

/** The ConfigError that `input` is refused with. */
async function refusal(input: ConfigInput | Promise<unknown>): Promise<ConfigError> {
  const attempt = input instanceof Promise ? input : resolveConfig(input);
  const error = await attempt.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error, "expected a ConfigError").toBeInstanceOf(ConfigError);
  return error as ConfigError;
}

async function yamlRefusal(yaml: string): Promise<ConfigError> {
  return refusal({ file: await file(yaml), env: {} });
}

describe("durations and sizes", () => {
  it.each([
    [500, 500],
    ["500", 500],
    ["500ms", 500],
    ["30s", 30_000],
    ["10m", 600_000],
    ["2h", 7_200_000],
    ["7d", 604_800_000],
    ["1.5s", 1500],
    ["10 m", 600_000],
    [0, 0],
  ])("parses the duration %j as %d ms", (input, ms) => {
    expect(parseDuration(input)).toBe(ms);
  });

  it.each([["-1s"], [-5], ["10x"], ["m"], [""], ["1e3s"], ["0.5ms"], [1.5], ["1h30m"], [Number.NaN], [Number.POSITIVE_INFINITY], ["99999999999999999999d"], [true], [null]])(
    "refuses the duration %j",
    (input) => {
      expect(parseDuration(input)).toBeUndefined();
    },
  );

  it.each([
    [1024, 1024],
    ["1024", 1024],
    ["512KiB", 512 * 1024],
    ["1MiB", 1024 ** 2],
    ["1mib", 1024 ** 2],
    ["1GiB", 1024 ** 3],
    ["1.5KiB", 1536],
    ["1MB", 1_000_000],
    ["10B", 10],
  ])("parses the size %j as %d bytes", (input, bytes) => {
    expect(parseSize(input)).toBe(bytes);
  });

  it.each([["-1KiB"], ["1XB"], ["KiB"], ["0.1B"], ["1e6"], [{}], ["9999999PiB"]])("refuses the size %j", (input) => {
    expect(parseSize(input)).toBeUndefined();
  });

  it("formats durations and sizes the way they are written", () => {
    expect(formatDuration(600_000)).toBe("10m");
    expect(formatDuration(1500)).toBe("1500ms");
    expect(formatDuration(7 * 86_400_000)).toBe("7d");
    expect(formatSize(1024 ** 2)).toBe("1MiB");
    expect(formatSize(1000)).toBe("1000B");
  });
});

describe("sources and precedence", () => {
  it("gives the defaults when nothing is set", async () => {
    const config = await resolveConfig({ env: {} });
    expect(config).toEqual(defaultConfig());
  });

  it("reads every setting from a YAML file", async () => {
    const config = await fromYaml(`
dataDir: /var/lib/weft
listen: 0.0.0.0:7000
fsync: true
maxEventBytes: 2MiB
maxBatchEvents: 200
maxSubscriptions: 500
maxMessageBytes: 32MiB
maxStreamsPerConnection: 50
maxPartialMessageBytes: 128MiB
dedupWindow: 5m
retention:
  maxAge: 3d
  maxBytes: 10GiB
channels:
  orders.created: { maxAge: 1d }
  audit.log:
    maxBytes: 100GiB
maxStoredBytes: 500GiB
maxChannels: 200
maxGroupsPerChannel: 20
sweepInterval: 30s
shutdownGrace: 2s
nodeId: weft-a.eu-1
peerListen: 0.0.0.0:7421
http: 0.0.0.0:9422
peers: [10.0.0.1:7421, 10.0.0.2:7421]
peersDns: weft-peers.mesh.svc:7421
peersDnsInterval: 1m
peerTimeout: 10s
peerWindow: 500
maxPeers: 30
maxReadAheadBytes: 1GiB
logLevel: debug
logFormat: pretty
insecure: true
socketMode: "0660"
httpHosts: [weft-a.example]
`);
    expect(config).toEqual({
      dataDir: "/var/lib/weft",
      listen: "0.0.0.0:7000",
      fsync: true,
      maxEventBytes: 2 * 1024 ** 2,
      maxBatchEvents: 200,
      maxSubscriptions: 500,
      maxMessageBytes: 32 * 1024 ** 2,
      maxStreamsPerConnection: 50,
      maxPartialMessageBytes: 128 * 1024 ** 2,
      dedupWindowMs: 300_000,
      retention: { maxAgeMs: 3 * 86_400_000, maxBytes: 10 * 1024 ** 3 },
      // A channel's own retention fills in from the default retention.
      channels: {
        "orders.created": { maxAgeMs: 86_400_000, maxBytes: 10 * 1024 ** 3 },
        "audit.log": { maxAgeMs: 3 * 86_400_000, maxBytes: 100 * 1024 ** 3 },
      },
      maxStoredBytes: 500 * 1024 ** 3,
      maxChannels: 200,
      maxGroupsPerChannel: 20,
      sweepIntervalMs: 30_000,
      shutdownGraceMs: 2000,
      nodeId: "weft-a.eu-1",
      peerListen: "0.0.0.0:7421",
      http: "0.0.0.0:9422",
      peers: ["10.0.0.1:7421", "10.0.0.2:7421"],
      peersDns: ["weft-peers.mesh.svc:7421"],
      peersDnsIntervalMs: 60_000,
      peerTimeoutMs: 10_000,
      peerWindow: 500,
      maxPeers: 30,
      maxReadAheadBytes: 1024 ** 3,
      logLevel: "debug",
      logFormat: "pretty",
      tls: undefined,
      insecure: true,
      socketMode: 0o660,
      httpHosts: ["weft-a.example"],
      tokens: {},
    });
  });

  it("reads a JSON file, numbers as ms and bytes", async () => {
    const path = await file(
      JSON.stringify({ listen: "127.0.0.1:0", dedupWindow: 60000, maxEventBytes: 4096, retention: { maxBytes: "1GiB" } }, null, "\t"),
      "weft.json",
    );
    const config = await resolveConfig({ file: path, env: {} });
    expect(config.listen).toBe("127.0.0.1:0");
    expect(config.dedupWindowMs).toBe(60_000);
    expect(config.maxEventBytes).toBe(4096);
    expect(config.retention).toEqual({ maxAgeMs: defaultConfig().retention.maxAgeMs, maxBytes: 1024 ** 3 });
  });

  it("applies defaults < file < environment < flags", async () => {
    const path = await file("listen: 127.0.0.1:1001\nfsync: true\ndedupWindow: 1m\nmaxEventBytes: 2MiB\nshutdownGrace: 1s\n");
    const env = { WEFT_LISTEN: "127.0.0.1:1002", WEFT_DEDUP_WINDOW: "2m", WEFT_MAX_EVENT_BYTES: "3MiB", WEFT_FSYNC: "true" };
    const flags = { listen: "127.0.0.1:1003", fsync: false, maxEventBytes: "4MiB" };

    const fileOnly = await resolveConfig({ file: path, env: {} });
    expect([fileOnly.listen, fileOnly.dedupWindowMs, fileOnly.maxEventBytes, fileOnly.fsync]).toEqual(["127.0.0.1:1001", 60_000, 2 * 1024 ** 2, true]);

    const withEnv = await resolveConfig({ file: path, env });
    expect([withEnv.listen, withEnv.dedupWindowMs, withEnv.maxEventBytes]).toEqual(["127.0.0.1:1002", 120_000, 3 * 1024 ** 2]);

    const all = await resolveConfig({ file: path, env, flags });
    expect(all.listen).toBe("127.0.0.1:1003");
    expect(all.fsync).toBe(false);
    expect(all.maxEventBytes).toBe(4 * 1024 ** 2);
    expect(all.dedupWindowMs).toBe(120_000); // no flag for it: the environment's
    expect(all.shutdownGraceMs).toBe(1000); // only in the file
    expect(all.sweepIntervalMs).toBe(defaultConfig().sweepIntervalMs); // nowhere: the default
  });

  it("reads every setting from the environment", async () => {
    const config = await resolveConfig({
      env: {
        WEFT_DATA_DIR: "/data",
        WEFT_LISTEN: "/run/weft.sock",
        WEFT_FSYNC: "YES",
        WEFT_MAX_EVENT_BYTES: "64KiB",
        WEFT_MAX_BATCH_EVENTS: "50",
        WEFT_MAX_SUBSCRIPTIONS: "7",
        WEFT_MAX_MESSAGE_BYTES: "1MiB",
        WEFT_DEDUP_WINDOW: "90s",
        WEFT_RETENTION_MAX_AGE: "12h",
        WEFT_RETENTION_MAX_BYTES: "5GiB",
        WEFT_MAX_STORED_BYTES: "20GiB",
        WEFT_SWEEP_INTERVAL: "1500",
        WEFT_SHUTDOWN_GRACE: "0",
        WEFT_NODE_ID: "node_7",
        WEFT_PEER_LISTEN: "[::]:9000",
        WEFT_HTTP: "[::1]:0",
        WEFT_PEERS: "a.mesh:9000,b.mesh:9000",
        WEFT_PEERS_DNS: "weft.mesh:9000",
        WEFT_PEERS_DNS_INTERVAL: "5s",
        WEFT_PEER_TIMEOUT: "250ms",
        WEFT_PEER_WINDOW: "64",
        WEFT_LOG_LEVEL: "WARN",
        WEFT_LOG_FORMAT: "pretty",
      },
    });
    expect(config).toEqual({
      ...defaultConfig(),
      dataDir: "/data",
      listen: "/run/weft.sock",
      fsync: true,
      maxEventBytes: 64 * 1024,
      maxBatchEvents: 50,
      maxSubscriptions: 7,
      maxMessageBytes: 1024 ** 2,
      dedupWindowMs: 90_000,
      retention: { maxAgeMs: 12 * 3_600_000, maxBytes: 5 * 1024 ** 3 },
      maxStoredBytes: 20 * 1024 ** 3,
      sweepIntervalMs: 1500,
      shutdownGraceMs: 0,
      nodeId: "node_7",
      peerListen: "[::]:9000",
      http: "[::1]:0",
      peers: ["a.mesh:9000", "b.mesh:9000"],
      peersDns: ["weft.mesh:9000"],
      peersDnsIntervalMs: 5000,
      peerTimeoutMs: 250,
      peerWindow: 64,
      logLevel: "warn",
      logFormat: "pretty",
    });
  });

  it("names each environment variable WEFT_ and its setting in upper snake case (as `weft sidecar --help` says)", () => {
    expect(CONFIG_ENV_VARS).toEqual([
      "WEFT_CONFIG",
      "WEFT_DATA_DIR",
      "WEFT_LISTEN",
      "WEFT_FSYNC",
      "WEFT_MAX_EVENT_BYTES",
      "WEFT_MAX_BATCH_EVENTS",
      "WEFT_MAX_SUBSCRIPTIONS",
      "WEFT_MAX_MESSAGE_BYTES",
      "WEFT_MAX_STREAMS_PER_CONNECTION",
      "WEFT_MAX_PARTIAL_MESSAGE_BYTES",
      "WEFT_DEDUP_WINDOW",
      "WEFT_RETENTION_MAX_AGE",
      "WEFT_RETENTION_MAX_BYTES",
      "WEFT_MAX_STORED_BYTES",
      "WEFT_MAX_CHANNELS",
      "WEFT_MAX_GROUPS_PER_CHANNEL",
      "WEFT_SWEEP_INTERVAL",
      "WEFT_SHUTDOWN_GRACE",
      "WEFT_NODE_ID",
      "WEFT_PEER_LISTEN",
      "WEFT_HTTP",
      "WEFT_PEERS",
      "WEFT_PEERS_DNS",
      "WEFT_PEERS_DNS_INTERVAL",
      "WEFT_PEER_TIMEOUT",
      "WEFT_PEER_WINDOW",
      "WEFT_MAX_PEERS",
      "WEFT_MAX_READ_AHEAD_BYTES",
      "WEFT_LOG_LEVEL",
      "WEFT_LOG_FORMAT",
      "WEFT_TLS_CERT",
      "WEFT_TLS_KEY",
      "WEFT_TLS_CA",
      "WEFT_INSECURE",
      "WEFT_SOCKET_MODE",
      "WEFT_HTTP_HOSTS",
    ]);
  });

  it("treats empty environment variables and undefined flags as unset", async () => {
    const config = await resolveConfig({ env: { WEFT_LISTEN: "", WEFT_FSYNC: "" }, flags: { listen: undefined } });
    expect(config.listen).toBe(defaultConfig().listen);
    expect(config.fsync).toBe(false);
  });

  it("reads WEFT_CONFIG when no file is given, and a given file wins over it", async () => {
    const a = await file("listen: 127.0.0.1:2001\n");
    const b = await file("listen: 127.0.0.1:2002\n");
    expect((await resolveConfig({ env: { WEFT_CONFIG: a } })).listen).toBe("127.0.0.1:2001");
    expect((await resolveConfig({ file: b, env: { WEFT_CONFIG: a } })).listen).toBe("127.0.0.1:2002");
  });

  it("resolves a relative dataDir in a file against the file's directory, elsewhere against the working directory", async () => {
    await mkdir(join(dir, "etc"), { recursive: true });
    const path = await file("dataDir: ./data\n", join("etc", "weft.yaml"));
    expect((await resolveConfig({ file: path, env: {} })).dataDir).toBe(join(dir, "etc", "data"));
    expect((await resolveConfig({ file: path, env: { WEFT_DATA_DIR: "rel" } })).dataDir).toBe("rel");
    expect((await resolveConfig({ file: path, env: {}, flags: { dataDir: "flagged" } })).dataDir).toBe("flagged");
  });

  it("accepts an empty file (all defaults) and comments", async () => {
    expect(await fromYaml("")).toEqual(defaultConfig());
    expect(await fromYaml("# nothing here\n")).toEqual(defaultConfig());
  });

  it("accepts every address form", async () => {
    for (const listen of ["127.0.0.1:0", "localhost:7420", "[::1]:7420", "weft.internal:65535", "/run/weft.sock", "unix:/run/weft.sock"]) {
      expect((await resolveConfig({ env: {}, flags: { listen } })).listen).toBe(listen);
    }
  });

  it("keeps a channel named like an Object property apart from Object's properties", async () => {
    const config = await fromYaml("channels:\n  constructor: { maxAge: 1h }\n");
    expect(config.channels.constructor).toEqual({ maxAgeMs: 3_600_000, maxBytes: defaultConfig().retention.maxBytes });
    const none = await fromYaml("listen: 127.0.0.1:1\n");
    expect(none.channels.constructor).toBeUndefined();
  });

  it("warns about environment variables that look like misspelt settings, and only those", async () => {
    const warnings: string[] = [];
    await resolveConfig({ env: { WEFT_LISTN: "x", WEFT_ADDRESS: "127.0.0.1:1", WEFT_SOMETHING_ELSE: "1" }, warn: (m) => warnings.push(m) });
    expect(warnings).toEqual([expect.stringContaining("WEFT_LISTN") as unknown as string]);
    expect(warnings[0]).toContain("did you mean WEFT_LISTEN?");
  });
});

describe("refusals name the source, the key and what is allowed", () => {
  it("an unknown key, with a suggestion", async () => {
    const e = await yamlRefusal("dedupWindowMs: 5000\n");
    expect(e.source.kind).toBe("file");
    expect(e.key).toBe("dedupWindowMs");
    expect(e.message).toMatch(/^config file .*weft-\d+\.yaml, key "dedupWindowMs": is not a setting; did you mean "dedupWindow"\?/);
    expect(e.message).toContain("the settings are dataDir, listen, fsync");

    expect((await yamlRefusal("data_dir: x\n")).message).toContain('did you mean "dataDir"?');
    expect((await yamlRefusal("retention:\n  maxAgeMs: 1d\n")).message).toMatch(/key "retention.maxAgeMs": is not a setting in retention; did you mean "maxAge"\?/);
    expect((await yamlRefusal("channels:\n  a.b: { maxage: 1d }\n")).message).toMatch(/key "channels.a.b.maxage": .*did you mean "maxAge"/);
    expect((await yamlRefusal("zzz: 1\n")).message).not.toContain("did you mean");
    expect((await yamlRefusal('"__proto__": { listen: "x:1" }\n')).key).toBe("__proto__");
  });

  it.each([
    ["listen: 7420", "listen", /must be text, not a number/],
    ["fsync: yes", "fsync", /"yes" is not a boolean \(YAML reads yes, no, on and off as text\); use true or false/],
    ["fsync: 1", "fsync", /1 is not a boolean/],
    ["maxBatchEvents: ten", "maxBatchEvents", /"ten" is not a whole number; use 1 to 100000/],
    ["maxBatchEvents: 2.5", "maxBatchEvents", /2.5 is not a whole number/],
    ["dataDir: [a, b]", "dataDir", /must be a directory path, not a list/],
    ["dataDir:", "dataDir", /must be a directory path, not empty/],
    ["dataDir: ''", "dataDir", /is empty; use a directory path/],
    ["retention: 7d", "retention", /must be a mapping with maxAge and\/or maxBytes, not text/],
    ["channels: [orders.created]", "channels", /must be a mapping of channel name to retention/],
    ["channels:\n  orders.created: 1d", "channels.orders.created", /must be a mapping with maxAge and\/or maxBytes/],
    ["channels:\n  orders.created: {}", "channels.orders.created", /is empty; set maxAge and\/or maxBytes/],
    ["dedupWindow: 10x", "dedupWindow", /"10x" is not a duration; use a number of milliseconds or a number with a unit ms, s, m, h or d/],
    ["maxEventBytes: 1 MiBs", "maxEventBytes", /is not a size; use a number of bytes or a number with a unit B, KiB, MiB/],
  ])("a wrong type or form: %j", async (yaml, key, message) => {
    const e = await yamlRefusal(`${yaml}\n`);
    expect(e.key).toBe(key);
    expect(e.problem).toMatch(message);
  });

  it.each([
    ["dedupWindow: -1", "dedupWindow", /-1 is negative; use a duration from 1s to 30d/],
    ["dedupWindow: -5s", "dedupWindow", /"-5s" is negative/],
    ["dedupWindow: 0", "dedupWindow", /0 is too short; use 1s to 30d/],
    ["dedupWindow: 400d", "dedupWindow", /"400d" is too long; use 1s to 30d/],
    ["maxEventBytes: 0", "maxEventBytes", /0 is too small; use 1KiB to 256MiB/],
    ["maxEventBytes: 1TiB", "maxEventBytes", /"1TiB" is too large; use 1KiB to 256MiB/],
    ["maxMessageBytes: 2GiB", "maxMessageBytes", /too large; use 4KiB to 1GiB/],
    ["maxBatchEvents: 0", "maxBatchEvents", /0 is out of range; use 1 to 100000/],
    ["maxSubscriptions: 0", "maxSubscriptions", /0 is out of range; use 1 to 1000000/],
    ["maxSubscriptions: -3", "maxSubscriptions", /out of range|not a whole number/],
    ["maxBatchEvents: 1e9", "maxBatchEvents", /out of range/],
    ["maxBatchEvents: 12345678901234567890", "maxBatchEvents", /is not a whole number/],
    ["sweepInterval: .inf", "sweepInterval", /Infinity is not a duration/],
    ["sweepInterval: .nan", "sweepInterval", /NaN is not a duration/],
    ["sweepInterval: 1ms", "sweepInterval", /too short; use 100ms to 1d/],
    ["shutdownGrace: 2h", "shutdownGrace", /too long; use 0ms to 1h/],
    ["retention:\n  maxAge: 100000d", "retention.maxAge", /too long; use 1s to 3650d/],
    ["retention:\n  maxBytes: 0", "retention.maxBytes", /too small/],
    ["channels:\n  a.b: { maxBytes: -1 }", "channels.a.b.maxBytes", /negative/],
  ])("a negative, zero or absurd value: %j", async (yaml, key, message) => {
    const e = await yamlRefusal(`${yaml}\n`);
    expect(e.key).toBe(key);
    expect(e.problem).toMatch(message);
  });

  it.each([
    ["localhost", /it has no port/],
    ["127.0.0.1:", /port "" is not a number from 0 to 65535/],
    ["127.0.0.1:65536", /port "65536" is not a number from 0 to 65535/],
    ["127.0.0.1:-1", /is not a number from 0 to 65535/],
    ["127.0.0.1:http", /port "http"/],
    [":7420", /it has no host/],
    ["::1:7420", /an IPv6 host must be in brackets/],
    ["[nope]:7420", /\[nope\] is not an IPv6 address/],
    ["bad host:7420", /is not a hostname or an IP address/],
    ["unix:relative.sock", /a unix socket path must be absolute/],
    ["unix:/run/", /must name a file/],
    [`/${"s".repeat(120)}`, /the unix socket path is 121 bytes; at most 107 are allowed/],
    ["", /it is empty/],
  ])("a listen address that is not host:port or a socket path: %j", async (listen, message) => {
    const e = await yamlRefusal(`listen: ${JSON.stringify(listen)}\n`);
    expect(e.key).toBe("listen");
    expect(e.problem).toMatch(message);
    expect(e.problem).toContain("use host:port (port 0-65535");
  });

  it.each([["Orders"], ["orders..created"], ["orders."], ["1orders"], ["orders created"], ["a".repeat(201)], ["__proto__"], ["123"]])(
    "a channel name that breaks the grammar: %j",
    async (name) => {
      const e = await yamlRefusal(`channels:\n  ${JSON.stringify(name)}: { maxAge: 1d }\n`);
      expect(e.key).toBe(`channels.${name}`);
      expect(e.problem).toMatch(/channel name ".*" is not valid: use dot-separated lowercase segments/);
    },
  );

  it("a channel key that is not text", async () => {
    const e = await yamlRefusal("channels:\n  [a, b]: { maxAge: 1d }\n");
    expect(e.key).toBe("channels");
    expect(e.problem).toMatch(/keys must be text/);
  });

  it("a file that does not exist, is a directory, or is not a regular file", async () => {
    const missing = join(dir, "missing.yaml");
    const e1 = await refusal({ file: missing, env: {} });
    expect(e1.message).toBe(`config file ${missing}: does not exist`);
    expect(e1.source).toEqual({ kind: "file", path: missing });
    expect((await refusal({ file: dir, env: {} })).message).toBe(`config file ${dir}: is a directory; pass a YAML or JSON file`);
    expect((await refusal({ file: "/dev/null", env: {} })).message).toMatch(/is not a regular file/);
    expect((await refusal({ file: join(missing, "x.yaml"), env: {} })).message).toMatch(/does not exist/);
  });

  it("a file larger than 1 MiB", async () => {
    const huge = await file(`# ${"x".repeat(MAX_CONFIG_FILE_BYTES)}\n`);
    expect((await refusal({ file: huge, env: {} })).message).toMatch(/is \d+ bytes; a config file may be at most 1MiB/);
  });

  it.each([
    ["listen: [", /is not valid YAML or JSON: Flow sequence .* at line \d+, column \d+/],
    ['{"listen": "127.0.0.1:1",}x', /is not valid YAML or JSON/],
    ["listen: a:1\nlisten: b:2\n", /is not valid YAML or JSON: Map keys must be unique at line 2, column 1/],
    ["a: 1\n---\nb: 2\n", /is not valid YAML or JSON: Source contains multiple documents/],
    ["listen: !!js/function 'x'\n", /is not valid YAML or JSON: Unresolved tag/],
    ["- listen\n", /must be a mapping of settings .*, not a list/],
    ["just some text\n", /must be a mapping of settings .*, not text/],
  ])("a file that is not a YAML mapping: %j", async (yaml, message) => {
    const e = await yamlRefusal(yaml);
    expect(e.key).toBe("");
    expect(e.message).toMatch(message);
  });

  it("a file that is not UTF-8", async () => {
    const path = await file(Buffer.from([0x6c, 0x69, 0x73, 0x74, 0x65, 0x6e, 0x3a, 0x20, 0xff, 0xfe, 0x0a]));
    expect((await refusal({ file: path, env: {} })).message).toMatch(/is not UTF-8 text/);
  });

  it("a file that expands aliases without end (billion laughs)", async () => {
    const levels = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]'];
    for (let i = 1; i < 9; i++) {
      const prev = String.fromCharCode(96 + i);
      const name = String.fromCharCode(97 + i);
      levels.push(`${name}: &${name} [${Array(9).fill(`*${prev}`).join(",")}]`);
    }
    const e = await yamlRefusal(`${levels.join("\n")}\n`);
    expect(e.message).toMatch(/is not usable YAML: Excessive alias count/);
  });

  it.each([
    ["WEFT_LISTEN", "nope", /^environment variable WEFT_LISTEN: "nope" is not an address to listen on \(it has no port\)/],
    ["WEFT_FSYNC", "maybe", /^environment variable WEFT_FSYNC: "maybe" is not a boolean; use one of true, 1, yes, on, false, 0, no, off/],
    ["WEFT_MAX_EVENT_BYTES", "abc", /^environment variable WEFT_MAX_EVENT_BYTES: "abc" is not a size/],
    ["WEFT_DEDUP_WINDOW", "-5s", /^environment variable WEFT_DEDUP_WINDOW: "-5s" is negative/],
    ["WEFT_MAX_BATCH_EVENTS", "1.5", /^environment variable WEFT_MAX_BATCH_EVENTS: "1.5" is not a whole number/],
    ["WEFT_MAX_SUBSCRIPTIONS", "lots", /^environment variable WEFT_MAX_SUBSCRIPTIONS: "lots" is not a whole number/],
    ["WEFT_DATA_DIR", "a\0b", /^environment variable WEFT_DATA_DIR: contains a NUL character/],
  ])("an environment variable %s=%j", async (name, value, message) => {
    const e = await refusal({ env: { [name]: value } });
    expect(e.source).toEqual({ kind: "env", name });
    expect(e.message).toMatch(message);
  });

  it("a flag", async () => {
    const e = await refusal({ env: {}, flags: { maxEventBytes: "lots" } });
    expect(e.source).toEqual({ kind: "flag", name: "--max-event-bytes" });
    expect(e.message).toMatch(/^flag --max-event-bytes: "lots" is not a size/);
    const l = await refusal({ env: {}, flags: { listen: "127.0.0.1:99999" } });
    expect(l.message).toMatch(/^flag --listen: "127.0.0.1:99999" is not an address to listen on/);
    const d = await refusal({ env: {}, flags: { dataDir: "" } });
    expect(d.message).toMatch(/^flag --data-dir: is empty/);
  });

  it("a later source is checked even when it overrides a good value", async () => {
    const path = await file("listen: 127.0.0.1:1\n");
    const e = await refusal({ file: path, env: { WEFT_LISTEN: "bad" } });
    expect(e.source.kind).toBe("env");
  });

  it("an event limit larger than the message limit, naming both sources", async () => {
    const e = await yamlRefusal("maxEventBytes: 8MiB\nmaxMessageBytes: 4MiB\n");
    expect(e.key).toBe("maxEventBytes");
    expect(e.problem).toMatch(/^8MiB is larger than maxMessageBytes \(4MiB, from config file .*, key "maxMessageBytes"\); an event must fit in one gRPC message/);

    const budget = await refusal({ env: { WEFT_MAX_PARTIAL_MESSAGE_BYTES: "8MiB" } });
    expect(budget.message).toMatch(/^environment variable WEFT_MAX_PARTIAL_MESSAGE_BYTES: 8MiB is smaller than maxMessageBytes \(16MiB, from the default\) plus a message's 5-byte prefix; one message of the largest size must fit/);
    // Exactly maxMessageBytes cannot hold one message of that size with its prefix.
    const exact = await refusal({ env: { WEFT_MAX_PARTIAL_MESSAGE_BYTES: String(16 * 1024 * 1024) } });
    expect(exact.key).toBe("maxPartialMessageBytes");
    const small = await refusal({ env: { WEFT_MAX_MESSAGE_BYTES: "512KiB" } });
    expect(small.message).toMatch(/^environment variable WEFT_MAX_MESSAGE_BYTES: 512KiB is smaller than maxEventBytes \(1MiB, from the default\)/);
  });
});

describe("the HTTP listener setting", () => {
  it("defaults to 127.0.0.1:7422 and is read from a file, the environment and --http, in that precedence", async () => {
    expect((await resolveConfig({ env: {} })).http).toBe("127.0.0.1:7422");
    const path = await file("http: 127.0.0.1:9101\n");
    expect((await resolveConfig({ file: path, env: {} })).http).toBe("127.0.0.1:9101");
    expect((await resolveConfig({ file: path, env: { WEFT_HTTP: "127.0.0.1:9102" } })).http).toBe("127.0.0.1:9102");
    expect((await resolveConfig({ file: path, env: { WEFT_HTTP: "127.0.0.1:9102" }, flags: { http: "127.0.0.1:9103" } })).http).toBe("127.0.0.1:9103");
  });

  it.each(["127.0.0.1:0", "0.0.0.0:9090", "[::1]:7422", "[::]:0", "localhost:8080", "metrics.internal:9100"])("accepts %j", async (http) => {
    expect((await resolveConfig({ env: {}, flags: { http } })).http).toBe(http);
  });

  it("turns the listener off with \"off\" in any case", async () => {
    expect((await resolveConfig({ env: { WEFT_HTTP: "OFF" } })).http).toBe("off");
    expect((await fromYaml("http: off\n")).http).toBe("off");
    // Off never clashes, not even with the listeners' ports.
    expect((await resolveConfig({ env: {}, flags: { http: "off", listen: "127.0.0.1:7422" } })).http).toBe("off");
  });

  it.each([
    ["/run/weft-http.sock", /a unix socket cannot be used: the HTTP listener is TCP only/],
    ["unix:/run/weft-http.sock", /a unix socket cannot be used/],
    ["127.0.0.1", /it has no port/],
    ["127.0.0.1:70000", /port "70000" is not a number from 0 to 65535/],
    ["::1:7422", /an IPv6 host must be in brackets/],
    ["bad host:7422", /is not a hostname or an IP address/],
    ["", /it is empty/],
    ["on", /it has no port/],
  ])("refuses %j, naming --http and the rule", async (http, problem) => {
    const e = await refusal({ env: {}, flags: { http } });
    expect(e.source).toEqual({ kind: "flag", name: "--http" });
    expect(e.key).toBe("http");
    expect(e.problem).toMatch(problem);
    expect(e.problem).toContain('or "off" for no HTTP listener');
  });

  it("refuses what is not text in a file", async () => {
    const e = await yamlRefusal("http: 7422\n");
    expect(e.key).toBe("http");
    expect(e.problem).toMatch(/^must be text, not a number; use host:port/);
  });

  it("refuses the service or peer listener's port, blaming the one that was set", async () => {
    const onListen = await refusal({ env: {}, flags: { listen: "127.0.0.1:9000", http: "127.0.0.1:9000" } });
    expect(onListen.key).toBe("http");
    expect(onListen.message).toMatch(
      /^flag --http: "127.0.0.1:9000" is the same address as listen \(127.0.0.1:9000, from flag --listen\); the HTTP listener needs its own port .*give http another port/,
    );
    const onPeerDefault = await refusal({ env: { WEFT_HTTP: "127.0.0.1:7421" } });
    expect(onPeerDefault.message).toMatch(/^environment variable WEFT_HTTP: "127.0.0.1:7421" is the same address as peerListen \(127.0.0.1:7421, from the default\)/);
    const wildcard = await refusal({ env: {}, flags: { http: "0.0.0.0:7420" } });
    expect(wildcard.problem).toMatch(/binds the same port, on an overlapping host, as listen/);
    // Only the other listener was set: it is blamed, and told about http.
    const peerOnHttp = await refusal({ env: { WEFT_PEER_LISTEN: "127.0.0.1:7422" } });
    expect(peerOnHttp.key).toBe("peerListen");
    expect(peerOnHttp.message).toMatch(/^environment variable WEFT_PEER_LISTEN: "127.0.0.1:7422" is the same address as http \(127.0.0.1:7422, from the default\).*give peerListen another port, or set http/);
    // Port 0 never clashes: each listener gets its own free port.
    expect((await resolveConfig({ env: {}, flags: { listen: "127.0.0.1:0", peerListen: "127.0.0.1:0", http: "127.0.0.1:0" } })).http).toBe("127.0.0.1:0");
  });
});

describe("mesh settings", () => {
  it("refuses a peer timeout that is not shorter than the dedup window, blaming the one that was set", async () => {
    const timeout = await yamlRefusal("peerTimeout: 20m\n");
    expect(timeout.key).toBe("peerTimeout");
    expect(timeout.message).toMatch(/20m is not shorter than dedupWindow \(10m\); a peer must time out within the dedup window/);
    const window = await yamlRefusal("dedupWindow: 10s\n");
    expect(window.key).toBe("dedupWindow");
    expect(window.message).toMatch(/10s is not longer than peerTimeout \(30s\)/);
    const both = await resolveConfig({ file: await file("dedupWindow: 10s\npeerTimeout: 5s\n"), env: {} });
    expect([both.dedupWindowMs, both.peerTimeoutMs]).toEqual([10_000, 5000]);
  });

  const RULE = /use 1 to 64 characters: letters, digits, '\.', '_' or '-', starting with a letter or digit/;

  it("defaults the node id to the host name, and the peer settings as documented", async () => {
    const config = await resolveConfig({ env: {} });
    expect(config.nodeId).toBe(defaultConfig().nodeId);
    expect(config.nodeId).toMatch(/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/);
    expect([config.peerListen, config.peers, config.peersDns]).toEqual(["127.0.0.1:7421", [], []]);
    expect([config.peersDnsIntervalMs, config.peerTimeoutMs, config.peerWindow]).toEqual([30_000, 30_000, 5000]);
  });

  it("applies defaults < file < environment < flags to every mesh setting", async () => {
    const path = await file(`
nodeId: from-file
peerListen: 127.0.0.1:8001
peers: [f1:7421, f2:7421]
peersDns: [file.mesh:7421]
peersDnsInterval: 10s
peerTimeout: 10s
peerWindow: 10
`);
    const env = {
      WEFT_NODE_ID: "from-env",
      WEFT_PEER_LISTEN: "127.0.0.1:8002",
      WEFT_PEERS: "e1:7421",
      WEFT_PEERS_DNS: "env.mesh:7421",
      WEFT_PEERS_DNS_INTERVAL: "20s",
      WEFT_PEER_TIMEOUT: "20s",
      WEFT_PEER_WINDOW: "20",
    };
    const flags = {
      nodeId: "from-flag",
      peerListen: "127.0.0.1:8003",
      peers: "x1:7421,x2:7421,x3:7421",
      peersDns: "flag.mesh:7421",
      peersDnsInterval: "30s",
      peerTimeout: "30s",
      peerWindow: "30",
    };
    const pickMesh = (c: Awaited<ReturnType<typeof resolveConfig>>) => [
      c.nodeId,
      c.peerListen,
      c.peers,
      c.peersDns,
      c.peersDnsIntervalMs,
      c.peerTimeoutMs,
      c.peerWindow,
    ];
    expect(pickMesh(await resolveConfig({ file: path, env: {} }))).toEqual(["from-file", "127.0.0.1:8001", ["f1:7421", "f2:7421"], ["file.mesh:7421"], 10_000, 10_000, 10]);
    expect(pickMesh(await resolveConfig({ file: path, env }))).toEqual(["from-env", "127.0.0.1:8002", ["e1:7421"], ["env.mesh:7421"], 20_000, 20_000, 20]);
    expect(pickMesh(await resolveConfig({ file: path, env, flags }))).toEqual([
      "from-flag",
      "127.0.0.1:8003",
      ["x1:7421", "x2:7421", "x3:7421"],
      ["flag.mesh:7421"],
      30_000,
      30_000,
      30,
    ]);
    // A flag given one setting leaves the others to the environment.
    const some = await resolveConfig({ file: path, env, flags: { peerWindow: 5 } });
    expect(pickMesh(some)).toEqual(["from-env", "127.0.0.1:8002", ["e1:7421"], ["env.mesh:7421"], 20_000, 20_000, 5]);
  });

  it.each([["a"], ["A1"], ["weft-0"], ["node_7.eu-west-1"], ["9"], ["a".repeat(64)]])("accepts the node id %j", async (id) => {
    expect((await resolveConfig({ env: {}, flags: { nodeId: id } })).nodeId).toBe(id);
  });

  it.each([
    ["node 1"],
    [" node"],
    ["node\t"],
    ["nœud"],
    ["ノード"],
    ["node\u0000x"],
    ["node\u202ex"],
    ["-node"],
    [".node"],
    ["_node"],
    ["node/1"],
    ["node:1"],
    ["a".repeat(65)],
    ["a".repeat(100_000)],
  ])("refuses the node id %j from a flag, the environment and a file", async (id) => {
    const flag = await refusal({ env: {}, flags: { nodeId: id } });
    expect(flag.source).toEqual({ kind: "flag", name: "--node-id" });
    expect(flag.problem).toMatch(/ is not a node id; /);
    expect(flag.problem).toMatch(RULE);
    expect(flag.message.length).toBeLessThan(400); // a hostile value is not echoed whole

    const env = await refusal({ env: { WEFT_NODE_ID: id } });
    expect(env.message).toMatch(/^environment variable WEFT_NODE_ID: .* is not a node id/);

    const yaml = await yamlRefusal(`nodeId: ${JSON.stringify(id)}\n`);
    expect(yaml.key).toBe("nodeId");
    expect(yaml.problem).toMatch(RULE);
  });

  it.each([
    ["nodeId: 42", /must be text, not a number \(quote a number in YAML: nodeId: "42"\); use 1 to 64 characters/],
    ["nodeId: true", /must be text, not true or false/],
    ["nodeId: [a, b]", /must be text, not a list/],
    ["nodeId:", /must be text, not empty/],
    ["nodeId: ''", /"" is not a node id/],
  ])("refuses a node id that is not text: %j", async (yaml, message) => {
    const e = await yamlRefusal(`${yaml}\n`);
    expect(e.key).toBe("nodeId");
    expect(e.problem).toMatch(message);
  });

  it("accepts a peer listener on every TCP form, port 0 included", async () => {
    for (const peerListen of ["127.0.0.1:0", "0.0.0.0:7421", "localhost:9000", "[::1]:7421", "[::]:7421", "weft.internal:65535"]) {
      expect((await resolveConfig({ env: {}, flags: { peerListen } })).peerListen).toBe(peerListen);
    }
  });

  it.each([
    ["/run/weft-peer.sock", /a unix socket cannot be used: peers connect over TCP only/],
    ["unix:/run/weft-peer.sock", /a unix socket cannot be used/],
    ["localhost", /it has no port/],
    ["127.0.0.1:65536", /port "65536" is not a number from 0 to 65535/],
    ["127.0.0.1:-1", /port "-1" is not a number/],
    [`127.0.0.1:${"9".repeat(10_000)}`, /port "9{64}…" is not a number/],
    [":7421", /it has no host/],
    ["::1:7421", /an IPv6 host must be in brackets/],
    ["bad host:7421", /is not a hostname or an IP address/],
    ["", /it is empty/],
  ])("refuses the peer listener %j", async (peerListen, message) => {
    const e = await yamlRefusal(`peerListen: ${JSON.stringify(peerListen)}\n`);
    expect(e.key).toBe("peerListen");
    expect(e.problem).toMatch(message);
    expect(e.problem).toContain("use host:port (TCP; port 0-65535");
    expect((await yamlRefusal("peerListen: 7421\n")).problem).toMatch(/must be text, not a number; use host:port/);
  });

  it("refuses a peer listener on the service listener's address, blaming the one that was set", async () => {
    const same = await refusal({ env: {}, flags: { listen: "127.0.0.1:9000", peerListen: "127.0.0.1:9000" } });
    expect(same.key).toBe("peerListen");
    expect(same.message).toMatch(
      /^flag --peer-listen: "127.0.0.1:9000" is the same address as listen \(127.0.0.1:9000, from flag --listen\); the service API and the peer API each need their own port/,
    );

    const onDefault = await refusal({ env: { WEFT_PEER_LISTEN: "127.0.0.1:7420" } });
    expect(onDefault.message).toMatch(/^environment variable WEFT_PEER_LISTEN: "127.0.0.1:7420" is the same address as listen \(127.0.0.1:7420, from the default\)/);

    const listenOnPeer = await refusal({ env: { WEFT_LISTEN: "127.0.0.1:7421" } });
    expect(listenOnPeer.key).toBe("listen");
    expect(listenOnPeer.message).toMatch(/^environment variable WEFT_LISTEN: "127.0.0.1:7421" is the same address as peerListen \(127.0.0.1:7421, from the default\).*give listen another port, or set peerListen/);

    // Overlapping hosts on one port clash too: a wildcard, localhost and loopback, case and brackets.
    for (const [listen, peerListen] of [
      ["0.0.0.0:9001", "127.0.0.1:9001"],
      ["127.0.0.1:9001", "[::]:9001"],
      ["localhost:9001", "127.0.0.1:9001"],
      ["Weft.Local:9001", "weft.local.:9001"],
      ["[::1]:9001", "[0:0::1]:9001"],
    ] as const) {
      const e = await refusal({ env: {}, flags: { listen, peerListen } });
      expect(e.problem, `${listen} vs ${peerListen}`).toMatch(/binds the same port, on an overlapping host, as listen/);
    }
  });

  it("lets the peer listener share a host with the service listener, and both use port 0", async () => {
    const zero = await resolveConfig({ env: {}, flags: { listen: "127.0.0.1:0", peerListen: "127.0.0.1:0" } });
    expect([zero.listen, zero.peerListen]).toEqual(["127.0.0.1:0", "127.0.0.1:0"]);
    const ports = await resolveConfig({ env: {}, flags: { listen: "0.0.0.0:9000", peerListen: "0.0.0.0:9001" } });
    expect(ports.peerListen).toBe("0.0.0.0:9001");
    const hosts = await resolveConfig({ env: {}, flags: { listen: "127.0.0.1:9000", peerListen: "10.1.2.3:9000" } });
    expect(hosts.peerListen).toBe("10.1.2.3:9000");
    const socket = await resolveConfig({ env: {}, flags: { listen: "/run/weft.sock", peerListen: "0.0.0.0:7421" } });
    expect(socket.peerListen).toBe("0.0.0.0:7421");
  });

  it.each([
    ["peers", "WEFT_PEERS", "--peers"],
    ["peersDns", "WEFT_PEERS_DNS", "--peers-dns"],
  ] as const)("reads %s as a YAML list, a JSON list or comma-separated text, trimmed and without duplicates", async (key, variable, flag) => {
    const expected = ["a.mesh:7421", "10.0.0.2:7421", "[fd00::7]:7421"];
    expect((await fromYaml(`${key}:\n  - a.mesh:7421\n  - " 10.0.0.2:7421 "\n  - "[fd00::7]:7421"\n`))[key]).toEqual(expected);
    const json = await file(JSON.stringify({ [key]: ["a.mesh:7421", "10.0.0.2:7421", "[fd00::7]:7421", "a.mesh:7421"] }), `weft-${++files}.json`);
    expect((await resolveConfig({ file: json, env: {} }))[key]).toEqual(expected);
    expect((await fromYaml(`${key}: "a.mesh:7421, 10.0.0.2:7421 ,[fd00::7]:7421"\n`))[key]).toEqual(expected);
    expect((await resolveConfig({ env: { [variable]: " a.mesh:7421,10.0.0.2:7421,[fd00::7]:7421,A.MESH:7421 " } }))[key]).toEqual(expected);
    expect((await resolveConfig({ env: {}, flags: { [key]: "a.mesh:7421,10.0.0.2:7421,[fd00::7]:7421,10.0.0.2:7421" } }))[key]).toEqual(expected);
    // An empty list, or empty text, is no peers; an empty variable is unset.
    expect((await fromYaml(`${key}: []\n`))[key]).toEqual([]);
    expect((await fromYaml(`${key}: ""\n`))[key]).toEqual([]);
    expect((await resolveConfig({ env: { [variable]: "a.mesh:7421" }, flags: { [key]: "" } }))[key]).toEqual([]);
    expect((await resolveConfig({ env: { [variable]: "" } }))[key]).toEqual([]);
    const e = await refusal({ env: {}, flags: { [key]: "a.mesh:0" } });
    expect(e.source).toEqual({ kind: "flag", name: flag });
  });

  it("accepts the sidecar's own address among its peers (the same list on every sidecar)", async () => {
    const peers = "10.0.0.1:7421,10.0.0.2:7421,10.0.0.3:7421";
    const config = await resolveConfig({ env: { WEFT_PEERS: peers }, flags: { peerListen: "10.0.0.2:7421" } });
    expect(config.peers).toEqual(peers.split(","));
  });

  it(`accepts ${MAX_PEER_ENTRIES} peers and refuses ${MAX_PEER_ENTRIES + 1}, from a list or from text`, async () => {
    const many = (n: number): string[] => Array.from({ length: n }, (_, i) => `10.0.${Math.floor(i / 250)}.${(i % 250) + 1}:7421`);
    expect((await resolveConfig({ env: { WEFT_PEERS: many(MAX_PEER_ENTRIES).join(",") } })).peers).toHaveLength(MAX_PEER_ENTRIES);

    const list = await yamlRefusal(`peers: ${JSON.stringify(many(MAX_PEER_ENTRIES + 1))}\n`);
    expect(list.key).toBe("peers");
    expect(list.problem).toBe("has 1001 entries; at most 1000 may be listed (use peersDns for a larger mesh)");

    const text = await refusal({ env: { WEFT_PEERS_DNS: many(MAX_PEER_ENTRIES + 1).join(",") } });
    expect(text.message).toBe("environment variable WEFT_PEERS_DNS: has more than 1000 entries; at most 1000 may be listed (use peersDns for a larger mesh)");

    // Commas alone count as entries: a hostile value is refused by count before anything else.
    const commas = await refusal({ env: {}, flags: { peers: ",".repeat(1_000_000) } });
    expect(commas.problem).toMatch(/has more than 1000 entries/);
  });

  it.each([
    ["a.mesh", /entry 1, "a.mesh", is not a peer address \(it has no port\)/],
    ["a.mesh:", /entry 1, "a.mesh:", is not a peer address \(port "" is not a number from 1 to 65535\)/],
    ["a.mesh:0", /port "0" is not a number from 1 to 65535/],
    ["a.mesh:70000", /port "70000" is not a number from 1 to 65535/],
    ["a.mesh:-1", /port "-1" is not a number/],
    ["a.mesh:http", /port "http" is not a number/],
    ["ok:1,a.mesh:70000", /entry 2, "a.mesh:70000", is not a peer address/],
    ["a.mesh:1,,b.mesh:2", /entry 2 is empty \(a doubled or trailing comma\?\)/],
    ["a.mesh:1,", /entry 2 is empty/],
    [",a.mesh:1", /entry 1 is empty/],
    ["a.mesh:1, ,b.mesh:2", /entry 2 is empty/],
    ["/run/peer.sock", /a unix socket cannot be used: peers connect over TCP only/],
    ["unix:/run/peer.sock", /a unix socket cannot be used/],
    [":7421", /it has no host/],
    ["::1:7421", /an IPv6 host must be in brackets/],
    ["[nope]:7421", /\[nope\] is not an IPv6 address/],
    ["a mesh:7421", /host "a mesh" is not a hostname or an IP address/],
    ["under_score.mesh:7421", /is not a hostname or an IP address/],
    ["ünïcode.mesh:7421", /is not a hostname or an IP address/],
    [`${"a".repeat(300)}:7421`, /is not a hostname or an IP address/],
  ])("refuses the peers entry %j, naming it and the rule", async (peers, message) => {
    const e = await refusal({ env: { WEFT_PEERS: peers } });
    expect(e.source).toEqual({ kind: "env", name: "WEFT_PEERS" });
    expect(e.problem).toMatch(message);
    expect(e.problem).toContain("host:port (TCP; port 1-65535");
    expect(e.message.length).toBeLessThan(500);
  });

  it.each([
    ["peersDns", "weft.mesh"],
    ["peersDns", "weft.mesh:0"],
    ["peersDns", "weft.mesh:70000"],
    ["peersDns", "weft_peers.mesh:7421"],
    ["peersDns", "/run/dns.sock"],
  ])("refuses the %s entry %j with the DNS rule", async (key, entry) => {
    const e = await yamlRefusal(`${key}: ${JSON.stringify(entry)}\n`);
    expect(e.key).toBe(key);
    expect(e.problem).toMatch(/entry 1, ".*", is not a DNS name and port/);
    expect(e.problem).toContain("use name:port (a DNS name, or an IP address; port 1-65535");
  });

  it("accepts DNS names and IP addresses in peersDns", async () => {
    const config = await fromYaml("peersDns: [weft-peers.default.svc.cluster.local:7421, WEFT.example.:1, 10.0.0.9:65535, '[::1]:7421']\n");
    expect(config.peersDns).toEqual(["weft-peers.default.svc.cluster.local:7421", "WEFT.example.:1", "10.0.0.9:65535", "[::1]:7421"]);
  });

  it.each([
    ["peers: [a.mesh:1, 7421]", /entry 2 is a number \(7421\), not text; each entry is host:port/],
    ["peers: [a.mesh:1, true]", /entry 2 is true or false \(true\), not text/],
    ["peers: [a.mesh:1, [b.mesh:2]]", /entry 2 is a list \(a list\), not text/],
    ["peers: [{ host: a.mesh, port: 1 }]", /entry 1 is a mapping \(a mapping\), not text/],
    ["peers:\n  - a.mesh:1\n  -\n", /entry 2 is empty; each entry is host:port/],
    ["peers: ['a.mesh:1', '']", /entry 2 is empty; each entry is host:port/],
    ["peers: ['a.mesh:1,b.mesh:2']", /entry 1, "a.mesh:1,b.mesh:2", contains a comma; in a list, give one peer address per entry/],
    ["peers: 7421", /must be a list of host:port .*, or one text of them separated by commas, not a number/],
    ["peers:", /must be a list of .*, not empty/],
    ["peers: { a: b }", /not a mapping/],
    ["peersDns: [weft.mesh:1, 2]", /entry 2 is a number \(2\), not text; each entry is name:port/],
  ])("refuses a peer list that is not a list of text: %j", async (yaml, message) => {
    const e = await yamlRefusal(`${yaml}\n`);
    expect(e.key).toBe(yaml.split(":")[0]);
    expect(e.problem).toMatch(message);
  });

  it("suggests the mesh settings for near misses in a file", async () => {
    expect((await yamlRefusal("peer: [a:1]\n")).message).toContain('did you mean "peers"?');
    expect((await yamlRefusal("node_id: a\n")).message).toContain('did you mean "nodeId"?');
    expect((await yamlRefusal("peerTimeoutMs: 1000\n")).message).toContain('did you mean "peerTimeout"?');
    expect((await yamlRefusal("peersDnsIntervalMs: 1000\n")).message).toContain('did you mean "peersDnsInterval"?');
    const warnings: string[] = [];
    await resolveConfig({ env: { WEFT_PEER: "a:1", WEFT_NODEID: "x" }, warn: (m) => warnings.push(m) });
    expect(warnings.join("\n")).toContain("did you mean WEFT_PEERS?");
    expect(warnings.join("\n")).toContain("did you mean WEFT_NODE_ID?");
  });

  it.each([
    ["peersDnsInterval", "1s", 1000],
    ["peersDnsInterval", "1h", 3_600_000],
    ["peersDnsInterval", 5000, 5000],
    ["peerTimeout", "100ms", 100],
    ["peerTimeout", "1.5s", 1500],
    ["peerTimeout", "1h", 3_600_000],
  ] as const)("accepts %s %j", async (key, value, ms) => {
    // The dedup window must stay longer than the peer timeout.
    const config = await resolveConfig({ env: { WEFT_DEDUP_WINDOW: "2h" }, flags: { [key]: value } });
    expect(key === "peerTimeout" ? config.peerTimeoutMs : config.peersDnsIntervalMs).toBe(ms);
  });

  it.each([
    ["peersDnsInterval: 999ms", "peersDnsInterval", /"999ms" is too short; use 1s to 1h/],
    ["peersDnsInterval: 0", "peersDnsInterval", /0 is too short; use 1s to 1h/],
    ["peersDnsInterval: 2h", "peersDnsInterval", /"2h" is too long; use 1s to 1h/],
    ["peersDnsInterval: -5s", "peersDnsInterval", /"-5s" is negative/],
    ["peersDnsInterval: soon", "peersDnsInterval", /"soon" is not a duration; use a number of milliseconds/],
    ["peersDnsInterval: 1h30m", "peersDnsInterval", /is not a duration/],
    ["peersDnsInterval: .inf", "peersDnsInterval", /Infinity is not a duration/],
    ["peersDnsInterval: [1s]", "peersDnsInterval", /a list is not a duration/],
    ["peerTimeout: 99ms", "peerTimeout", /"99ms" is too short; use 100ms to 1h/],
    ["peerTimeout: 0", "peerTimeout", /0 is too short; use 100ms to 1h/],
    ["peerTimeout: 61m", "peerTimeout", /"61m" is too long; use 100ms to 1h/],
    ["peerTimeout: 99999999999999999999d", "peerTimeout", /is not a duration/],
    ["peerTimeout: 10x", "peerTimeout", /"10x" is not a duration/],
    ["peerTimeout: -1", "peerTimeout", /-1 is negative/],
    ["peerWindow: 0", "peerWindow", /0 is out of range; use 1 to 10000/],
    ["peerWindow: 10001", "peerWindow", /10001 is out of range; use 1 to 10000/],
    ["peerWindow: -1", "peerWindow", /out of range|not a whole number/],
    ["peerWindow: 2.5", "peerWindow", /2.5 is not a whole number; use 1 to 10000/],
    ["peerWindow: '100'", "peerWindow", /"100" is not a whole number/],
    ["peerWindow: lots", "peerWindow", /"lots" is not a whole number/],
    ["peerWindow: 1e9", "peerWindow", /out of range/],
  ])("refuses a nonsense, negative or absurd value: %j", async (yaml, key, message) => {
    const e = await yamlRefusal(`${yaml}\n`);
    expect(e.key).toBe(key);
    expect(e.problem).toMatch(message);
  });

  it.each([
    ["WEFT_PEERS_DNS_INTERVAL", "500ms", /^environment variable WEFT_PEERS_DNS_INTERVAL: "500ms" is too short; use 1s to 1h/],
    ["WEFT_PEER_TIMEOUT", "forever", /^environment variable WEFT_PEER_TIMEOUT: "forever" is not a duration/],
    ["WEFT_PEER_WINDOW", "1.5", /^environment variable WEFT_PEER_WINDOW: "1.5" is not a whole number; use 1 to 10000/],
    ["WEFT_PEER_WINDOW", "1e3", /is not a whole number/],
    ["WEFT_PEER_WINDOW", "99999", /99999 is out of range; use 1 to 10000/],
  ])("refuses the environment variable %s=%j", async (name, value, message) => {
    const e = await refusal({ env: { [name]: value } });
    expect(e.source).toEqual({ kind: "env", name });
    expect(e.message).toMatch(message);
  });

  it("names the flag of each mesh setting in its refusals", async () => {
    const cases: [NonNullable<ConfigInput["flags"]>, string][] = [
      [{ nodeId: "bad id" }, "--node-id"],
      [{ peerListen: "/run/p.sock" }, "--peer-listen"],
      [{ peers: "a.mesh" }, "--peers"],
      [{ peersDns: "a.mesh:0" }, "--peers-dns"],
      [{ peersDnsInterval: "1ms" }, "--peers-dns-interval"],
      [{ peerTimeout: "2h" }, "--peer-timeout"],
      [{ peerWindow: "0" }, "--peer-window"],
    ];
    for (const [flags, name] of cases) {
      const e = await refusal({ env: {}, flags });
      expect(e.source).toEqual({ kind: "flag", name });
      expect(e.message.startsWith(`flag ${name}: `)).toBe(true);
    }
  });
});

describe("log settings", () => {
  it("default to info, as JSON", async () => {
    const config = await resolveConfig({ env: {} });
    expect([config.logLevel, config.logFormat]).toEqual(["info", "json"]);
  });

  it.each(["trace", "debug", "info", "warn", "error", "fatal", "silent"])("accepts the level %s from a file, the environment and a flag", async (level) => {
    expect((await fromYaml(`logLevel: ${level}`)).logLevel).toBe(level);
    expect((await resolveConfig({ env: { WEFT_LOG_LEVEL: level.toUpperCase() } })).logLevel).toBe(level);
    expect((await resolveConfig({ env: {}, flags: { logLevel: ` ${level} ` } })).logLevel).toBe(level);
  });

  it("applies defaults < file < environment < flags", async () => {
    const path = await file("logLevel: error\nlogFormat: pretty\n");
    const env = { WEFT_LOG_LEVEL: "debug" };
    expect(await resolveConfig({ file: path, env: {} })).toMatchObject({ logLevel: "error", logFormat: "pretty" });
    expect(await resolveConfig({ file: path, env })).toMatchObject({ logLevel: "debug", logFormat: "pretty" });
    expect(await resolveConfig({ file: path, env, flags: { logLevel: "trace", logFormat: "json" } })).toMatchObject({ logLevel: "trace", logFormat: "json" });
  });

  it.each([
    ["verbose", '"verbose" is not a log level; use one of trace, debug, info, warn, error, fatal, silent'],
    ["warning", '"warning" is not a log level; use one of trace, debug, info, warn, error, fatal, silent'],
    ["30", '"30" is not a log level; use one of trace, debug, info, warn, error, fatal, silent'],
  ])("refuses the level %j, naming the source and the levels", async (value, problem) => {
    const env = await refusal({ env: { WEFT_LOG_LEVEL: value } });
    expect(env.message).toBe(`environment variable WEFT_LOG_LEVEL: ${problem}`);
    const flag = await refusal({ env: {}, flags: { logLevel: value } });
    expect(flag.source).toEqual({ kind: "flag", name: "--log-level" });
    expect(flag.message).toBe(`flag --log-level: ${problem}`);
  });

  it("refuses a level that is not text in a file, and a bad format anywhere", async () => {
    const number = await yamlRefusal("logLevel: 30");
    expect(number.key).toBe("logLevel");
    expect(number.problem).toBe("30 is not a log level; use one of trace, debug, info, warn, error, fatal, silent");
    const list = await yamlRefusal("logLevel: [info]");
    expect(list.problem).toBe("a list is not a log level; use one of trace, debug, info, warn, error, fatal, silent");
    const format = await refusal({ env: {}, flags: { logFormat: "text" } });
    expect(format.message).toBe('flag --log-format: "text" is not a log format; use one of json, pretty');
    const envFormat = await refusal({ env: { WEFT_LOG_FORMAT: "yaml" } });
    expect(envFormat.source).toEqual({ kind: "env", name: "WEFT_LOG_FORMAT" });
  });

  it("suggests logLevel for a near miss in a file", async () => {
    const e = await yamlRefusal("loglevel: debug");
    expect(e.problem).toContain('did you mean "logLevel"?');
  });
});

describe("TLS settings", () => {
  let ca: string;
  let node: { cert: string; key: string };
  beforeAll(async () => {
    ca = join(dir, "ca");
    await makeCa(ca, { trustDomain: "weft.test", days: 2 });
    node = await makeNodeCert(ca, { nodeId: "node-a", days: 2 });
  });

  it("reads tls.cert, tls.key and tls.ca from a file (relative to it) and takes the node id from the certificate", async () => {
    const config = await resolveConfig({ file: await file("tls:\n  cert: ca/node-node-a.crt\n  key: ca/node-node-a.key\n  ca: ca/ca.crt\n"), env: {} });
    expect(config.tls).toEqual({ cert: node.cert, key: node.key, ca: join(ca, "ca.crt") });
    expect(config.nodeId).toBe("node-a");
  });

  it("reads them from WEFT_TLS_* and from flags, flags last", async () => {
    const env = { WEFT_TLS_CERT: "/nope.crt", WEFT_TLS_KEY: node.key, WEFT_TLS_CA: join(ca, "ca.crt"), WEFT_INSECURE: "yes" };
    const config = await resolveConfig({ env, flags: { tlsCert: node.cert } });
    expect(config.tls?.cert).toBe(node.cert);
    expect(config.insecure).toBe(true);
  });

  it("refuses some of the three without the others, naming what is missing", async () => {
    const e = await refusal({ env: { WEFT_TLS_CERT: node.cert } });
    expect(e.message).toBe('environment variable WEFT_TLS_CERT: is set but tls.key and tls.ca are not: TLS needs all three (this sidecar\'s certificate, its key, and the CA that signs the mesh\'s certificates)');
  });

  it("refuses a node id that is not the one the certificate names", async () => {
    const e = await refusal({ env: {}, flags: { nodeId: "node-b", tlsCert: node.cert, tlsKey: node.key, tlsCa: join(ca, "ca.crt") } });
    expect(e.key).toBe("nodeId");
    expect(e.message).toContain('flag --node-id: "node-b" is not the node tls.cert names (spiffe://weft.test/weft/node/node-a)');
  });

  it.each([
    ["a missing file", { tlsCert: "/does/not/exist.crt" }, "tls.cert", "does not exist"],
    ["a key of another certificate", { tlsKey: "OTHER_KEY" }, "tls.key", "is not the private key of the certificate"],
    ["a CA that did not sign it", { tlsCa: "OTHER_CA" }, "tls.cert", "is not signed by a certificate in"],
    ["a certificate as the key", { tlsKey: "CERT" }, "tls.key", "is not a PEM private key"],
    ["a key as the CA", { tlsCa: "KEY" }, "tls.ca", "holds no PEM certificate"],
  ])("refuses %s, naming the setting and the file", async (_what, flags, key, problem) => {
    const other = join(dir, "other-ca");
    await makeCa(other, { trustDomain: "weft.test", days: 2 }).catch(() => undefined);
    const otherNode = await makeNodeCert(other, { nodeId: "node-a", days: 2 });
    const swap = (v: string): string => ({ OTHER_KEY: otherNode.key, OTHER_CA: join(other, "ca.crt"), CERT: node.cert, KEY: node.key })[v] ?? v;
    const given = { tlsCert: node.cert, tlsKey: node.key, tlsCa: join(ca, "ca.crt"), ...Object.fromEntries(Object.entries(flags).map(([k, v]) => [k, swap(v)])) };
    const e = await refusal({ env: {}, flags: given });
    expect(e.key).toBe(key);
    expect(e.message).toContain(problem);
  });

  it("refuses a service certificate as a sidecar's", async () => {
    const service = await makeServiceCert(ca, { name: "billing", days: 2 });
    const e = await refusal({ env: {}, flags: { tlsCert: service.cert, tlsKey: service.key, tlsCa: join(ca, "ca.crt") } });
    expect(e.message).toContain("names the service spiffe://weft.test/weft/service/billing");
  });

  it("refuses an unknown key under tls, with a suggestion", async () => {
    const e = await yamlRefusal("tls:\n  crt: a.crt\n");
    expect(e.message).toContain('key "tls.crt": is not a setting in tls; did you mean "cert"?');
  });

  it("refuses a tls that is not a mapping, and a path that is not text", async () => {
    expect((await yamlRefusal("tls: yes\n")).message).toContain("must be a mapping with cert, key and ca");
    expect((await yamlRefusal("tls:\n  cert: 7\n")).message).toContain("must be the path of this sidecar's certificate (PEM), not a number");
  });

  it("refuses a section name that is an Object property", async () => {
    expect((await yamlRefusal("constructor: 1\n")).message).toContain("is not a setting");
  });
});

describe("policy, tokens, socketMode, httpHosts", () => {
  const hash = `sha256:${"ab".repeat(32)}`;

  it("reads a policy and tokens from the file", async () => {
    const config = await fromYaml(`
tokens:
  ops: "${hash}"
policy:
  billing:
    publish: [billing.>, orders.*]
    subscribe: [orders.>/billing, audit]
    settings: [orders.>/billing]
  ops:
    admin: [">"]
  "*":
    subscribe: [public.>]
`);
    expect(config.tokens).toEqual({ ops: hash });
    expect(config.policy).toEqual({
      billing: { publish: ["billing.>", "orders.*"], subscribe: ["orders.>/billing", "audit"], settings: ["orders.>/billing"] },
      ops: { admin: [">"] },
      "*": { subscribe: ["public.>"] },
    });
  });

  it.each([
    ["policy: []\n", 'key "policy": must be a mapping of identity to permissions'],
    ["policy: {}\n", 'key "policy": is empty'],
    ["policy:\n  bad id!:\n    publish: [a]\n", 'key "policy.bad id!": is not an identity'],
    ["policy:\n  a:\n    read: [x]\n", 'key "policy.a.read": is not a permission; the permissions are publish, subscribe, settings, admin'],
    ["policy:\n  a:\n    publish: x\n", 'key "policy.a.publish": must be a list of patterns'],
    ["policy:\n  a:\n    publish: [7]\n", 'key "policy.a.publish[0]": must be text'],
    ["policy:\n  a:\n    publish: [orders.>.x]\n", "> stands for the rest of a name and must be the last segment"],
    ["policy:\n  a:\n    publish: [Orders]\n", 'segment "Orders" is not a name'],
    ["policy:\n  a:\n    publish: [orders/billing]\n", "a channel pattern has no /GROUP part"],
    ["policy:\n  a:\n    subscribe: [orders/Billing]\n", "the group pattern"],
    ["policy:\n  a: [x]\n", "must be a mapping of permission to patterns"],
    ["tokens:\n  ops: secret\n", 'key "tokens.ops": must be the token\'s SHA-256'],
    [`tokens:\n  "bad name": "${hash}"\n`, "is not an identity name"],
    [`tokens:\n  local: "${hash}"\n`, "is the unix socket's identity"],
  ])("refuses %j", async (yaml, message) => {
    expect((await yamlRefusal(yaml)).message).toContain(message);
  });

  it("reads socketMode as octal and refuses modes without owner read and write", async () => {
    expect((await fromYaml('socketMode: "0660"\n')).socketMode).toBe(0o660);
    expect((await fromYaml("socketMode: 600\n")).socketMode).toBe(0o600);
    expect((await resolveConfig({ env: { WEFT_SOCKET_MODE: "0640" } })).socketMode).toBe(0o640);
    expect((await yamlRefusal('socketMode: "0400"\n')).message).toContain("does not let the sidecar's own user read and write the socket");
    expect((await yamlRefusal('socketMode: "0999"\n')).message).toContain("is not a file mode");
    expect(defaultConfig().socketMode).toBe(0o600);
  });

  it("reads httpHosts as a list or comma-separated text, and refuses what is not a host", async () => {
    expect((await fromYaml("httpHosts: [weft.example, 10.0.0.7]\n")).httpHosts).toEqual(["weft.example", "10.0.0.7"]);
    expect((await resolveConfig({ env: {}, flags: { httpHosts: "a.example, B.example" } })).httpHosts).toEqual(["a.example", "b.example"]);
    expect((await yamlRefusal("httpHosts: [weft.example:80]\n")).message).toContain("is not a host name or an IP address (without a port)");
    expect((await fromYaml('httpHosts: ["[::1]", "fd00::7"]\n')).httpHosts).toEqual(["::1", "fd00::7"]);
  });
});
