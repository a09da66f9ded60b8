import type { Retention } from "../../src/log/event-log.js";
import type { SidecarConfig } from "../sidecar.js";
import type { ConfigSource } from "./config-error.js";
import { loadConfigFile } from "./config-file.js";
import { type Sources, certifiedNodeId, checkCombinations } from "./cross-checks.js";
import { CONFIG_ENV, OTHER_ENV_VARS, SETTINGS, type SchemaSetting, type SettingKey } from "./schema.js";
import { type FieldPath, type FlagValue, type FlagsOf, flagAttribute } from "./setting.js";
import { suggest } from "./suggest.js";
import { readValue } from "./value-types.js";

/** The flags of `weft sidecar` that override configuration, by commander's property names. Values are checked like the rest. */
export type ConfigFlags = FlagsOf<SchemaSetting>;

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

/** Every environment variable {@link resolveConfig} reads. */
export const CONFIG_ENV_VARS: readonly string[] = [CONFIG_ENV, ...SETTINGS.map((s) => s.env)];

/** The configuration when nothing is set: each setting's default from the schema, no per-channel retention, no policy, no tokens. */
export function defaultConfig(): SidecarConfig {
  const config = { channels: {}, tokens: {} } as unknown as SidecarConfig;
  for (const s of SETTINGS) {
    const value = typeof s.default === "function" ? s.default() : s.default;
    if (value !== undefined) setField(config, s.field, Array.isArray(value) ? [...value] : value);
  }
  return config;
}

/**
 * Resolves the sidecar configuration from, lowest precedence first: {@link defaultConfig},
 * a YAML or JSON config file, environment variables, then flags. Pure apart from reading the
 * files (the config file, and the TLS files when TLS is set). Relative paths in a config
 * file are relative to the file's directory; relative paths elsewhere are relative to the
 * working directory.
 *
 * @throws ConfigError naming the first unusable value and its source.
 */
export async function resolveConfig(input: ConfigInput): Promise<SidecarConfig> {
  const values = new Map<SettingKey, unknown>();
  const sources = new Map<SettingKey, ConfigSource>();
  const found = (key: SettingKey, value: unknown, source: ConfigSource): void => {
    values.set(key, value);
    sources.set(key, source);
  };

  const file = input.file ?? nonEmpty(input.env[CONFIG_ENV]);
  const fromFile = file === undefined ? undefined : await loadConfigFile(file);
  for (const [key, value] of fromFile?.values ?? []) found(key, value, { kind: "file", path: file! });

  for (const s of SETTINGS) {
    const raw = nonEmpty(input.env[s.env]);
    const source: ConfigSource = { kind: "env", name: s.env };
    if (raw !== undefined) found(s.key, readValue<unknown>(s.type, raw, source, s.key, true), source);
  }
  warnAboutEnv(input.env, input.warn);

  const flags = input.flags as Record<string, FlagValue | undefined> | undefined;
  for (const s of SETTINGS) {
    const raw = s.flag === undefined ? undefined : flags?.[flagAttribute(s.flag)];
    if (raw === undefined) continue;
    const source: ConfigSource = { kind: "flag", name: s.flag! };
    found(s.key, readValue<unknown>(s.type, raw, source, s.key, typeof raw === "string"), source);
  }

  const config = defaultConfig();
  for (const s of SETTINGS) if (values.has(s.key)) setField(config, s.field, values.get(s.key));
  config.channels = channelRetention(config.retention, fromFile?.channels ?? {});
  config.policy = fromFile?.policy;
  config.tokens = fromFile?.tokens ?? {};
  checkCombinations(config, sources);
  if (config.tls) config.nodeId = await certifiedNodeId({ ...config, tls: config.tls }, sources);
  return config;
}

/** Each channel's own retention, the default retention filling in what it does not set. */
function channelRetention(retention: Retention, own: Record<string, Partial<Retention>>): Record<string, Retention> {
  // No prototype: a channel named "constructor" must not find Object's.
  const channels: Record<string, Retention> = Object.create(null);
  for (const [name, r] of Object.entries(own)) channels[name] = { ...retention, ...r };
  return channels;
}

/** Sets the value at `path`; a nested value gets a new object, so a default's is never changed. */
function setField(config: SidecarConfig, path: FieldPath, value: unknown): void {
  const [outer, inner] = path.split(".") as [string, string | undefined];
  const target = config as unknown as Record<string, unknown>;
  target[outer] = inner === undefined ? value : { ...(target[outer] as object | undefined), [inner]: value };
}

function nonEmpty(value: string | undefined): string | undefined {
  return value === undefined || value === "" ? undefined : value;
}

function warnAboutEnv(env: Record<string, string | undefined>, warn: ((message: string) => void) | undefined): void {
  if (!warn) return;
  const known = [...CONFIG_ENV_VARS, ...OTHER_ENV_VARS];
  for (const name of Object.keys(env)) {
    if (!name.startsWith("WEFT_") || known.includes(name)) continue;
    const guess = suggest(name, known);
    if (guess) warn(`ignoring environment variable ${name}: it is not a setting; did you mean ${guess}?`);
  }
}
