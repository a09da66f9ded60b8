import { Option } from "commander";
import { SETTINGS } from "./schema.js";
import { type Setting, defaultText } from "./setting.js";

/**
 * The options of a command that starts a sidecar (`weft sidecar`, `weft run`) that set
 * settings, in the schema's order. Each is named by its setting's flag; its help is the
 * setting's line, the values allowed and the default. A list's flag may be repeated.
 * commander stores each value under the flag's {@link FlagAttribute}, as text (or true/false
 * for a switch); resolveConfig checks it like any other source.
 */
export function settingOptions(): Option[] {
  return SETTINGS.flatMap((s): Option[] => {
    if (s.flag === undefined) return [];
    const option = new Option(s.type.arg === undefined ? s.flag : `${s.flag} ${s.type.arg}`, flagHelp(s));
    if (s.type.repeatable) option.argParser(joinList);
    return s.negation === undefined ? [option] : [option, new Option(`--no-${s.flag.slice(2)}`, s.negation)];
  });
}

/** A flag's help: what the setting does; for a flag that takes a value, what is allowed and the default. */
function flagHelp(s: Setting): string {
  if (s.type.arg === undefined) return plain(s.doc);
  const allowed = [s.type.help, s.rule].filter((t) => t !== undefined).join(", ");
  const value = defaultText(s);
  return `${plain(s.doc)}${allowed ? `: ${plain(allowed)}` : ""}${value === undefined ? "" : ` (default: ${plain(value)})`}`;
}

const FLAG_OF_KEY: ReadonlyMap<string, string> = new Map(SETTINGS.flatMap((s) => (s.flag === undefined ? [] : [[s.key, s.flag]])));

/** Docs text as help shows it: a code span that names a setting with a flag shows the flag; others lose their backticks. */
function plain(markdown: string): string {
  return markdown.replace(/`([^`]*)`/g, (_, code: string) => FLAG_OF_KEY.get(code) ?? code);
}

/** Joins a repeated list flag (`--peers a:1 --peers b:2`) into one comma-separated value. */
export function joinList(value: string, previous: string | undefined): string {
  return previous === undefined ? value : `${previous},${value}`;
}
