import { spawn, spawnSync } from "node:child_process";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

/**
 * Running Python from the language e2e tests. The interpreter is /usr/bin/python3 (Debian's,
 * which sees python3-grpcio, python3-protobuf and python3-grpc-tools) unless WEFT_PYTHON
 * names another one.
 */

export const REPO = fileURLToPath(new URL("../../..", import.meta.url));
export const PYTHON = process.env.WEFT_PYTHON ?? "/usr/bin/python3";
/** The example service (examples/python/README.md). */
export const EXAMPLE = join(REPO, "examples/python/weft_service.py");
/** The bad-input client of python-bad-input.e2e.test.ts. */
export const BAD_INPUT = join(REPO, "test/e2e-lang/python/bad_input.py");

export const INSTALL_HINT =
  "install them with `apt-get install python3-grpcio python3-protobuf python3-grpc-tools`, " +
  "or set WEFT_PYTHON to a python3 that has grpcio, protobuf and grpcio-tools";

let probed: { problem: string | undefined } | undefined;

/** Why PYTHON cannot run these tests, or undefined when it can. Probed once per process. */
export function pythonProblem(): string | undefined {
  if (!probed) {
    const r = spawnSync(PYTHON, ["-c", "import grpc, google.protobuf, grpc_tools"], { encoding: "utf8" });
    let problem: string | undefined;
    if (r.error) problem = `${PYTHON} cannot be run (${r.error.message})`;
    else if (r.status !== 0) problem = `${PYTHON} cannot import grpc, google.protobuf and grpc_tools (${r.stderr.trim().split("\n").pop()})`;
    probed = { problem };
  }
  return probed.problem;
}

/** How a Python process ended, and what it printed. */
export interface PythonRun {
  code: number | null;
  stdout: string;
  stderr: string;
  /** stdout split into lines, without the empty last one. */
  lines: string[];
}

/**
 * Runs `PYTHON script args...` without blocking the event loop (the sidecar under test runs
 * in this process), and resolves when it exits. Killed after `timeoutMs` (a safety net).
 */
export function runPython(script: string, args: string[], timeoutMs = 90_000): Promise<PythonRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(PYTHON, [script, ...args], {
      cwd: REPO,
      env: { ...process.env, PYTHONUNBUFFERED: "1", PYTHONDONTWRITEBYTECODE: "1" },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (b: Buffer) => (stdout += b.toString()));
    child.stderr.on("data", (b: Buffer) => (stderr += b.toString()));
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`${script} did not finish within ${timeoutMs} ms\nstdout:\n${stdout}\nstderr:\n${stderr}`));
    }, timeoutMs);
    child.on("error", (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr, lines: stdout.split("\n").filter((l) => l !== "") });
    });
  });
}
