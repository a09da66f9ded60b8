import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CONFIG_ENV_VARS, ConfigError, type ConfigInput, MAX_CONFIG_FILE_BYTES, resolveConfig } from "../sidecar/config.js";
import { defaultConfig } from "../sidecar/sidecar.js";
import { formatDuration, formatSize, parseDuration, parseSize } from "../sidecar/units.js";

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
dedupWindow: 5m
retention:
  maxAge: 3d
  maxBytes: 10GiB
channels:
  orders.created: { maxAge: 1d }
  audit.log:
    maxBytes: 100GiB
sweepInterval: 30s
shutdownGrace: 2s
`);
    expect(config).toEqual({
      dataDir: "/var/lib/weft",
      listen: "0.0.0.0:7000",
      fsync: true,
      maxEventBytes: 2 * 1024 ** 2,
      maxBatchEvents: 200,
      maxSubscriptions: 500,
      maxMessageBytes: 32 * 1024 ** 2,
      dedupWindowMs: 300_000,
      retention: { maxAgeMs: 3 * 86_400_000, maxBytes: 10 * 1024 ** 3 },
      // A channel's own retention fills in from the default retention.
      channels: {
        "orders.created": { maxAgeMs: 86_400_000, maxBytes: 10 * 1024 ** 3 },
        "audit.log": { maxAgeMs: 3 * 86_400_000, maxBytes: 100 * 1024 ** 3 },
      },
      sweepIntervalMs: 30_000,
      shutdownGraceMs: 2000,
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
        WEFT_SWEEP_INTERVAL: "1500",
        WEFT_SHUTDOWN_GRACE: "0",
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
      sweepIntervalMs: 1500,
      shutdownGraceMs: 0,
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
      "WEFT_DEDUP_WINDOW",
      "WEFT_RETENTION_MAX_AGE",
      "WEFT_RETENTION_MAX_BYTES",
      "WEFT_SWEEP_INTERVAL",
      "WEFT_SHUTDOWN_GRACE",
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

    const small = await refusal({ env: { WEFT_MAX_MESSAGE_BYTES: "512KiB" } });
    expect(small.message).toMatch(/^environment variable WEFT_MAX_MESSAGE_BYTES: 512KiB is smaller than maxEventBytes \(1MiB, from the default\)/);
  });
});
