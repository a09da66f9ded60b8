import { readFileSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parse as parseYaml } from "yaml";
import { CONFIGURATION_DOC, settingsTable, withGeneratedTables } from "../scripts/gen-config-docs.js";
import { buildProgram } from "../sidecar/cli.js";
import { ConfigError, type ConfigInput, FILE_ONLY, SETTINGS, defaultConfig, resolveConfig } from "../sidecar/settings/index.js";
import { SECTIONS } from "../sidecar/settings/schema.js";
import { type Setting, flagAttribute } from "../sidecar/settings/setting.js";
import type { ValueType } from "../sidecar/settings/value-types.js";

// The schema (sidecar/settings/schema.ts) is the one place a setting is declared; these are
// the rules its entries must follow, and the checks that what is derived from it (the docs'
// tables, the flags) is what users get.

const settings: readonly Setting[] = SETTINGS;

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "weft-settings-"));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

function sidecarCommand() {
  return buildProgram({ code: 0 }).commands.find((c) => c.name() === "sidecar")!;
}

describe("the schema", () => {
  it("names each setting's variable WEFT_ and its key in upper snake case (as `weft sidecar --help` says)", () => {
    for (const s of settings) expect(s.env, s.key).toBe(`WEFT_${s.key.replace(/[A-Z]/g, (c) => `_${c}`).replace(".", "_").toUpperCase()}`);
  });

  it("has no key, variable or flag twice", () => {
    for (const names of [settings.map((s) => s.key), settings.map((s) => s.env), settings.flatMap((s) => (s.flag ? [s.flag] : []))]) {
      expect(new Set(names).size).toBe(names.length);
    }
  });

  it("gives every default that its own type accepts, written as help and docs show it", () => {
    for (const s of settings) {
      const value = typeof s.default === "function" ? s.default() : s.default;
      if (value === undefined) continue;
      const type: ValueType<unknown> = s.type;
      expect(type.read(type.format(value), true), s.key).toEqual(value);
    }
  });

  it("is what defaultConfig() gives", () => {
    const config = defaultConfig();
    expect(config.maxEventBytes).toBe(1024 ** 2);
    expect(config.retention).toEqual({ maxAgeMs: 7 * 86_400_000, maxBytes: 1024 ** 3 });
    expect(config.tls).toBeUndefined();
    // Each call gives its own lists and objects: changing one config changes no other.
    config.peers.push("a:1");
    config.retention.maxBytes = 1;
    expect(defaultConfig().peers).toEqual([]);
    expect(defaultConfig().retention.maxBytes).toBe(1024 ** 3);
  });
});

describe("the flags made from it", () => {
  it("are stored by commander under the names ConfigFlags has", () => {
    const options = sidecarCommand().options;
    for (const s of settings) {
      if (s.flag === undefined) continue;
      expect(options.find((o) => o.long === s.flag)?.attributeName(), s.flag).toBe(flagAttribute(s.flag));
    }
  });

  it("say in their help what is allowed and the default", () => {
    const help = (flag: string): string => sidecarCommand().options.find((o) => o.long === flag)!.description;
    expect(help("--max-channels")).toBe("the most channels this sidecar holds (events or groups; dead-letter channels count): 1 to 10000000 (default: 10000)");
    expect(help("--peer-timeout")).toBe("how long a peer may be unreachable before the others take its share of each group: 100ms to 1h, shorter than dedupWindow (default: 30s)");
    // A setting named in a rule is shown as its flag, where it has one.
    expect(help("--peer-listen")).toContain("not the --listen address");
    expect(help("--node-id")).toContain("(default: the host name)");
    expect(help("--fsync")).toBe("sync each append batch to disk before acking it");
    expect(help("--no-fsync")).toBe("do not sync before acking (the default)");
  });

  it("add up when a list's flag is repeated, and --no-fsync sets fsync false", async () => {
    const program = buildProgram({ code: 0 });
    let options: Record<string, unknown> = {};
    program.commands.find((c) => c.name() === "sidecar")!.action((o: Record<string, unknown>) => void (options = o));
    await program.parseAsync(["node", "weft", "sidecar", "--peers", "a:1", "--peers", "b:2,c:3", "--http-hosts", "x", "--http-hosts", "y", "--no-fsync"]);
    expect(options).toEqual({ peers: "a:1,b:2,c:3", httpHosts: "x,y", fsync: false });
  });
});

describe("every setting, from every source", () => {
  // Text every setting refuses: too long for any value, and a NUL no value may hold.
  const hostile = ["x".repeat(100_000), "a\0b"];

  /** The source a setting's raw value comes from: a config file (JSON, nested as the key says), its variable or its flag. */
  async function inputs(s: Setting, value: unknown): Promise<[string, ConfigInput][]> {
    const [outer, inner] = s.key.split(".") as [string, string | undefined];
    const doc = inner === undefined ? { [outer]: value } : { [outer]: { [inner]: value } };
    const path = join(dir, `${s.key}.json`);
    await writeFile(path, JSON.stringify(doc));
    const all: [string, ConfigInput][] = [["file", { file: path, env: {} }]];
    if (typeof value === "string") all.push(["env", { env: { [s.env]: value } }]);
    if (typeof value === "string" && s.flag !== undefined) all.push(["flag", { env: {}, flags: { [flagAttribute(s.flag)]: value } }]);
    return all;
  }

  it.each(settings.map((s) => [s.key, s] as const))("%s refuses hostile and malformed values, naming the source and key, briefly", async (_key, s) => {
    // And, in a file, structures no setting is.
    for (const value of [...hostile, { nested: { deeper: [1, 2] } }, [[["x"]]]]) {
      for (const [kind, input] of await inputs(s, value)) {
        const error = await resolveConfig(input).then(
          () => undefined,
          (e: unknown) => e,
        );
        const label = `${s.key} from ${kind}: ${JSON.stringify(value).slice(0, 40)}`;
        expect(error, label).toBeInstanceOf(ConfigError);
        const e = error as ConfigError;
        expect(e.source.kind, label).toBe(kind);
        expect(e.key, label).toBe(s.key);
        expect(e.message.length, label).toBeLessThan(700);
      }
    }
  });
});

describe("docs/configuration.md", () => {
  it("holds the settings tables the schema generates (npm run gen:docs writes them)", () => {
    const text = readFileSync(CONFIGURATION_DOC, "utf8");
    expect(text, "docs/configuration.md differs from the schema: run npm run gen:docs").toBe(withGeneratedTables(text));
  });

  it("lists every setting in one of the tables", () => {
    const tables = `${settingsTable("settings")}\n${settingsTable("mesh")}`;
    for (const s of settings) expect(tables).toContain(`| \`${s.key}\` | \`${s.env}\` |`);
  });

  it("shows a config file that sets every setting, and that the sidecar accepts", async () => {
    const text = readFileSync(CONFIGURATION_DOC, "utf8");
    const example = /## The config file[\s\S]*?```yaml\n([\s\S]*?)```/.exec(text)![1]!;
    const doc = parseYaml(example) as Record<string, unknown>;
    const keys = Object.entries(doc).flatMap(([key, value]) =>
      SECTIONS.has(key) ? Object.keys(value as object).map((sub) => `${key}.${sub}`) : [key],
    );
    expect(keys.sort()).toEqual([...settings.map((s) => s.key), ...FILE_ONLY.map((f) => f.key)].sort());
    // Its TLS files exist only on the reader's disk.
    delete doc.tls;
    const path = join(dir, "example.json");
    await writeFile(path, JSON.stringify(doc));
    const config = await resolveConfig({ file: path, env: {} });
    expect(config.dataDir).toBe(doc.dataDir);
  });

  it("cannot lose a table: generating refuses a file without one", () => {
    const text = readFileSync(CONFIGURATION_DOC, "utf8");
    expect(() => withGeneratedTables(text.replace(/<!-- END settings table: mesh -->/, ""))).toThrow(/needs one/);
  });
});
