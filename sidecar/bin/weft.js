#!/usr/bin/env node
// The `weft` command. It runs the JavaScript that `npm ci` (npm run build) compiled into
// dist/ while that is newer than every source file, and otherwise the TypeScript itself
// through tsx, whose loader costs ~0.3 s and ~35 MiB more at start.
import { readdirSync, statSync } from "node:fs";

const root = new URL("../../", import.meta.url);

/** Whether dist/ was built after the last change to the code, its files and its config. */
function distIsCurrent() {
  let built;
  try {
    built = statSync(new URL("dist/BUILT", root)).mtimeMs;
  } catch {
    return false;
  }
  const changed = (path) => statSync(new URL(path, root)).mtimeMs > built;
  if (["package.json", "tsconfig.json", "tsconfig.build.json"].some(changed)) return false;
  // Directories too: a file added, removed or renamed changes its directory's mtime.
  return !["src", "sidecar"].some((dir) => changed(dir) || readdirSync(new URL(dir, root), { recursive: true }).some((p) => changed(`${dir}/${p}`)));
}

if (distIsCurrent()) {
  await import("../../dist/sidecar/cli.js");
} else {
  const { register } = await import("tsx/esm/api");
  register();
  await import("../cli.ts");
}
