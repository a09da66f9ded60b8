import type { SidecarConfig } from "../sidecar.js";
import type { ValueType } from "./value-types.js";

/** The values of SidecarConfig that settings set; the rest comes from the config file's structured sections. */
type Settable = Omit<SidecarConfig, "channels" | "policy" | "tokens">;
type Leaf = string | number | boolean | readonly unknown[];

/** Where a setting's value goes in SidecarConfig: "listen", or "retention.maxAgeMs" for a value of a nested object. */
export type FieldPath = {
  [K in keyof Settable & string]-?: NonNullable<Settable[K]> extends Leaf ? K : `${K}.${keyof NonNullable<Settable[K]> & string}`;
}[keyof Settable & string];

/** The type of the value at a field path. */
export type FieldType<P extends FieldPath> = P extends `${infer Outer}.${infer Inner}`
  ? Outer extends keyof Settable
    ? Inner extends keyof NonNullable<Settable[Outer]>
      ? NonNullable<Settable[Outer]>[Inner]
      : never
    : never
  : P extends keyof Settable
    ? Settable[P]
    : never;

/**
 * One sidecar setting: its names in each source, its type, default and description. The
 * schema (schema.ts) is a list of these, and the config file's keys, the environment
 * variables, the `weft sidecar` flags, SidecarConfig's values and the docs' settings table
 * are all read from it.
 */
export interface Setting<K extends string = string, P extends FieldPath = FieldPath, F extends Flag | undefined = Flag | undefined> {
  /** The key in a config file; "retention.maxAge" is `maxAge` under the section `retention`. */
  readonly key: K;
  /** Where the value goes in SidecarConfig. */
  readonly field: P;
  /** The environment variable: WEFT_ and the key in upper snake case. */
  readonly env: string;
  /** The `weft sidecar` flag, if the setting has one. */
  readonly flag?: F;
  /** A boolean flag that has a `--no-` form too: that form's help. */
  readonly negation?: string;
  /** How a value is read and checked, and how allowed values are described. */
  readonly type: ValueType<FieldType<P>>;
  /** The value when nothing sets it; a function for one found at start; undefined for none (the field is left unset). */
  readonly default: FieldType<P> | (() => FieldType<P>) | undefined;
  /** How help and docs show the default, when the value alone does not say it. */
  readonly defaultText?: string;
  /** A rule involving other settings (checked in cross-checks.ts), added to the allowed values. */
  readonly rule?: string;
  /** What the setting does, one line: the flag's help and the start of the docs' description. */
  readonly doc: string;
  /** More for the docs' description, in sentences after the one line (Markdown, links allowed). */
  readonly docMore?: string;
  /** The table of docs/configuration.md that lists it. */
  readonly table: "settings" | "mesh";
}

/** A flag's long name. */
export type Flag = `--${string}`;

/**
 * A setting, with its key, field path and flag kept as literal types: its type and default
 * are checked against SidecarConfig's field, and the flags' and keys' types name them.
 */
export function setting<K extends string, P extends FieldPath, F extends Flag | undefined = undefined>(s: Setting<K, P, F>): Setting<K, P, F> {
  return s;
}

type CamelCase<S extends string> = S extends `${infer Head}-${infer Tail}` ? `${Head}${CamelCase<Capitalize<Tail>>}` : S;

/** The property commander stores a flag's value under: --max-event-bytes → maxEventBytes. */
export type FlagAttribute<F> = F extends `--${infer Name}` ? CamelCase<Name> : never;

/** {@link FlagAttribute} at run time; the same rule as commander's `Option.attributeName()`. */
export function flagAttribute(flag: Flag): string {
  return flag.slice(2).replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());
}

/** A value a flag may be given: text as the command line gives it, or a typed value from code. */
export type FlagValue = string | number | boolean | readonly string[];

/** Flags, by the property commander stores them under, of the settings `S`. */
export type FlagsOf<S extends Setting> = { [T in S as FlagAttribute<T["flag"]>]?: FlagValue | undefined };

/** The values a setting allows, for docs (Markdown code spans): its type's, and its rule involving other settings. */
export function allowedText(s: Setting): string {
  return s.rule === undefined ? s.type.allowed : `${s.type.allowed}, ${s.rule}`;
}

/** A setting's default as docs show it (Markdown code spans), or undefined when it has none. */
export function defaultText(s: Setting): string | undefined {
  if (s.defaultText !== undefined) return s.defaultText;
  const value = s.default;
  if (value === undefined) return undefined;
  if (typeof value === "function") throw new Error(`the setting ${s.key} computes its default: give it a defaultText`);
  if (Array.isArray(value) && value.length === 0) return "none";
  const type: ValueType<unknown> = s.type;
  return `\`${type.format(value)}\``;
}
