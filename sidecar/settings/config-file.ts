import { open } from "node:fs/promises";
import { dirname, resolve } from "node:path";
import { WeftError } from "../../src/contract/errors.js";
import { checkChannel } from "../../src/contract/validate.js";
import type { Retention } from "../../src/log/event-log.js";
import { type PolicyConfig, type TokensConfig, readPolicy, readTokens } from "../access-config.js";
import { formatSize } from "../units.js";
import { ConfigError, type ConfigSource, describe, kindOf } from "./config-error.js";
import { FILE_ONLY, SECTIONS, SETTINGS, type SchemaSetting, type SettingKey, settingOf } from "./schema.js";
import { suggest } from "./suggest.js";
import { readValue } from "./value-types.js";

/** Config files larger than this are refused: a config file is a page of settings, not data. */
export const MAX_CONFIG_FILE_BYTES = 1024 * 1024;

/** Most channels a config file may give their own retention. */
const MAX_CHANNELS = 10_000;

/** What a config file sets: checked values by setting key, per-channel retention, and who may call. */
export interface FileSettings {
  values: Map<SettingKey, unknown>;
  channels: Record<string, Partial<Retention>>;
  /** Who may call: only a config file sets it (a policy is structured data, not one value). */
  policy?: PolicyConfig;
  tokens: TokensConfig;
}

const BY_KEY: ReadonlyMap<string, SchemaSetting> = new Map(SETTINGS.map((s) => [s.key, s]));
/** Keys of each section, in the schema's order. */
const SECTION_KEYS = new Map([...SECTIONS.keys()].map((name) => [name, SETTINGS.filter((s) => s.key.startsWith(`${name}.`)).map((s) => s.key.slice(name.length + 1))]));
/** Keys at the top of a config file, in the schema's order, for "did you mean" and the list of settings. */
const TOP_KEYS = [...SETTINGS.filter((s) => !s.key.includes(".")).map((s) => s.key), ...SECTIONS.keys(), ...FILE_ONLY.map((f) => f.key)];
const RETENTION_KEYS = SECTION_KEYS.get("retention")!;

/**
 * Reads a config file and checks every value in it. Relative paths in it are made relative
 * to the file's directory.
 * @throws ConfigError naming the file, and the key when a value is at fault.
 */
export async function loadConfigFile(path: string): Promise<FileSettings> {
  const settings = readFileSettings(await readConfigFile(path), { kind: "file", path });
  for (const [key, value] of settings.values) {
    if (BY_KEY.get(key)!.type.relativeToFile) settings.values.set(key, resolve(dirname(path), value as string));
  }
  return settings;
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

/** Checks a parsed config file: every key a setting of the schema or a structured section, every value of its type. */
function readFileSettings(doc: unknown, source: ConfigSource): FileSettings {
  const settings: FileSettings = { values: new Map(), channels: Object.create(null), tokens: {} };
  if (doc === null || doc === undefined) return settings; // an empty file: all defaults
  const fail = (key: string, problem: string): never => {
    throw new ConfigError(source, key, problem);
  };
  const read = (setting: SchemaSetting, value: unknown): void => {
    settings.values.set(setting.key, readValue<unknown>(setting.type, value, source, setting.key, false));
  };
  const top = mapping(doc, source, "", "a mapping of settings (e.g. `listen: 127.0.0.1:7420`)");
  for (const [key, value] of top) {
    const sectionKeys = SECTION_KEYS.get(key);
    const setting = BY_KEY.get(key);
    if (sectionKeys) {
      for (const [sub, v] of mapping(value, source, key, SECTIONS.get(key)!)) {
        const flat = `${key}.${sub}`;
        if (!sectionKeys.includes(sub)) unknownKey(source, flat, sub, sectionKeys, key);
        read(BY_KEY.get(flat)!, v);
      }
    } else if (key === "channels") {
      const entries = mapping(value, source, key, 'a mapping of channel name to retention (e.g. `"orders.created": { maxAge: 1d }`)');
      if (entries.size > MAX_CHANNELS) {
        throw new ConfigError(source, key, `has ${entries.size} channels; at most ${MAX_CHANNELS} may have their own retention`);
      }
      for (const [name, v] of entries) settings.channels[name] = readChannel(name, v, source);
    } else if (key === "policy") {
      settings.policy = readPolicy(mapping(value, source, key, "a mapping of identity to permissions (e.g. `billing: { publish: [billing.>] }`)"), fail);
    } else if (key === "tokens") {
      settings.tokens = readTokens(mapping(value, source, key, 'a mapping of identity to the token\'s SHA-256 (e.g. `billing: "sha256:…"`)'), fail);
    } else if (setting && !key.includes(".")) {
      read(setting, value);
    } else {
      unknownKey(source, key, key, TOP_KEYS, "");
    }
  }
  return settings;
}

/** One channel's own retention: maxAge and/or maxBytes, of the types of retention's. */
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
    if (sub === "maxAge") retention.maxAgeMs = readValue(settingOf("retention.maxAge").type, v, source, at, false);
    else if (sub === "maxBytes") retention.maxBytes = readValue(settingOf("retention.maxBytes").type, v, source, at, false);
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

function unknownKey(source: ConfigSource, at: string, key: string, known: readonly string[], parent: string): never {
  const guess = suggest(key, known);
  const where = parent ? ` in ${parent}` : "";
  const hint = guess ? `did you mean "${guess}"? ` : "";
  throw new ConfigError(source, at, `is not a setting${where}; ${hint}the settings are ${known.join(", ")}`);
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
