import { execFile } from "node:child_process";
import { cp, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, describe, expect, it } from "vitest";

/**
 * The compatibility guard (.ci/proto-compat, docs/compatibility.md) run against edited copies
 * of proto/: it must pass what only grows the contract and fail what breaks generated clients.
 */

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const GUARD = join(ROOT, ".ci", "proto-compat");
const dirs: string[] = [];

afterAll(async () => {
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
});

/** One edit of a proto file: `from` must occur in it exactly once. */
interface Edit {
  file: string;
  from: string;
  to: string;
}

/** Copies proto/ and buf.yaml to a temp dir, applies `edits`, and runs the guard on it. */
async function guard(...edits: Edit[]): Promise<{ code: number; output: string }> {
  const dir = await mkdtemp(join(tmpdir(), "weft-proto-compat-"));
  dirs.push(dir);
  await cp(join(ROOT, "proto"), join(dir, "proto"), { recursive: true });
  await cp(join(ROOT, "buf.yaml"), join(dir, "buf.yaml"));
  for (const { file, from, to } of edits) {
    const path = join(dir, "proto", "weft", "v1", file);
    const text = await readFile(path, "utf8");
    // A test that edits nothing would pass for the wrong reason.
    expect(text.split(from).length - 1, `"${from}" in ${file}`).toBe(1);
    await writeFile(path, text.replace(from, to));
  }
  return new Promise((resolve) => {
    execFile(GUARD, [dir], { cwd: ROOT, timeout: 60_000 }, (error, stdout, stderr) => {
      const code = error ? (typeof error.code === "number" ? error.code : -1) : 0;
      resolve({ code, output: `${stdout}${stderr}` });
    });
  });
}

describe.concurrent("proto compatibility guard (.ci/proto-compat)", () => {
  it("passes proto/ as it is against the released baseline", async () => {
    const { code, output } = await guard();
    expect(output).toContain("keeps every promise of the last release");
    expect(code).toBe(0);
  });

  it("passes a new field with a new number", async () => {
    const { code, output } = await guard({
      file: "event.proto",
      from: "  string key = 10;\n",
      to: "  string key = 10;\n  // Optional. A schema URI for `data` (CloudEvents `dataschema`).\n  string dataschema = 11;\n",
    });
    expect(output).toContain("keeps every promise");
    expect(code).toBe(0);
  });

  it("fails a renamed field, and says what to do instead", async () => {
    const { code, output } = await guard({ file: "event.proto", from: "string channel = 9;", to: "string topic = 9;" });
    expect(code).toBe(1);
    expect(output).toContain('Field "9" on message "Event" changed name from "channel" to "topic"');
    expect(output).toContain("never rename, renumber, retype or move");
    expect(output).toContain("docs/compatibility.md");
  });

  it("fails a renumbered field", async () => {
    const { code, output } = await guard({ file: "mesh.proto", from: "string group = 2;\n  // Where a new group starts.", to: "string group = 12;\n  // Where a new group starts." });
    expect(code).toBe(1);
    expect(output).toContain('Previously present field "2" with name "group" on message "SubscribeOpen" was deleted');
  });

  it("fails a field number used again for another field", async () => {
    const { code, output } = await guard({ file: "event.proto", from: "string key = 10;", to: "string partition = 10;" });
    expect(code).toBe(1);
    expect(output).toContain('Field "10" on message "Event" changed name from "key" to "partition"');
  });

  it("fails a field whose type changed", async () => {
    const { code, output } = await guard({ file: "mesh.proto", from: "  uint64 batch_id = 1;\n  // The events", to: "  string batch_id = 1;\n  // The events" });
    expect(code).toBe(1);
    expect(output).toMatch(/Field "1" with name "batch_id" on message "PublishRequest" changed type from "uint64" to "string"/);
  });

  it("fails a deleted field even when its number and name are reserved", async () => {
    const { code, output } = await guard({ file: "event.proto", from: "  string key = 10;\n", to: '  reserved 10;\n  reserved "key";\n' });
    expect(code).toBe(1);
    expect(output).toContain('Previously present field "10" with name "key" on message "Event" was deleted');
  });

  it("fails a peer protocol change too (sidecars of two releases share a mesh)", async () => {
    const { code, output } = await guard({ file: "peer.proto", from: "uint64 instance = 2;", to: "uint32 instance = 2;" });
    expect(code).toBe(1);
    expect(output).toContain('on message "Hello" changed type from "uint64" to "uint32"');
  });
});
