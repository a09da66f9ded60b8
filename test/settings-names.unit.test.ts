import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { buildProgram } from "../sidecar/cli.js";
import { SETTINGS } from "../sidecar/settings/index.js";

// Each setting of the schema (sidecar/settings/schema.ts) is named again where users meet it:
// the `weft sidecar` options (sidecar/cli.ts adds them from the schema, beside its own), and
// the settings tables of docs/configuration.md (generated from the schema, but editable by
// hand). A setting's names missing from one of them, or a name there that no setting has,
// fails here.

/** A setting's flags as the CLI and the docs spell them: --fsync has a --no-fsync form. */
const flagsOf = (s: (typeof SETTINGS)[number]): string[] =>
  s.flag === undefined ? [] : s.negation !== undefined ? [s.flag, `--no-${s.flag.slice(2)}`] : [s.flag];
/** Keys a config file has that are not settings with a variable: per-channel retention, tokens and the policy. */
const FILE_ONLY = ["channels.NAME.maxAge", "tokens", "policy"];

interface DocRow {
  key: string;
  env: string;
  flags: string[];
}

/** The rows of docs/configuration.md's settings table (| `key` | `VARIABLE` | `--flag` | …). */
function documentedSettings(): DocRow[] {
  const text = readFileSync(new URL("../docs/configuration.md", import.meta.url), "utf8");
  const rows: DocRow[] = [];
  for (const line of text.split("\n")) {
    if (!line.startsWith("| `")) continue;
    const [key, env, flag] = line.split("|").slice(1, 4).map((cell) => cell.trim());
    const names = (cell: string): string[] => [...cell.matchAll(/`([^`]+)`/g)].map((m) => m[1]!);
    rows.push({ key: names(key!)[0]!, env: names(env!)[0] ?? "", flags: names(flag!) });
  }
  return rows;
}

function sidecarOptions(): string[] {
  const sidecar = buildProgram({ code: 0 }).commands.find((c) => c.name() === "sidecar")!;
  return sidecar.options.map((o) => o.long!).filter((l) => l !== "--help");
}

describe("every setting's names", () => {
  it("are in docs/configuration.md's table, with the setting's variable and flag", () => {
    const documented = documentedSettings();
    const expected = SETTINGS.map((s) => ({ key: s.key, env: s.env, flags: flagsOf(s) }));
    expect(documented.filter((r) => r.env !== "").sort((a, b) => a.key.localeCompare(b.key))).toEqual(expected.sort((a, b) => a.key.localeCompare(b.key)));
    // Rows without a variable are the keys only a config file has.
    expect(documented.filter((r) => r.env === "").map((r) => r.key).sort()).toEqual([...FILE_ONLY].sort());
  });

  it("match `weft sidecar`'s options one to one (besides --config)", () => {
    const fromSettings = SETTINGS.flatMap(flagsOf);
    expect(sidecarOptions().sort()).toEqual(["--config", ...fromSettings].sort());
  });
});
