import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { buildProgram } from "../sidecar/cli.js";
import { SETTING_NAMES } from "../sidecar/config.js";

// Each setting is named in three places beside sidecar/config.ts's table: the `weft sidecar`
// options (sidecar/cli.ts), and the settings table of docs/configuration.md. A setting added,
// renamed or given a flag in one of them and not the others fails here.

/** ConfigFlags key → the flag's long name: tlsCert → --tls-cert. */
const flagName = (key: string): string => `--${key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;
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
    const expected = SETTING_NAMES.map((s) => ({
      key: s.key,
      env: s.env,
      flags: s.flag === undefined ? [] : s.flag === "fsync" ? ["--fsync", "--no-fsync"] : [flagName(s.flag)],
    }));
    expect(documented.filter((r) => r.env !== "").sort((a, b) => a.key.localeCompare(b.key))).toEqual(expected.sort((a, b) => a.key.localeCompare(b.key)));
    // Rows without a variable are the keys only a config file has.
    expect(documented.filter((r) => r.env === "").map((r) => r.key).sort()).toEqual([...FILE_ONLY].sort());
  });

  it("match `weft sidecar`'s options one to one (besides --config)", () => {
    const fromSettings = SETTING_NAMES.flatMap((s) => (s.flag === undefined ? [] : s.flag === "fsync" ? ["--fsync", "--no-fsync"] : [flagName(s.flag)]));
    expect(sidecarOptions().sort()).toEqual(["--config", ...fromSettings].sort());
  });
});
