#!/usr/bin/env node
// The `weft` command. An installed package (npm install weft-mesh) holds only the compiled
// JavaScript in dist/ and runs it. In a checkout of the repository, dist/ is what `npm ci`
// (npm run build) compiled, and runs while it is newer than every source file; after an edit
// the TypeScript runs through tsx (a dev dependency) until the next `npm run build`.
import { existsSync, readdirSync, statSync } from "node:fs";

const root = new URL("../../", import.meta.url);
const built = builtAt();

if (built !== undefined && (!isCheckout() || isCurrent(built))) {
  await import("../../dist/sidecar/main.js");
} else if (isCheckout()) {
  let register;
  try {
    ({ register } = await import("tsx/esm/api"));
  } catch {
    console.error("weft: dist/ is missing or older than the sources, and tsx (a dev dependency) is not installed: run `npm ci` (with dev dependencies), which builds dist/");
    process.exit(1);
  }
  register();
  await import("../main.ts");
} else {
  console.error("weft: this package has no dist/ (an incomplete install?): reinstall weft-mesh");
  process.exit(1);
}

/** When dist/ was last built completely, or undefined: BUILT is written last by the build. */
function builtAt() {
  try {
    return statSync(new URL("dist/BUILT", root)).mtimeMs;
  } catch {
    return undefined;
  }
}

/** A checkout has the TypeScript sources; the published package does not ship them. */
function isCheckout() {
  return existsSync(new URL("sidecar/cli.ts", root));
}

/** Whether dist/ was built after the last change to the code, its files and its config. */
function isCurrent(built) {
  const changed = (path) => statSync(new URL(path, root)).mtimeMs > built;
  if (["package.json", "tsconfig.json", "tsconfig.build.json"].some(changed)) return false;
  // Directories too: a file added, removed or renamed changes its directory's mtime.
  return !["src", "sidecar"].some((dir) => changed(dir) || readdirSync(new URL(dir, root), { recursive: true }).some((p) => changed(`${dir}/${p}`)));
}
