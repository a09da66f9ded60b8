import { execFile, spawnSync } from "node:child_process";
import { readFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { afterEach, describe, expect, it } from "vitest";
import { take } from "../support/collect.js";
import { type TestSidecar, startSidecar } from "../support/sidecar.js";

/**
 * Server reflection from a client with no generated Weft code: reflection_client.py
 * learns weft.v1.Mesh from the sidecar, then publishes, subscribes, receives and acks.
 */

const PYTHON = process.env.WEFT_PYTHON ?? "/usr/bin/python3";
const CLIENT = fileURLToPath(new URL("reflection_client.py", import.meta.url));

/** Why PYTHON cannot run the client, or undefined when it can. */
function pythonProblem(): string | undefined {
  const r = spawnSync(PYTHON, ["-c", "import grpc, google.protobuf, grpc_tools"], { encoding: "utf8" });
  if (r.error) return `${PYTHON} cannot be run (${r.error.message})`;
  if (r.status !== 0) return `${PYTHON} cannot import grpc, google.protobuf and grpc_tools (${r.stderr.trim().split("\n").pop()})`;
  return undefined;
}
const problem = pythonProblem();
const HINT = "install python3-grpcio python3-protobuf python3-grpc-tools, or set WEFT_PYTHON";

/** Runs the client (without blocking the sidecar in this process); resolves with what it printed. */
function runClient(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(PYTHON, [CLIENT, ...args], { timeout: 90_000, env: { ...process.env, PYTHONDONTWRITEBYTECODE: "1" } }, (error, stdout, stderr) =>
      resolve({ code: error ? (typeof error.code === "number" ? error.code : -1) : 0, stdout, stderr }),
    );
  });
}

/** The value of `key=` in the output line starting with `step:`. */
function field(stdout: string, step: string, key: string): string {
  const line = stdout.split("\n").find((l) => l.startsWith(`${step}:`));
  expect(line, `a "${step}:" line in:\n${stdout}`).toBeDefined();
  const m = new RegExp(`(?:^|\\s)${key}=(\\S+)`).exec(line!);
  expect(m, `${key}= in "${line}"`).not.toBeNull();
  return m![1]!;
}

describe("server reflection from Python, with no generated Weft code", () => {
  let t: TestSidecar | undefined;
  afterEach(async () => {
    await t?.dispose();
    t = undefined;
  });

  for (const api of ["auto", "v1alpha"]) {
    it(`lists weft.v1.Mesh, builds its messages, publishes, subscribes and acks (reflection ${api})`, async (ctx) => {
      if (problem !== undefined) {
        if (process.env.CI) throw new Error(`${problem}; ${HINT}`);
        console.warn(`Skipping the reflection client test: ${problem}; ${HINT}.`);
        ctx.skip(problem);
      }
      t = await startSidecar();
      const channel = `reflection.${api}`;
      const { code, stdout, stderr } = await runClient(["--address", t.address, "--reflection", api, "--channel", channel, "--group", "py"]);
      expect(stderr).toBe("");
      expect(code).toBe(0);
      const lines = stdout.split("\n");
      expect(lines).toContain(`reflection: grpc.reflection.${api === "auto" ? "v1" : api}.ServerReflection`);
      expect(lines.find((l) => l.startsWith("services:"))!.split(" ")).toContain("weft.v1.Mesh");
      expect(lines).toContain("file: weft/v1/mesh.proto (with google/protobuf/timestamp.proto weft/v1/event.proto)");
      expect(lines).toContain("method: /weft.v1.Mesh/Publish stream weft.v1.PublishRequest -> stream weft.v1.PublishResponse");
      expect(lines).toContain("method: /weft.v1.Mesh/Subscribe stream weft.v1.SubscribeRequest -> stream weft.v1.SubscribeResponse");
      const id = field(stdout, "published", "id");
      expect(field(stdout, "published", "sequence")).toBe("1");
      expect(field(stdout, "subscribed", "created")).toBe("true");
      expect(field(stdout, "received", "id")).toBe(id);
      expect(field(stdout, "received", "attempt")).toBe("1");
      expect(lines.find((l) => l.startsWith("received:"))).toMatch(/ data=hello from a client with no stubs$/);
      expect(field(stdout, "acked", "delivery_id")).toMatch(/^\d+$/);
      expect(field(stdout, "resumed", "created")).toBe("false");
      expect(field(stdout, "resumed", "acked_through")).toBe("1");

      // What Python published is a real event: a TypeScript subscriber of another group gets it.
      const sub = t.client().subscribe({ channel, group: "ts", from: "earliest" });
      const [got] = await take(sub, 1);
      const d = { id: got!.event.id, type: got!.event.type, text: got!.text() };
      expect(d).toEqual({ id, type: "com.example.reflection.greeted", text: "hello from a client with no stubs" });
      sub.close();
    });
  }

  it("the client imports no generated Weft code", async () => {
    const source = await readFile(CLIENT, "utf8");
    expect(source).not.toMatch(/^\s*(import|from)\s+\S*(weft|_pb2)/m);
    expect(source).not.toContain("examples/python");
  });
});
