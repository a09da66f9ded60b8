#!/usr/bin/env node
// `npm run build`, also run by `npm ci` and `npm pack` (prepare): compiles src/ and sidecar/
// into dist/ with tsc (tsconfig.build.json: JavaScript and .d.ts), copies the files the code
// reads beside itself (the dashboard's page, package.json), and writes dist/BUILT last.
// sidecar/bin/weft.js runs dist/ only when BUILT exists (and, in a checkout, is newer than
// every source file), so a failed or half-done build is never run. Without typescript
// (`npm ci --omit=dev` in a checkout) it builds nothing.
import { spawnSync } from "node:child_process";
import { cpSync, mkdirSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("..", import.meta.url));
const dist = join(root, "dist");

let tsc;
try {
  tsc = createRequire(import.meta.url).resolve("typescript/bin/tsc");
} catch {
  console.error("build: typescript is not installed (dev dependencies omitted); nothing built");
  process.exit(0);
}

rmSync(dist, { recursive: true, force: true });
const run = spawnSync(process.execPath, [tsc, "-p", join(root, "tsconfig.build.json")], { stdio: "inherit" });
if (run.status !== 0) {
  rmSync(dist, { recursive: true, force: true });
  console.error("build: tsc failed; dist/ removed");
  process.exit(run.status ?? 1);
}
for (const dir of ["src", "sidecar"]) {
  for (const file of readdirSync(join(root, dir), { recursive: true, withFileTypes: true })) {
    if (!file.isFile() || /\.(ts|js)$/.test(file.name)) continue; // code is compiled, the rest copied
    const from = join(file.parentPath ?? file.path, file.name);
    const to = join(dist, from.slice(root.length));
    mkdirSync(dirname(to), { recursive: true });
    cpSync(from, to);
  }
}
cpSync(join(root, "package.json"), join(dist, "package.json"));
writeFileSync(join(dist, "BUILT"), `${new Date().toISOString()}\n`);
