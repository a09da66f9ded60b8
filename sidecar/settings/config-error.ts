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

/** Describes where a value came from, for messages. */
export function describeSource(source: ConfigSource, key: string): string {
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
export function describe(value: unknown): string {
  if (value === null || value === undefined) return "empty";
  if (value instanceof Map) return "a mapping";
  if (Array.isArray(value)) return "a list";
  if (typeof value === "string") return JSON.stringify(value.length > 64 ? `${value.slice(0, 64)}…` : value);
  if (typeof value === "number" || typeof value === "boolean") return String(value);
  return `a ${typeof value}`;
}

/** What kind of value this is, for "must be X, not Y" messages. */
export function kindOf(value: unknown): string {
  if (value === null || value === undefined) return "empty";
  if (value instanceof Map) return "a mapping";
  if (Array.isArray(value)) return "a list";
  if (typeof value === "string") return "text";
  if (typeof value === "number") return "a number";
  if (typeof value === "boolean") return "true or false";
  return `a ${typeof value}`;
}
