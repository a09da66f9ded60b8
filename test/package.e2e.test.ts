import { type ChildProcess, execFile, spawn } from "node:child_process";
import { cp, mkdir, mkdtemp, readdir, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freePorts } from "./support/process.js";

// The package as a user gets it: `npm pack` of a copy of the sources (so the build does not
// replace the dist/ that other test files run), installed from the tarball into a new
// project, then used from there with no TypeScript toolchain of ours: `npx weft`, plain
// `node` importing the client, and a TypeScript file of the user's checked with their `tsc`.

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const run = promisify(execFile);
/** Versions the new project installs beside the tarball: the ones this repository pins. */
const { devDependencies } = (await import("../package.json", { with: { type: "json" } })).default;

let work: string;
let project: string;
let tarball: string;
let sidecar: ChildProcess | undefined;
let address: string;

/** `npm …` in `cwd`, offline where npm's cache has what it needs (it does after `npm ci`). */
async function npm(cwd: string, ...args: string[]): Promise<string> {
  const { stdout } = await run("npm", [...args, "--prefer-offline", "--no-audit", "--no-fund", "--loglevel=error"], {
    cwd,
    env: { ...process.env, npm_config_update_notifier: "false" },
    maxBuffer: 64 << 20,
  });
  return stdout;
}

/** A command in the user's project; resolves with its stdout, rejects with its stderr. */
async function inProject(command: string, args: string[], env: Record<string, string> = {}): Promise<string> {
  const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("WEFT_") && k !== "NODE_OPTIONS"));
  const { stdout } = await run(command, args, { cwd: project, env: { ...clean, ...env }, maxBuffer: 16 << 20 });
  return stdout;
}

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "weft-package-"));
  const source = join(work, "source");
  await mkdir(source);
  for (const entry of ["package.json", "package-lock.json", "tsconfig.json", "tsconfig.build.json", "src", "sidecar", "scripts", "proto", "README.md", "LICENSE", "CHANGELOG.md"]) {
    await cp(join(ROOT, entry), join(source, entry), { recursive: true }).catch((e: NodeJS.ErrnoException) => {
      if (e.code !== "ENOENT") throw e;
    });
  }
  await symlink(join(ROOT, "node_modules"), join(source, "node_modules"));
  // `npm pack` runs `prepare`, which builds dist/ in the copy.
  const packed = JSON.parse(await npm(source, "pack", "--json", "--pack-destination", work)) as { filename: string }[];
  tarball = join(work, packed[0]!.filename);

  project = join(work, "project");
  await mkdir(project);
  await writeFile(join(project, "package.json"), JSON.stringify({ name: "user-service", private: true, type: "module" }));
  await npm(project, "install", tarball, `typescript@${devDependencies.typescript}`, `@types/node@${devDependencies["@types/node"]}`);
}, 300_000);

afterAll(async () => {
  // npx runs the sidecar as its child: stop the whole process group, not npx alone.
  if (sidecar?.pid !== undefined && sidecar.exitCode === null && sidecar.signalCode === null) process.kill(-sidecar.pid, "SIGKILL");
  await rm(work, { recursive: true, force: true });
});

describe("the npm package", () => {
  it("holds what runs, not the sources, tests or benchmarks", async () => {
    const installed = join(project, "node_modules", "weft-mesh");
    const top = (await readdir(installed)).sort();
    expect(top).toEqual(expect.arrayContaining(["dist", "package.json", "proto", "sidecar"]));
    for (const absent of ["test", "bench", ".ci", "src", "scripts", "examples", "tsconfig.json"]) expect(top).not.toContain(absent);
    expect(await readdir(join(installed, "sidecar"))).toEqual(["bin"]);
    const files = (await readdir(join(installed, "dist"), { recursive: true })).map(String);
    expect(files.filter((f) => f.endsWith(".ts") && !f.endsWith(".d.ts"))).toEqual([]);
    expect(files).toContain(join("src", "client", "index.d.ts"));
    // No TypeScript runner at run time: tsx is not among what the package installs.
    expect(await readdir(join(project, "node_modules"))).not.toContain("tsx");
  });

  it("runs `npx weft sidecar` and `npx weft publish` from the installed package", async () => {
    const [port] = await freePorts(1);
    address = `127.0.0.1:${port}`;
    const dataDir = join(work, "data");
    sidecar = spawn("npx", ["weft", "sidecar", "--data-dir", dataDir, "--listen", address, "--peer-listen", "127.0.0.1:0", "--http", "off"], {
      cwd: project,
      stdio: ["ignore", "ignore", "pipe"],
      detached: true,
    });
    let stderr = "";
    await new Promise<void>((resolve, reject) => {
      sidecar!.stderr!.setEncoding("utf8").on("data", (s: string) => {
        stderr += s;
        if (/listening/.test(stderr)) resolve();
      });
      sidecar!.once("exit", (code) => reject(new Error(`the sidecar exited with ${code}: ${stderr}`)));
    });
    // The CLI from the package's dist/, not through a TypeScript loader.
    expect(stderr).not.toMatch(/tsx/);
    const out = await inProject("npx", ["weft", "publish", "orders.created", "--data", "from the CLI", "--to", address]);
    expect(out.trim()).toBe("orders.created 1");
  });

  it("imports the client with plain node (ESM), by the package's name", async () => {
    await writeFile(
      join(project, "service.mjs"),
      `import { connect, ClientError } from "weft-mesh";
import { AdminClient } from "weft-mesh/admin";
const weft = connect(process.argv[2]);
const published = await weft.publish({ channel: "orders.created", data: { order: 2 } });
const seen = [];
for await (const d of weft.subscribe({ channel: "orders.created", group: "billing", from: "earliest" })) {
  seen.push(d.text());
  d.ack();
  if (seen.length === 2) break;
}
const admin = new AdminClient(process.argv[2]);
const { channels } = await admin.listChannels();
console.log(JSON.stringify({ sequence: String(published.sequence), seen, clientError: typeof ClientError, channels: channels.map((c) => c.channel) }));
admin.close();
weft.close();
`,
    );
    const out = JSON.parse(await inProject("node", ["service.mjs", address])) as Record<string, unknown>;
    expect(out).toEqual({ sequence: "2", seen: ["from the CLI", '{"order":2}'], clientError: "function", channels: ["orders.created"] });
  });

  it("gives a TypeScript project the client's types, which tsc checks", async () => {
    await writeFile(
      join(project, "tsconfig.json"),
      JSON.stringify({ compilerOptions: { module: "NodeNext", moduleResolution: "NodeNext", target: "ES2022", strict: true, noEmit: true, types: ["node"] } }),
    );
    const good = `import { connect, type Delivery, type Published } from "weft-mesh";
import { AdminClient } from "weft-mesh/admin";
const weft = connect("127.0.0.1:7420");
const p: Published = await weft.publish({ channel: "orders.created", key: "customer-7", data: { order: 3 } });
const seq: bigint = p.sequence;
const handle = (d: Delivery): void => d.ack();
new AdminClient("127.0.0.1:7420").close();
export { seq, handle };
`;
    await writeFile(join(project, "service.ts"), good);
    await inProject("npx", ["tsc", "-p", "."]);
    // The types are real, not `any`: a wrong call does not check.
    await writeFile(join(project, "service.ts"), `${good}await weft.publish({ chanel: "typo" });\n`);
    const failed = await inProject("npx", ["tsc", "-p", "."]).then(
      () => "",
      (e: { stdout: string }) => e.stdout,
    );
    expect(failed).toMatch(/service\.ts.*error TS2\d+.*chanel/);
  });
});
