/**
 * `npm run gen:docs`: writes the settings tables of docs/configuration.md from the settings'
 * schema (sidecar/settings/schema.ts). Each table sits between a BEGIN and an END comment
 * naming it; the text around them is written by hand. test/settings-docs.unit.test.ts fails
 * when the file differs from what this writes.
 *
 *   npm run gen:docs
 */
import { readFileSync, writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { FILE_ONLY, SETTINGS } from "../sidecar/settings/index.js";
import { type Setting, allowedText, defaultText } from "../sidecar/settings/setting.js";

export const CONFIGURATION_DOC = fileURLToPath(new URL("../docs/configuration.md", import.meta.url));

type Table = Setting["table"];

const HEADER = ["| key | variable | flag | default | allowed | what |", "| --- | --- | --- | --- | --- | --- |"];
const TABLE = /(<!-- BEGIN settings table: (\w+) [^\n]*-->\n)[\s\S]*?(<!-- END settings table: \2 -->)/g;

/** The rows of one table: its settings in the schema's order; the main table ends with the keys only a config file has. */
export function settingsTable(table: Table): string {
  const rows = SETTINGS.filter((s) => s.table === table).map((s) => {
    const flags = s.flag === undefined ? [] : s.negation === undefined ? [s.flag] : [s.flag, `--no-${s.flag.slice(2)}`];
    const what = s.docMore === undefined ? s.doc : `${s.doc}. ${s.docMore}`;
    return row([code(s.key), code(s.env), flags.map(code).join(" / "), defaultText(s) ?? "none", allowedText(s), what]);
  });
  if (table === "settings") rows.push(...FILE_ONLY.map((f) => row([f.cell, "", "", f.default, f.allowed, f.doc])));
  return [...HEADER, ...rows].join("\n");
}

/**
 * `markdown` with every generated table replaced by what the schema gives.
 * @throws when a table is missing, or is named twice.
 */
export function withGeneratedTables(markdown: string): string {
  const seen: string[] = [];
  const result = markdown.replace(TABLE, (_, begin: string, name: string, end: string) => {
    if (name !== "settings" && name !== "mesh") throw new Error(`docs/configuration.md names the settings table ${name}; the tables are settings and mesh`);
    seen.push(name);
    return `${begin}${settingsTable(name)}\n${end}`;
  });
  for (const name of ["settings", "mesh"] satisfies Table[]) {
    const count = seen.filter((n) => n === name).length;
    if (count !== 1) throw new Error(`docs/configuration.md has ${count} settings tables named ${name} (<!-- BEGIN settings table: ${name} … --> … <!-- END settings table: ${name} -->); it needs one`);
  }
  return result;
}

function code(text: string): string {
  return `\`${text}\``;
}

function row(cells: string[]): string {
  for (const cell of cells) if (/[|\n]/.test(cell)) throw new Error(`a table cell may hold neither "|" nor a line break: ${cell}`);
  return `|${cells.map((cell) => (cell === "" ? " " : ` ${cell} `)).join("|")}|`;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const before = readFileSync(CONFIGURATION_DOC, "utf8");
  const after = withGeneratedTables(before);
  if (after !== before) writeFileSync(CONFIGURATION_DOC, after);
  console.log(after === before ? "docs/configuration.md: the settings tables are up to date" : "docs/configuration.md: settings tables written");
}
