import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { rm } from "node:fs/promises";
import { afterEach, describe, expect, it } from "vitest";
import { eventually } from "./support/collect.js";
import { WEFT_BIN, freePort } from "./support/process.js";
import { tempDir } from "./support/sidecar.js";

interface Run {
  child: ChildProcess;
  stderr: () => string;
  exited: Promise<number | null>;
}

const runs: Run[] = [];
const dirs: string[] = [];
afterEach(async () => {
  for (const r of runs.splice(0)) {
    if (r.child.exitCode === null && r.child.signalCode === null) r.child.kill("SIGKILL");
    await r.exited;
  }
  for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
});

/** `weft sidecar` with its own data directory, free ports, no HTTP listener, and `args`. */
async function sidecar(args: string[], env: Record<string, string> = {}): Promise<Run> {
  const dir = await tempDir("weft-logs-");
  dirs.push(dir);
  const child = spawn(process.execPath, [WEFT_BIN, "sidecar", "--data-dir", dir, "--listen", "127.0.0.1:0", "--http", "off", ...args], {
    stdio: ["ignore", "ignore", "pipe"],
    env: { ...process.env, ...env },
  });
  let stderr = "";
  child.stderr!.setEncoding("utf8").on("data", (s: string) => (stderr += s));
  const run = { child, stderr: () => stderr, exited: once(child, "exit").then(([code]) => code as number | null) };
  runs.push(run);
  return run;
}

/** Every complete line of stderr as a record; fails on a line that is not JSON. */
function records(run: Run): Record<string, unknown>[] {
  const text = run.stderr();
  return text
    .slice(0, text.lastIndexOf("\n") + 1)
    .split("\n")
    .filter((l) => l !== "")
    .map((l) => {
      try {
        return JSON.parse(l) as Record<string, unknown>;
      } catch {
        throw new Error(`not a JSON record: ${l}`);
      }
    });
}

describe("the sidecar's log on stderr", () => {
  it("is JSON lines from start to stop: the start line with its addresses, links with the peer named, the stop", async () => {
    const peers = [`127.0.0.1:${await freePort()}`, `127.0.0.1:${await freePort()}`];
    const a = await sidecar(["--node-id", "east", "--peer-listen", peers[0]!, "--peers", peers.join(",")]);
    const b = await sidecar(["--node-id", "west", "--peer-listen", peers[1]!, "--peers", peers.join(",")]);
    const linked = (r: Record<string, unknown>): boolean => r.peer === "west" && typeof r.msg === "string" && r.msg.startsWith("linked with west");
    await eventually(() => records(a).some(linked), 20_000, "east linked");

    const [start] = records(a);
    expect(start).toMatchObject({ level: "info", node: "east", peerAddress: peers[0], pid: a.child.pid });
    expect(start!.msg).toMatch(new RegExp(`^weft sidecar listening on ${start!.address} \\(node east, peers on ${peers[0]}, `));
    expect(new Date(start!.time as string).toISOString()).toBe(start!.time);
    expect(records(a).find(linked)).toMatchObject({ level: "info", node: "east", peer: "west" });

    b.child.kill("SIGTERM");
    expect(await b.exited).toBe(0);
    await eventually(() => records(a).some((r) => r.level === "warn" && r.peer === "west" && typeof r.reason === "string"), 20_000, "the lost link logged");
    a.child.kill("SIGTERM");
    expect(await a.exited).toBe(0);
    expect(records(a).slice(-2)).toMatchObject([
      { level: "info", node: "east", signal: "SIGTERM", msg: "weft sidecar: SIGTERM, stopping (again to exit at once)" },
      { level: "info", node: "east", msg: "weft sidecar stopped" },
    ]);
    expect(records(b).map((r) => r.node)).toEqual(records(b).map(() => "west"));
  });

  it("writes only records at or above --log-level, which wins over WEFT_LOG_LEVEL", async () => {
    // A misspelt variable is a warning: the one record at "warn".
    const run = await sidecar(["--peer-listen", "127.0.0.1:0", "--log-level", "warn"], { WEFT_LOG_LEVEL: "debug", WEFT_LOG_LEVL: "x" });
    await eventually(() => records(run).length > 0, 20_000, "the warning");
    await new Promise((r) => setTimeout(r, 1000)); // the start line would come now
    run.child.kill("SIGTERM");
    expect(await run.exited).toBe(0);
    expect(records(run)).toMatchObject([{ level: "warn", msg: expect.stringContaining("WEFT_LOG_LEVL: it is not a setting; did you mean WEFT_LOG_LEVEL?") }]);
  });

  it("writes text lines with --log-format pretty", async () => {
    const run = await sidecar(["--peer-listen", "127.0.0.1:0", "--node-id", "east"], { WEFT_LOG_FORMAT: "pretty" });
    await eventually(() => run.stderr().includes("\n"), 20_000, "the start line");
    expect(run.stderr()).toMatch(/^\d{4}-\d\d-\d\dT[\d:.]+Z INFO {2}weft sidecar listening on 127\.0\.0\.1:\d+ \(node east, .* node=east address=127\.0\.0\.1:\d+/);
  });

  it("refuses an unknown level with the levels allowed, as a plain error line", async () => {
    const run = await sidecar(["--peer-listen", "127.0.0.1:0", "--log-level", "verbose"]);
    expect(await run.exited).toBe(2);
    expect(run.stderr()).toContain('error: invalid configuration: flag --log-level: "verbose" is not a log level; use one of trace, debug, info, warn, error, fatal, silent');
  });
});
