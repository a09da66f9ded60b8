import type { ChildProcess } from "node:child_process";
import { once } from "node:events";
import { chmod, mkdtemp, rm, stat, writeFile } from "node:fs/promises";
import { type AddressInfo, createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, afterEach, describe, expect, it } from "vitest";
import { eventually } from "./support/collect.js";
import { WEFT_BIN } from "./support/process.js";
import { type WeftRun, type WeftRunOptions, startWeft, waitForOutput } from "./support/weft-command.js";

// `weft run` as a user runs it: real processes, a real sidecar, real commands.

const CRASH_WHEN = fileURLToPath(new URL("./support/crash-when.mjs", import.meta.url));
const NODE = process.execPath;
const ROOT = fileURLToPath(new URL("..", import.meta.url));

const children = new Set<ChildProcess>();
const dirs: string[] = [];
afterEach(() => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
  children.clear();
});
afterAll(async () => {
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
});

async function tempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "weft-run-"));
  dirs.push(dir);
  return dir;
}

/** Starts `weft ARGS`, killed after the test. */
function start(args: string[], options: WeftRunOptions = {}): WeftRun {
  const run = startWeft(args, options);
  children.add(run.child);
  return run;
}

async function weft(args: string[], options: { env?: Record<string, string>; cwd?: string } = {}): Promise<{ code: number | string; stdout: string; stderr: string }> {
  const run = start(args, options);
  run.child.stdin!.end();
  const code = await run.exited;
  return { code, stdout: run.stdout(), stderr: run.stderr() };
}

const waitFor = waitForOutput;

/** Sidecar flags for a test: free ports, no HTTP, its own data directory. */
function sidecarFlags(dataDir: string, listen = "127.0.0.1:0"): string[] {
  return ["--listen", listen, "--peer-listen", "127.0.0.1:0", "--http", "off", "--data-dir", dataDir, "--log-level", "warn"];
}

/** A node program, as a command for `weft run`. */
function nodeCommand(program: string): string[] {
  return [NODE, "-e", program];
}

describe("weft run", () => {
  it("starts the sidecar, hands the command its address in WEFT_ADDRESS, and exits with the command's status", async () => {
    const dataDir = join(await tempDir(), "data");
    const script = `echo "address=$WEFT_ADDRESS"; "${NODE}" "${WEFT_BIN}" publish run.events --data hello; exit 7`;
    const r = await weft(["run", ...sidecarFlags(dataDir), "--", "sh", "-c", script]);
    expect(r.code).toBe(7);
    expect(r.stdout).toMatch(/^address=127\.0\.0\.1:\d+\nrun\.events 1\n$/);

    // The sidecar stopped gracefully and kept the event: the next run finds it.
    const again = await weft(["run", ...sidecarFlags(dataDir), "--", NODE, WEFT_BIN, "subscribe", "run.events", "--group", "g", "--from", "earliest", "--count", "1"]);
    expect(again.code).toBe(0);
    expect(JSON.parse(again.stdout)).toMatchObject({ sequence: 1, data: "hello", channel: "run.events" });
  });

  it("hands over a unix socket as unix:/path", async () => {
    const dir = await tempDir();
    const socket = join(dir, "weft.sock");
    const script = `echo "address=$WEFT_ADDRESS"; "${NODE}" "${WEFT_BIN}" publish over.socket --data x`;
    const r = await weft(["run", ...sidecarFlags(join(dir, "data"), socket), "--", "sh", "-c", script]);
    expect(r).toMatchObject({ code: 0, stdout: `address=unix:${socket}\nover.socket 1\n` });
  });

  it("lets a TypeScript service find its sidecar with connect() and no address", async () => {
    const dataDir = join(await tempDir(), "data");
    const service = `
      import { connect } from ${JSON.stringify(join(ROOT, "src/client/index.ts"))};
      const client = connect();
      const stored = await client.publish({ channel: "ts.service", data: "x" });
      console.log(client.address + " " + stored.sequence);
      client.close();`;
    const r = await weft(["run", ...sidecarFlags(dataDir), "--", NODE, "--import", "tsx", "--input-type=module", "-e", service], { cwd: ROOT });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^127\.0\.0\.1:\d+ 1\n$/);
    expect(r.stdout).not.toContain(":7420 ");
  });

  it("passes signals on to the command, once each, and stops the sidecar after it exits", async () => {
    const dataDir = join(await tempDir(), "data");
    const program = `
      for (const s of ["SIGHUP", "SIGUSR2", "SIGINT"]) process.on(s, () => console.log("got " + s));
      process.on("SIGTERM", () => { console.log("got SIGTERM"); process.exit(3); });
      console.log("ready " + process.env.WEFT_ADDRESS);
      setInterval(() => {}, 1000);`;
    const run = start(["run", ...sidecarFlags(dataDir), "--log-level", "info", "--", ...nodeCommand(program)], { group: true });
    await waitFor(run, run.stdout, /ready 127\.0\.0\.1:\d+\n/);
    for (const signal of ["SIGHUP", "SIGUSR2"] as const) {
      run.child.kill(signal);
      await waitFor(run, run.stdout, new RegExp(`got ${signal}\\n`));
    }
    // To the whole process group, as a terminal's Ctrl-C: the command hears it once, from weft run.
    process.kill(-run.child.pid!, "SIGINT");
    await waitFor(run, run.stdout, /got SIGINT\n/);
    run.child.kill("SIGTERM");
    expect(await run.exited).toBe(3);
    expect(run.stdout().split("\n").filter((l) => l.startsWith("got "))).toEqual(["got SIGHUP", "got SIGUSR2", "got SIGINT", "got SIGTERM"]);
    expect(run.stderr()).toContain("weft run: sidecar stopped");
  });

  it("signals the command's whole process group, so what the command started stops too", async () => {
    const run = start(["run", ...sidecarFlags(join(await tempDir(), "data")), "--", "sh", "-c", "sleep 300 & echo $!; wait"]);
    const pid = Number((await waitFor(run, run.stdout, /^(\d+)\n/))[1]);
    const alive = (): boolean => {
      try {
        process.kill(pid, 0);
        return true;
      } catch {
        return false;
      }
    };
    try {
      expect(alive()).toBe(true);
      run.child.kill("SIGTERM");
      expect(await run.exited).toBe(143);
      // The shell's background sleep got SIGTERM from weft run too; orphaned, it would live on.
      await eventually(() => !alive(), 30_000, "the command's background process ended");
    } finally {
      if (alive()) process.kill(pid, "SIGKILL");
    }
  });

  it("exits with 128 + the signal's number when a signal ends the command", async () => {
    const run = start(["run", ...sidecarFlags(join(await tempDir(), "data")), "--", ...nodeCommand(`console.log("ready"); setInterval(() => {}, 1000);`)]);
    await waitFor(run, run.stdout, /ready\n/);
    run.child.kill("SIGINT");
    expect(await run.exited).toBe(130);
  });

  it("does not start the command when the sidecar cannot start, and says why", async () => {
    const taken = createServer();
    taken.listen(0, "127.0.0.1");
    await once(taken, "listening");
    try {
      const dir = await tempDir();
      const address = `127.0.0.1:${(taken.address() as AddressInfo).port}`;
      const marker = join(dir, "started");
      const r = await weft(["run", ...sidecarFlags(join(dir, "data"), address), "--", "sh", "-c", `touch "${marker}"`]);
      expect(r.code).toBe(1);
      expect(r.stderr).toContain(`error: cannot start the sidecar: cannot listen on ${address}: the address is already in use`);
      await expect(stat(marker)).rejects.toMatchObject({ code: "ENOENT" });
    } finally {
      taken.close();
    }
  });

  it("says so loudly when the sidecar dies while the command runs, stops the command with SIGTERM and exits 1", async () => {
    const dir = await tempDir();
    const crash = join(dir, "crash");
    const program = `
      process.on("SIGTERM", () => { console.log("got SIGTERM"); process.exit(0); });
      console.log("ready");
      setInterval(() => {}, 1000);`;
    const run = start(["run", ...sidecarFlags(join(dir, "data")), "--", ...nodeCommand(program)], { node: ["--import", CRASH_WHEN], env: { CRASH_WHEN_FILE: crash } });
    await waitFor(run, run.stdout, /ready\n/);
    await writeFile(crash, "");
    expect(await run.exited).toBe(1);
    expect(run.stdout()).toContain("got SIGTERM");
    expect(run.stderr()).toContain("weft run: error: the sidecar died while");
    expect(run.stderr()).toContain("simulated failure");
  });

  it("exits 127 for a command that is not found and 126 for one that cannot run, starting nothing", async () => {
    const dir = await tempDir();
    const plain = join(dir, "not-executable");
    await writeFile(plain, "#!/bin/sh\n");
    await chmod(plain, 0o644);
    const dataDir = join(dir, "data");
    const cases: [string, number, string][] = [
      ["weft-no-such-command", 127, 'error: cannot run "weft-no-such-command": not found on PATH'],
      [join(dir, "missing"), 127, `error: cannot run "${join(dir, "missing")}": no such file`],
      [plain, 126, `error: cannot run "${plain}": permission denied`],
      [dir, 126, `error: cannot run "${dir}": permission denied`],
    ];
    for (const [command, code, message] of cases) {
      const r = await weft(["run", ...sidecarFlags(dataDir), "--", command, "arg"]);
      expect(r.code, command).toBe(code);
      expect(r.stderr, command).toContain(message);
    }
    await expect(stat(dataDir)).rejects.toMatchObject({ code: "ENOENT" });
  });

  it("refuses a missing --, a missing command and bad flags with exit 2, starting nothing", async () => {
    const dir = await tempDir();
    const dataDir = join(dir, "data");
    const flags = ["--http", "off", "--peer-listen", "127.0.0.1:0", "--data-dir", dataDir];
    const cases: [string[], RegExp][] = [
      [["run", ...flags, "echo", "hi"], /error: put the command after --, so that its own flags are not taken for weft's: weft run \[sidecar options\] -- echo hi/],
      [["run", ...flags, "echo", "--", "hi"], /error: put the command after --/],
      [["run", ...flags, "--"], /error: weft run needs a command after --/],
      [["run", ...flags], /error: weft run needs a command after --/],
      [["run", ...flags, "--bogus", "--", "echo"], /error: unknown option '--bogus'/],
      [["run", ...flags, "--listen", "nowhere", "--", "echo"], /error: invalid configuration: flag --listen: "nowhere" is not an address to listen on/],
      [["run", ...flags, "node", "app.js", "--port", "1"], /error: unknown option '--port'/],
    ];
    const results = await Promise.all(cases.map(([args]) => weft(args)));
    results.forEach((r, i) => {
      const [args, message] = cases[i]!;
      expect(r.code, args.join(" ")).toBe(2);
      expect(r.stderr, args.join(" ")).toMatch(message);
      expect(r.stdout, args.join(" ")).toBe("");
    });
    await expect(stat(dataDir)).rejects.toMatchObject({ code: "ENOENT" });
  });

  it("explains itself with --help, with an example", async () => {
    const r = await weft(["run", "--help"]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain("Usage: weft run [sidecar options] -- <command> [args...]");
    expect(r.stdout).toContain("weft run --data-dir ./orders-data -- node orders-service.js");
    expect(r.stdout).toContain("WEFT_ADDRESS");
  });
});
