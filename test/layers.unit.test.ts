import { readFileSync, readdirSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";

// Which folders of src/ a folder may import. The client ships alone as the package
// weft-mesh and must not pull in server code; src/wire is what the client and the servers
// share, so it imports nothing above the generated code and the contract.

const SRC = fileURLToPath(new URL("../src/", import.meta.url));

/** The src/ folders (e.g. "gen", "wire") that the files of `folder` import, with the importing file. */
function importedFolders(folder: string): { file: string; imports: string }[] {
  const found: { file: string; imports: string }[] = [];
  for (const name of readdirSync(join(SRC, folder), { recursive: true }).map(String)) {
    if (!name.endsWith(".ts")) continue;
    const file = join(SRC, folder, name);
    for (const m of readFileSync(file, "utf8").matchAll(/(?:from|import)\s*\(?\s*["'](\.[^"']+)["']/g)) {
      const target = relative(SRC, join(dirname(file), m[1]!));
      found.push({ file: relative(SRC, file), imports: target.split("/")[0]! });
    }
  }
  return found;
}

function outside(folder: string, allowed: string[]): string[] {
  return importedFolders(folder)
    .filter((i) => i.imports !== folder && !allowed.includes(i.imports))
    .map((i) => `${i.file} imports src/${i.imports}`);
}

describe("src/ layers", () => {
  it("the client imports only the wire codecs and the generated code", () => {
    expect(importedFolders("client").length).toBeGreaterThan(0);
    expect(outside("client", ["wire", "gen"])).toEqual([]);
  });

  it("the wire codecs import only the generated code and the contract", () => {
    expect(importedFolders("wire").length).toBeGreaterThan(0);
    expect(outside("wire", ["gen", "contract"])).toEqual([]);
  });
});
