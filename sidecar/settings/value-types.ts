import { NODE_ID_RULE, isNodeId } from "../../src/contract/validate.js";
import { addressProblem } from "../address.js";
import { DURATION_RULE, SIZE_RULE, formatDuration, formatSize, parseDuration, parseSize } from "../units.js";
import { ConfigError, type ConfigSource, describe, kindOf } from "./config-error.js";

/**
 * The type of a setting's value: how a raw value from a config file, an environment variable
 * or a flag is checked and read, and how the allowed values and a default are written in
 * `--help` and in docs/configuration.md. Texts may hold Markdown code spans (backticks) and
 * nothing else of Markdown: help shows them without the backticks.
 */
export interface ValueType<T> {
  /**
   * Checks a raw value and returns it as SidecarConfig holds it. `text` is true for a value
   * that can only be text (an environment variable, a flag given as text): it reads "yes" as
   * a boolean and "42" as a whole number, which YAML would give as a boolean and a number.
   * @throws Problem saying what is wrong and what is allowed, without where the value came from.
   */
  read(value: unknown, text: boolean): T;
  /** The flag's argument in help, e.g. "<size>"; undefined for a switch, which takes none. */
  readonly arg: string | undefined;
  /** The values allowed, for the docs' table. */
  readonly allowed: string;
  /** What a flag's help says of the values allowed; undefined when its argument says enough. */
  readonly help: string | undefined;
  /** A value as a person writes it, for defaults in help and docs. */
  format(value: T): string;
  /** A relative value in a config file is relative to the file's directory (a path). */
  readonly relativeToFile?: true;
  /** A list: its flag may be repeated, and the values add up (comma-separated). */
  readonly repeatable?: true;
}

/** A value that cannot be used; the caller adds where it came from. */
export class Problem extends Error {}

/**
 * Reads a raw value with `type`.
 * @throws ConfigError naming `source` and `key` when the value cannot be used.
 */
export function readValue<T>(type: ValueType<T>, raw: unknown, source: ConfigSource, key: string, text: boolean): T {
  try {
    return type.read(raw, text);
  } catch (e) {
    if (e instanceof Problem) throw new ConfigError(source, key, e.message);
    throw e;
  }
}

/** Most entries in a list setting (`peers`, `peersDns`, `httpHosts`); a larger mesh is found through DNS, not listed. */
export const MAX_PEER_ENTRIES = 1000;

const MAX_PATH_BYTES = 4096;

const TRUE = ["true", "1", "yes", "on"];
const FALSE = ["false", "0", "no", "off"];

/** true or false; in text also 1/0, yes/no, on/off, in any case. */
export const boolean: ValueType<boolean> = {
  read(value, text) {
    if (typeof value === "boolean") return value;
    if (text && typeof value === "string") {
      const v = value.trim().toLowerCase();
      if (TRUE.includes(v)) return true;
      if (FALSE.includes(v)) return false;
      throw new Problem(`${describe(value)} is not a boolean; use one of ${[...TRUE, ...FALSE].join(", ")}`);
    }
    const hint = typeof value === "string" ? " (YAML reads yes, no, on and off as text)" : "";
    throw new Problem(`${describe(value)} is not a boolean${hint}; use true or false`);
  },
  arg: undefined,
  allowed: "`true` or `false` (a variable also `1`, `yes`, `on`, `0`, `no`, `off`)",
  help: undefined,
  format: String,
};

/** A whole number from `min` to `max`; in text, digits only. */
export function integer(min: number, max: number): ValueType<number> {
  const range = `${min} to ${max}`;
  return {
    read(value, text) {
      let n: number | undefined;
      if (typeof value === "number") n = value;
      else if (text && typeof value === "string" && /^\s*\d+\s*$/.test(value)) n = Number(value);
      if (n === undefined || !Number.isSafeInteger(n)) throw new Problem(`${describe(value)} is not a whole number; use ${range}`);
      if (n < min || n > max) throw new Problem(`${n} is out of range; use ${range}`);
      return n;
    },
    arg: "<n>",
    allowed: range,
    help: range,
    format: String,
  };
}

/** A duration from `min` to `max` ms: milliseconds, or a number with a unit ("30s"). */
export function duration(min: number, max: number): ValueType<number> {
  return amount({ noun: "duration", arg: "<duration>", rule: DURATION_RULE, parse: parseDuration, format: formatDuration, below: "too short", above: "too long" }, min, max);
}

/** A size from `min` to `max` bytes: bytes, or a number with a unit ("512KiB"). */
export function size(min: number, max: number): ValueType<number> {
  return amount({ noun: "size", arg: "<size>", rule: SIZE_RULE, parse: parseSize, format: formatSize, below: "too small", above: "too large" }, min, max);
}

/** What an amount is measured in: how it is parsed and written, and what messages call it. */
interface Measure {
  noun: string;
  arg: string;
  /** What the amount may look like, for messages. */
  rule: string;
  parse(value: unknown): number | undefined;
  format(value: number): string;
  below: string;
  above: string;
}

/** An amount from `min` to `max`, a plain number or a number with a unit, in whole units of `measure`. */
function amount(measure: Measure, min: number, max: number): ValueType<number> {
  const range = `${measure.format(min)} to ${measure.format(max)}`;
  return {
    read(value) {
      if (isNegative(value)) throw new Problem(`${describe(value)} is negative; use a ${measure.noun} from ${range}`);
      const n = measure.parse(value);
      if (n === undefined) throw new Problem(`${describe(value)} is not a ${measure.noun}; use ${measure.rule}`);
      if (n < min) throw new Problem(`${describe(value)} is ${measure.below}; use ${range}`);
      if (n > max) throw new Problem(`${describe(value)} is ${measure.above}; use ${range}`);
      return n;
    },
    arg: measure.arg,
    allowed: range,
    help: range,
    format: measure.format,
  };
}

function isNegative(value: unknown): boolean {
  return (typeof value === "number" && value < 0) || (typeof value === "string" && value.trim().startsWith("-"));
}

/** One of `choices`, as text; case and surrounding spaces are ignored. `noun` names it in messages. */
export function oneOf<T extends string>(noun: string, arg: string, choices: readonly T[]): ValueType<T> {
  const or = (words: readonly string[]): string => `${words.slice(0, -1).join(", ")} or ${words.at(-1)!}`;
  return {
    read(value) {
      const v = typeof value === "string" ? value.trim().toLowerCase() : undefined;
      const choice = choices.find((c) => c === v);
      if (choice === undefined) throw new Problem(`${describe(value)} is not a ${noun}; use one of ${choices.join(", ")}`);
      return choice;
    },
    arg,
    allowed: `${or(choices.map((c) => `\`${c}\``))} (any case)`,
    help: or(choices),
    format: (v) => v,
  };
}

/** A directory's path: text, not empty, without NUL, at most 4096 bytes. */
export const directoryPath: ValueType<string> = {
  read(value) {
    if (typeof value !== "string") throw new Problem(`must be a directory path, not ${kindOf(value)}`);
    if (value.length === 0) throw new Problem("is empty; use a directory path");
    if (value.includes("\0")) throw new Problem("contains a NUL character; use a directory path");
    if (Buffer.byteLength(value) > MAX_PATH_BYTES) throw new Problem(`is longer than ${MAX_PATH_BYTES} bytes; use a shorter directory path`);
    return value;
  },
  arg: "<dir>",
  allowed: "a directory path",
  help: undefined,
  format: (v) => v,
  relativeToFile: true,
};

/** A file's path; `what` says what the file holds ("this sidecar's certificate (PEM)"). */
export function filePath(what: string): ValueType<string> {
  return {
    read(value) {
      if (typeof value !== "string") throw new Problem(`must be the path of ${what}, not ${kindOf(value)}`);
      if (value.length === 0) throw new Problem(`is empty; use the path of ${what}`);
      if (value.includes("\0")) throw new Problem(`contains a NUL character; use the path of ${what}`);
      if (Buffer.byteLength(value) > MAX_PATH_BYTES) throw new Problem(`is longer than ${MAX_PATH_BYTES} bytes; use a shorter path`);
      return value;
    },
    arg: "<file>",
    allowed: `the path of ${what}`,
    help: undefined,
    format: (v) => v,
    relativeToFile: true,
  };
}

/** A unix socket's file mode: octal digits ("0600", "660"; a YAML number 600 reads as 0600), with owner read and write. */
export const fileMode: ValueType<number> = {
  read(value) {
    const text = typeof value === "number" && Number.isInteger(value) ? String(value) : value;
    if (typeof text !== "string" || !/^0?[0-7]{3}$/.test(text.trim())) throw new Problem(`${describe(value)} is not a file mode; use octal digits such as 0600 or 0660`);
    const mode = Number.parseInt(text.trim(), 8);
    if ((mode & 0o600) !== 0o600) throw new Problem(`${describe(value)} does not let the sidecar's own user read and write the socket; use 0600 to 0777`);
    return mode;
  },
  arg: "<mode>",
  allowed: "octal, `0600` to `0777` (owner read and write)",
  help: "octal",
  format: (mode) => `0${mode.toString(8).padStart(3, "0")}`,
};

/** Host names (without a port): a list, or one comma-separated text; lowercase, IPv6 without brackets. */
export const hostList: ValueType<string[]> = {
  read(value) {
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
  },
  arg: "<name,...>",
  allowed: `up to ${MAX_PEER_ENTRIES} host names or IP addresses, without a port`,
  help: "host names or IP addresses, comma-separated; repeatable",
  format: (hosts) => hosts.join(","),
  repeatable: true,
};

/** This sidecar's name in the mesh (NODE_ID_RULE). */
export const nodeId: ValueType<string> = {
  read(value) {
    if (typeof value !== "string") {
      const hint = typeof value === "number" ? ` (quote a number in YAML: nodeId: "${value}")` : "";
      throw new Problem(`must be text, not ${kindOf(value)}${hint}; use ${NODE_ID_RULE}`);
    }
    if (!isNodeId(value)) throw new Problem(`${describe(value)} is not a node id; use ${NODE_ID_RULE}`);
    return value;
  },
  arg: "<id>",
  allowed: "1 to 64 letters, digits, `.`, `_`, `-`, starting with a letter or digit",
  help: "letters, digits, '.', '_', '-'",
  format: (v) => v,
};
