import { execFile, spawn, spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { afterEach, describe, expect, it } from "vitest";
import { within } from "../support/collect.js";
import { type TestSidecar, startSidecar } from "../support/sidecar.js";

/**
 * The standard gRPC health check from Python: health_check.py compiles
 * grpc.health.v1 at run time and needs no Weft code. SERVING while the sidecar runs,
 * NOT_SERVING as soon as it stops, then the watch is ended with UNAVAILABLE.
 */

const PYTHON = process.env.WEFT_PYTHON ?? "/usr/bin/python3";
const PROBE = fileURLToPath(new URL("health_check.py", import.meta.url));
const ENV = { ...process.env, PYTHONUNBUFFERED: "1", PYTHONDONTWRITEBYTECODE: "1" };

/** Why PYTHON cannot run the probe, or undefined when it can. */
function pythonProblem(): string | undefined {
  const r = spawnSync(PYTHON, ["-c", "import grpc, google.protobuf, grpc_tools"], { encoding: "utf8" });
  if (r.error) return `${PYTHON} cannot be run (${r.error.message})`;
  if (r.status !== 0) return `${PYTHON} cannot import grpc, google.protobuf and grpc_tools (${r.stderr.trim().split("\n").pop()})`;
  return undefined;
}
const problem = pythonProblem();
const HINT = "install python3-grpcio python3-protobuf python3-grpc-tools, or set WEFT_PYTHON";

function needPython(ctx: { skip: (note?: string) => never }): void {
  if (problem === undefined) return;
  if (process.env.CI) throw new Error(`${problem}; ${HINT}`);
  console.warn(`Skipping the Python health test: ${problem}; ${HINT}.`);
  ctx.skip(problem);
}

/** `health_check.py check`: its exit code and output lines. */
function probe(address: string): Promise<{ code: number; lines: string[]; stderr: string }> {
  return new Promise((resolve) => {
    execFile(PYTHON, [PROBE, "--address", address, "check"], { timeout: 60_000, env: ENV }, (error, stdout, stderr) =>
      resolve({ code: error ? (typeof error.code === "number" ? error.code : -1) : 0, lines: stdout.split("\n").filter(Boolean), stderr }),
    );
  });
}

describe("grpc.health.v1 from Python, with no generated Weft code", () => {
  let t: TestSidecar | undefined;
  afterEach(async () => {
    await t?.dispose();
    t = undefined;
  });

  it("a probe sees SERVING for the sidecar, weft.v1.Mesh and weft.v1.Peer, and fails once the sidecar is gone", async (ctx) => {
    needPython(ctx);
    t = await startSidecar();
    const up = await probe(t.address);
    expect(up.stderr).toBe("");
    expect(up.lines).toEqual([
      'check "": SERVING',
      'check "weft.v1.Mesh": SERVING',
      'check "weft.v1.Peer": SERVING',
      'check "weft.v1.NoSuchService": NOT_FOUND',
      'list: ""=SERVING "weft.v1.Mesh"=SERVING "weft.v1.Peer"=SERVING',
    ]);
    expect(up.code).toBe(0);
    await t.stop();
    const down = await probe(t.address);
    expect(down.lines[0]).toBe('check "": UNAVAILABLE');
    expect(down.code).toBe(1);
  });

  it("a watch sees SERVING, then NOT_SERVING when the sidecar stops, then the sidecar ends it with UNAVAILABLE", async (ctx) => {
    needPython(ctx);
    t = await startSidecar();
    const watcher = spawn(PYTHON, [PROBE, "--address", t.address, "watch"], { env: ENV, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    let changed: (() => void) | undefined;
    watcher.stdout.on("data", (b: Buffer) => {
      stdout += b.toString();
      changed?.();
    });
    watcher.stderr.on("data", (b: Buffer) => (stderr += b.toString()));
    const exited = new Promise<number | null>((resolve) => watcher.on("close", resolve));
    try {
      await within(
        (async () => {
          while (!stdout.includes("watch: SERVING\n")) await new Promise<void>((resolve) => (changed = resolve));
        })(),
        30_000,
        `"watch: SERVING" from health_check.py (stdout: ${stdout}, stderr: ${stderr})`,
      );
      await t.stop();
      expect(await within(exited, 30_000, "health_check.py to exit")).toBe(0);
      expect(stderr).toBe("");
      expect(stdout.split("\n").filter(Boolean)).toEqual(["watch: SERVING", "watch: NOT_SERVING", "watch ended: UNAVAILABLE SHUTTING_DOWN"]);
    } finally {
      if (watcher.exitCode === null) watcher.kill("SIGKILL");
    }
  });
});
