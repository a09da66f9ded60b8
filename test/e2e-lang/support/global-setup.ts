import { spawnSync } from "node:child_process";
import { PYTHON, REPO, pythonProblem } from "./python.js";

/**
 * Runs `npm run gen:python` once before the language e2e tests, so every suite uses stubs
 * generated from the proto as it is now. Without a usable Python it does nothing: the
 * suites say why they are skipped (or fail, in CI).
 */
export default function generatePythonStubs(): void {
  if (pythonProblem() !== undefined) return;
  const r = spawnSync("npm", ["run", "--silent", "gen:python"], {
    cwd: REPO,
    encoding: "utf8",
    env: { ...process.env, WEFT_PYTHON: PYTHON },
  });
  if (r.status !== 0) {
    throw new Error(`npm run gen:python failed (exit ${r.status}):\n${r.stdout}${r.stderr}${r.error?.message ?? ""}`);
  }
}
