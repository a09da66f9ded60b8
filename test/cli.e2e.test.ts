import type { ChildProcess } from "node:child_process";
import { X509Certificate, createHash } from "node:crypto";
import { mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { once } from "node:events";
import { type AddressInfo, createServer } from "node:net";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { freePort } from "./support/process.js";
import { type WeftRun, startWeft, waitForOutput } from "./support/weft-command.js";

// Real processes: `weft` as a user runs it, through sidecar/bin/weft.js.

const ROOT = fileURLToPath(new URL("..", import.meta.url));

/** Children started by the current test, killed after it; and those shared by a describe block. */
const testChildren = new Set<ChildProcess>();
const sharedChildren = new Set<ChildProcess>();
const tempDirs: string[] = [];

afterEach(() => killAll(testChildren));
afterAll(async () => {
  killAll(sharedChildren);
  await Promise.all(tempDirs.map((d) => rm(d, { recursive: true, force: true })));
});

function killAll(children: Set<ChildProcess>): void {
  for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  children.clear();
}

async function tempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "weft-cli-"));
  tempDirs.push(dir);
  return dir;
}

/** Starts `weft ARGS` in the checkout, killed after the test (or, `shared`, after the file). */
function start(args: string[], options: { env?: Record<string, string>; shared?: boolean } = {}): WeftRun {
  const run = startWeft(args, { env: options.env, cwd: ROOT });
  (options.shared ? sharedChildren : testChildren).add(run.child);
  return run;
}

interface Result {
  code: number | string;
  stdout: string;
  stderr: string;
}

/** Runs `weft ARGS` to completion, with `stdin` as its input (empty when not given). */
async function weft(args: string[], options: { stdin?: string; env?: Record<string, string> } = {}): Promise<Result> {
  const run = start(args, options);
  run.child.stdin!.end(options.stdin ?? "");
  const code = await run.exited;
  return { code, stdout: run.stdout(), stderr: run.stderr() };
}

/** Waits until the process's stderr matches `pattern` (or the process exits, which fails). */
const waitForStderr = (run: WeftRun, pattern: RegExp): Promise<RegExpMatchArray> => waitForOutput(run, run.stderr, pattern);
/** Waits until the process's stdout matches `pattern` (or the process exits, which fails). */
const waitForStdout = (run: WeftRun, pattern: RegExp): Promise<RegExpMatchArray> => waitForOutput(run, run.stdout, pattern);

interface Sidecar extends WeftRun {
  address: string;
  /** The HTTP address (host:port) the start line names. */
  http: string;
  dataDir: string;
}

async function startSidecar(extraArgs: string[] = [], options: { shared?: boolean; dataDir?: string } = {}): Promise<Sidecar> {
  const dataDir = options.dataDir ?? (await tempDir());
  const port = await freePort();
  const run = start(["sidecar", "--listen", `127.0.0.1:${port}`, "--peer-listen", "127.0.0.1:0", "--http", "127.0.0.1:0", "--data-dir", dataDir, ...extraArgs], options);
  const [, address, http] = await waitForStderr(run, /weft sidecar listening on (\S+) .*, http http:\/\/(\S+), /);
  return { ...run, address: address!, http: http!, dataDir };
}

function lines(text: string): string[] {
  return text.split("\n").filter((l) => l !== "");
}

interface DeliveryLine {
  id: string;
  sequence: number;
  attempt: number;
  channel: string;
  key: string;
  type: string;
  source: string;
  data?: string;
  dataBase64?: string;
}

function deliveries(stdout: string): DeliveryLine[] {
  return lines(stdout).map((l) => JSON.parse(l) as DeliveryLine);
}

describe("publish and subscribe against a running sidecar", () => {
  let sidecar: Sidecar;

  beforeAll(async () => {
    sidecar = await startSidecar([], { shared: true });
    expect(sidecar.stderr()).toMatch(
      new RegExp(`weft sidecar listening on ${sidecar.address} \\(node \\S+, peers on 127\\.0\\.0\\.1:\\d+, http http://127\\.0\\.0\\.1:\\d+, data ${sidecar.dataDir}\\)`),
    );
  });

  it("publishes --data, --count copies and stdin lines, and prints each stored sequence", async () => {
    const one = await weft(["publish", "orders.created", "--to", sidecar.address, "--data", "first"]);
    expect(one).toMatchObject({ code: 0, stdout: "orders.created 1\n" });

    const copies = await weft(["publish", "orders.created", "--to", sidecar.address, "--data", "copy", "--count", "3"]);
    expect(copies.code).toBe(0);
    expect(lines(copies.stdout)).toEqual(["orders.created 2", "orders.created 3", "orders.created 4"]);

    const stdin = await weft(["publish", "orders.created", "--to", sidecar.address, "--json", "--key", "k1", "--type", "order.placed"], {
      stdin: "line a\n\n   \r\nline b\r\nline c",
    });
    expect(stdin.code).toBe(0);
    const acked = lines(stdin.stdout).map((l) => JSON.parse(l) as { channel: string; sequence: number; id: string; duplicate: boolean });
    expect(acked.map((a) => [a.channel, a.sequence, a.duplicate])).toEqual([
      ["orders.created", 5, false],
      ["orders.created", 6, false],
      ["orders.created", 7, false],
    ]);
    expect(new Set(acked.map((a) => a.id)).size).toBe(3);

    const sub = await weft(["subscribe", "orders.created", "--group", "audit", "--to", sidecar.address, "--from", "earliest", "--count", "7"]);
    expect(sub.code).toBe(0);
    const got = deliveries(sub.stdout);
    expect(got.map((d) => [d.sequence, d.data])).toEqual([
      [1, "first"],
      [2, "copy"],
      [3, "copy"],
      [4, "copy"],
      [5, "line a"],
      [6, "line b"],
      [7, "line c"],
    ]);
    expect(got[4]).toMatchObject({ id: acked[0]!.id, attempt: 1, channel: "orders.created", key: "k1", type: "order.placed" });
    expect(got[0]!.source).toMatch(/^\/\/weft-cli\//);
    expect(sub.stderr).toContain("subscribed to orders.created as group audit: a new group");
  });

  it("acks what it printed: the group resumes after the last printed event", async () => {
    await weft(["publish", "payments.done", "--to", sidecar.address, "--data", "p", "--count", "3"]);
    const first = await weft(["subscribe", "payments.done", "--group", "ledger", "--to", sidecar.address, "--from", "earliest", "--count", "2"]);
    expect(deliveries(first.stdout).map((d) => d.sequence)).toEqual([1, 2]);

    const next = await weft(["subscribe", "payments.done", "--group", "ledger", "--to", sidecar.address, "--count", "1"]);
    expect(next.code).toBe(0);
    expect(deliveries(next.stdout).map((d) => d.sequence)).toEqual([3]);
    expect(next.stderr).toContain("the group exists and resumes after sequence 2");
  });

  it("starts a new group at a sequence, and prints binary data as base64", async () => {
    const dir = await tempDir();
    const bytes = Buffer.from([0xff, 0x00, 0xfe, 0x01, 0x80]);
    await writeFile(join(dir, "blob.bin"), bytes);
    await weft(["publish", "blobs", "--to", sidecar.address, "--data", "text"]);
    const published = await weft(["publish", "blobs", "--to", sidecar.address, "--data-file", join(dir, "blob.bin"), "--id", "blob-1", "--source", "//test"]);
    expect(published).toMatchObject({ code: 0, stdout: "blobs 2\n" });

    const sub = await weft(["subscribe", "blobs", "--group", "readers", "--to", sidecar.address, "--from", "2", "--count", "1", "--json"]);
    expect(sub.code).toBe(0);
    const [d] = deliveries(sub.stdout);
    expect(d).toEqual({ id: "blob-1", sequence: 2, attempt: 1, channel: "blobs", key: "", type: "weft.event", source: "//test", dataBase64: bytes.toString("base64") });
  });

  it("prints each ack from a pipe as it comes, while stdin is still open", async () => {
    const run = start(["publish", "piped.events", "--to", sidecar.address]);
    run.child.stdin!.write("first\n");
    await waitForStdout(run, /^piped\.events 1\n$/);
    run.child.stdin!.write("second\nthird\n");
    await waitForStdout(run, /^piped\.events 1\npiped\.events 2\npiped\.events 3\n$/);
    run.child.stdin!.end("fourth");
    expect(await run.exited).toBe(0);
    expect(lines(run.stdout())).toEqual(["piped.events 1", "piped.events 2", "piped.events 3", "piped.events 4"]);
  });

  it("reports a re-published id as a duplicate with the original sequence", async () => {
    const r = await weft(["publish", "dedup.events", "--to", sidecar.address, "--data", "x", "--id", "same", "--count", "2", "--json"]);
    expect(r.code).toBe(0);
    expect(lines(r.stdout).map((l) => JSON.parse(l) as unknown)).toEqual([
      { channel: "dedup.events", sequence: 1, id: "same", duplicate: false },
      { channel: "dedup.events", sequence: 1, id: "same", duplicate: true },
    ]);
  });

  it("takes the address from WEFT_ADDRESS", async () => {
    const r = await weft(["publish", "env.address", "--data", "x"], { env: { WEFT_ADDRESS: sidecar.address } });
    expect(r).toMatchObject({ code: 0, stdout: "env.address 1\n" });
  });

  it("delivers to a subscriber that was waiting, and stops it on SIGTERM with exit 0", async () => {
    const sub = start(["subscribe", "live.events", "--group", "watchers", "--to", sidecar.address]);
    await waitForStderr(sub, /subscribed to live\.events/);
    await weft(["publish", "live.events", "--to", sidecar.address, "--data", "hello"]);
    while (!sub.stdout().includes("\n")) await new Promise((r) => setTimeout(r, 50));
    expect(deliveries(sub.stdout())[0]).toMatchObject({ sequence: 1, data: "hello" });
    sub.child.kill("SIGTERM");
    expect(await sub.exited).toBe(0);
  });
});

describe("failures", () => {
  const usageErrors: [string[], RegExp][] = [
    [["frobnicate"], /unknown command 'frobnicate'/],
    [[], /Usage: weft/],
    [["publish"], /missing required argument 'channel'/],
    [["publish", "orders.created", "--bogus"], /unknown option '--bogus'/],
    [["publish", "Orders", "--data", "x"], /value 'Orders' is invalid for argument 'channel'\. Use dot-separated lowercase segments/],
    [["publish", "orders.created", "--data", "x", "--count", "abc"], /'--count <n>' argument 'abc' is invalid\. Use a whole number/],
    [["publish", "orders.created", "--data", "x", "--count", "-1"], /'--count <n>' argument '-1' is invalid/],
    [["publish", "orders.created", "--data", "x", "--count", "1e99"], /'--count <n>' argument '1e99' is invalid/],
    [["publish", "orders.created", "--data", "x", "--data-file", "f"], /use --data or --data-file, not both/],
    [["publish", "orders.created", "--count", "2"], /--count copies --data or --data-file/],
    [["publish", "orders.created", "--data", "x", "--to", "nowhere"], /'--to <address>' argument 'nowhere' is invalid\. The address is not usable \(it has no port\)/],
    [["subscribe", "orders.created"], /required option '--group <group>' not specified/],
    [["subscribe", "orders.created", "--group", "g", "--from", "yesterday"], /'--from <position>' argument 'yesterday' is invalid\. Use latest, earliest, a sequence/],
    [["subscribe", "orders.created", "--group", "g", "--from", "0"], /A sequence must be from 1/],
    [["subscribe", "orders.created", "--group", "g", "--count", "0"], /'--count <n>' argument '0' is invalid/],
    [["subscribe", "orders.created", "--group", "g", "--max-in-flight", "100000"], /Use a whole number, from 1 to 10000\./],
    [["sidecar", "--listen", "localhost"], /invalid configuration: flag --listen: "localhost" is not an address to listen on/],
    [["sidecar", "--max-event-bytes", "lots"], /invalid configuration: flag --max-event-bytes: "lots" is not a size/],
  ];

  it("exits 2 with a message on stderr for unknown commands and flags, missing arguments and bad values", async () => {
    // Independent processes: run them side by side.
    const results = await Promise.all(usageErrors.map(([args]) => weft(args)));
    results.forEach((r, i) => {
      const [args, message] = usageErrors[i]!;
      const label = `weft ${args.join(" ")}`;
      expect(r.code, label).toBe(2);
      expect(r.stderr, label).toMatch(message);
      expect(r.stdout, label).toBe("");
    });
  });

  it("exits 0 with usage on --help", async () => {
    const r = await weft(["publish", "--help"]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain("Usage: weft publish [options] <channel>");
  });

  it("exits 1 at once when the connection is refused, however long --timeout is", async () => {
    // A 10-minute timeout: waiting for it would fail this test by the test's own timeout.
    const address = `127.0.0.1:${await freePort()}`;
    const socket = join(await tempDir(), "nobody.sock");
    const [publish, subscribe, channels, overUnix] = await Promise.all([
      weft(["publish", "orders.created", "--to", address, "--data", "x", "--timeout", "10m"]),
      weft(["subscribe", "orders.created", "--group", "g", "--to", address, "--timeout", "10m"]),
      weft(["channels", "--to", address, "--timeout", "10m"]),
      weft(["publish", "orders.created", "--to", socket, "--data", "x", "--timeout", "10m"]),
    ]);
    for (const r of [publish, subscribe, channels]) {
      expect(r.code).toBe(1);
      expect(r.stderr).toContain(`error: cannot reach a sidecar at ${address}: the connection was refused (nothing listens there); is \`weft sidecar\` running there?`);
      expect(r.stdout).toBe("");
    }
    expect(overUnix.code).toBe(1);
    expect(overUnix.stderr).toContain(`error: cannot reach a sidecar at ${socket}: no such socket`);
  });

  it("exits 1 after --timeout when something accepts the connection but never answers", async () => {
    const silent = createServer(() => {});
    silent.listen(0, "127.0.0.1");
    await once(silent, "listening");
    try {
      const address = `127.0.0.1:${(silent.address() as AddressInfo).port}`;
      const r = await weft(["publish", "orders.created", "--to", address, "--data", "x", "--timeout", "1s"]);
      expect(r.code).toBe(1);
      expect(r.stderr).toContain(`error: cannot reach a sidecar at ${address} within 1s`);
    } finally {
      silent.close();
    }
  });

  it("exits 1 with the sidecar's reason when it rejects an event", async () => {
    const sidecar = await startSidecar(["--max-event-bytes", "1KiB"]);
    const big = "x".repeat(2000);
    const r = await weft(["publish", "small.events", "--to", sidecar.address, "--data", big]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/error: the event was not published: EVENT_TOO_LARGE: the event is \d+ bytes encoded; at most 1024 are allowed/);

    const fromStdin = await weft(["publish", "small.events", "--to", sidecar.address], { stdin: `ok\n${big}\n` });
    expect(fromStdin.code).toBe(1);
    expect(fromStdin.stdout).toBe("small.events 1\n");
    expect(fromStdin.stderr).toMatch(/error: line 2 was not published: EVENT_TOO_LARGE/);
  });
});

describe("the sidecar process", () => {
  it("stops gracefully on SIGTERM and SIGINT with exit 0, keeping its data", async () => {
    const first = await startSidecar();
    await weft(["publish", "kept.events", "--to", first.address, "--data", "survives"]);
    first.child.kill("SIGTERM");
    expect(await first.exited).toBe(0);
    expect(first.stderr()).toContain("weft sidecar stopped");

    const second = await startSidecar([], { dataDir: first.dataDir });
    const sub = await weft(["subscribe", "kept.events", "--group", "g", "--to", second.address, "--from", "earliest", "--count", "1"]);
    expect(deliveries(sub.stdout)[0]).toMatchObject({ sequence: 1, data: "survives" });
    second.child.kill("SIGINT");
    expect(await second.exited).toBe(0);
  });

  it("lets a subscriber say on stderr when it loses its sidecar and when it is back, and resume", async () => {
    const first = await startSidecar();
    const sub = start(["subscribe", "outage.events", "--group", "g", "--to", first.address, "--count", "1"]);
    await waitForStderr(sub, /subscribed to outage\.events as group g/);
    first.child.kill("SIGKILL");
    await first.exited;
    await waitForStderr(sub, new RegExp(`weft subscribe: lost the sidecar at ${first.address} \\(.+\\); reconnecting until it is back`));

    const second = await startSidecar(["--listen", first.address], { dataDir: first.dataDir });
    await waitForStderr(sub, new RegExp(`weft subscribe: the sidecar at ${first.address} is back: subscribed again to outage\\.events as group g, resuming after sequence 0`));
    expect(sub.stderr().match(/lost the sidecar/g)).toHaveLength(1);
    await weft(["publish", "outage.events", "--to", second.address, "--data", "after"]);
    expect(await sub.exited).toBe(0);
    expect(deliveries(sub.stdout()).map((d) => [d.sequence, d.data])).toEqual([[1, "after"]]);
  });

  it("refuses a data directory another sidecar holds, and an address in use", async () => {
    const first = await startSidecar();
    const locked = await weft(["sidecar", "--listen", `127.0.0.1:${await freePort()}`, "--peer-listen", "127.0.0.1:0", "--http", "127.0.0.1:0", "--data-dir", first.dataDir]);
    expect(locked.code).toBe(1);
    expect(locked.stderr).toContain(`error: cannot start the sidecar: the data directory ${first.dataDir} is locked by another process`);

    const taken = await weft(["sidecar", "--listen", first.address, "--peer-listen", "127.0.0.1:0", "--http", "127.0.0.1:0", "--data-dir", await tempDir()]);
    expect(taken.code).toBe(1);
    expect(taken.stderr).toContain(`error: cannot start the sidecar: cannot listen on ${first.address}: the address is already in use`);

    const httpTaken = await weft(["sidecar", "--listen", "127.0.0.1:0", "--peer-listen", "127.0.0.1:0", "--http", first.http, "--data-dir", await tempDir()]);
    expect(httpTaken.code).toBe(1);
    expect(httpTaken.stderr).toContain(`error: cannot start the sidecar: cannot listen on ${first.http} (the HTTP listener, --http): the address is already in use`);

    // The first one is unharmed.
    const r = await weft(["publish", "still.up", "--to", first.address, "--data", "x"]);
    expect(r).toMatchObject({ code: 0, stdout: "still.up 1\n" });
  });

  it("refuses a bad config file with its path and the problem", async () => {
    const dir = await tempDir();
    const path = join(dir, "weft.yaml");
    await writeFile(path, "listen: 127.0.0.1:0\nretention:\n  maxAge: forever\n");
    const r = await weft(["sidecar", "--config", path]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`error: invalid configuration: config file ${path}, key "retention.maxAge": "forever" is not a duration`);

    const missing = await weft(["sidecar", "--config", join(dir, "nope.yaml")]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain(`config file ${join(dir, "nope.yaml")}: does not exist`);

    const env = await weft(["sidecar"], { env: { WEFT_DEDUP_WINDOW: "0" } });
    expect(env.code).toBe(1);
    expect(env.stderr).toContain('environment variable WEFT_DEDUP_WINDOW: "0" is too short; use 1s to 30d');
  });

  it("takes settings from the config file, the environment over it, and flags over both", async () => {
    const dir = await tempDir();
    const [filePort, envPort] = [await freePort(), await freePort()];
    const path = join(dir, "weft.yaml");
    await writeFile(path, `dataDir: data\nlisten: 127.0.0.1:${filePort}\npeerListen: 127.0.0.1:0\nhttp: 127.0.0.1:0\n`);

    const fromFile = start(["sidecar", "--config", path]);
    await waitForStderr(fromFile, /listening/);
    expect(fromFile.stderr()).toMatch(/listening on 127\.0\.0\.1:\d+ \(node \S+, peers on [^,]+, http http:\/\/127\.0\.0\.1:\d+, data [^)]+\)/);
    expect(fromFile.stderr()).toContain(`listening on 127.0.0.1:${filePort} (`);
    expect(fromFile.stderr()).toContain(`data ${join(dir, "data")})`);
    fromFile.child.kill("SIGTERM");
    expect(await fromFile.exited).toBe(0);

    const fromEnv = start(["sidecar", "--config", path], { env: { WEFT_LISTEN: `127.0.0.1:${envPort}` } });
    await waitForStderr(fromEnv, /listening/);
    expect(fromEnv.stderr()).toContain(`listening on 127.0.0.1:${envPort}`);
    fromEnv.child.kill("SIGTERM");
    expect(await fromEnv.exited).toBe(0);

    const flagDir = join(dir, "flagged");
    const fromFlags = start(["sidecar", "--config", path, "--listen", "127.0.0.1:0", "--peer-listen", "127.0.0.1:0", "--data-dir", flagDir], {
      env: { WEFT_LISTEN: `127.0.0.1:${envPort}` },
    });
    const [, address] = await waitForStderr(fromFlags, /listening on (\S+) \(node \S+, peers on \S+, http \S+, data (\S+)\)/);
    expect(address).not.toBe(`127.0.0.1:${envPort}`);
    expect(fromFlags.stderr()).toContain(`, data ${flagDir})`);
    fromFlags.child.kill("SIGTERM");
    expect(await fromFlags.exited).toBe(0);
  });

  it("listens on a unix socket", async () => {
    const dir = await tempDir();
    const socket = join(dir, "weft.sock");
    const run = start(["sidecar", "--listen", socket, "--peer-listen", "127.0.0.1:0", "--http", "off", "--data-dir", join(dir, "data")]);
    await waitForStderr(run, /listening on unix:\S+ \(node \S+, peers on \S+, http off, /);
    await waitForStderr(run, /listening on unix:/);
    const r = await weft(["publish", "over.unix", "--to", socket, "--data", "x"]);
    expect(r).toMatchObject({ code: 0, stdout: "over.unix 1\n" });
    run.child.kill("SIGTERM");
    expect(await run.exited).toBe(0);
  });
});

describe("TLS: weft certs, a sidecar with TLS, clients with --tls-ca, rotation on SIGHUP", () => {
  let dir: string;

  beforeAll(async () => {
    dir = await tempDir();
  });

  it("makes a CA, node and service certificates; keys are 0600; a CA is never replaced", async () => {
    const ca = await weft(["certs", "ca", "--dir", dir, "--trust-domain", "weft.test"]);
    expect(ca).toMatchObject({ code: 0, stdout: `${join(dir, "ca.crt")}\n${join(dir, "ca.key")}\n` });
    expect((await stat(join(dir, "ca.key"))).mode & 0o777).toBe(0o600);
    const node = await weft(["certs", "node", "cli-a", "--dir", dir, "--host", "cli-a.mesh.svc,10.0.0.7"]);
    expect(node).toMatchObject({ code: 0, stdout: `${join(dir, "node-cli-a.crt")}\n${join(dir, "node-cli-a.key")}\n` });
    const cert = new X509Certificate(await readFile(join(dir, "node-cli-a.crt")));
    expect(cert.subjectAltName).toBe("URI:spiffe://weft.test/weft/node/cli-a, DNS:localhost, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1, DNS:cli-a.mesh.svc, IP Address:10.0.0.7");
    expect((await stat(join(dir, "node-cli-a.key"))).mode & 0o777).toBe(0o600);
    const service = await weft(["certs", "service", "billing", "--dir", dir]);
    expect(service.code).toBe(0);
    expect(new X509Certificate(await readFile(join(dir, "service-billing.crt"))).subjectAltName).toBe("URI:spiffe://weft.test/weft/service/billing");

    const again = await weft(["certs", "ca", "--dir", dir]);
    expect(again.code).toBe(1);
    expect(again.stderr).toContain("exists: a CA is not replaced");
  });

  it.each([
    [["certs", "bogus"], 2, "is not something weft certs makes"],
    [["certs", "node"], 2, "weft certs node needs a name"],
    [["certs", "ca", "extra"], 2, "takes no name"],
    [["certs", "node", "bad id!"], 1, "is not valid"],
    [["certs", "node", "x", "--host", "a\n[leaf]"], 1, "is not a DNS name or an IP address"],
    [["certs", "service", "svc", "--host", "h"], 2, "--host is for node certificates"],
    [["certs", "ca", "--trust-domain", "Bad Domain"], 1, "is not valid"],
    [["certs", "node", "x", "--days", "0"], 2, "days"],
  ])("refuses weft %j with exit %d", async (args, code, message) => {
    const empty = await tempDir();
    const r = await weft([...args, "--dir", empty]);
    expect(r.code).toBe(code);
    expect(r.stderr).toContain(message);
  });

  it("makes a token with weft token, and a sidecar with a policy takes it from --token; without it a publish is UNAUTHENTICATED", async () => {
    const made = await weft(["token", "cli-ops"]);
    expect(made.code).toBe(0);
    const token = made.stdout.trim();
    expect(token).toMatch(/^[A-Za-z0-9_-]{43}$/);
    const line = /cli-ops: "(sha256:[0-9a-f]{64})"/.exec(made.stderr);
    expect(line?.[1]).toBe(`sha256:${createHash("sha256").update(token).digest("hex")}`);
    expect((await weft(["token", "bad name"])).code).toBe(2);

    const config = join(await tempDir(), "weft.yaml");
    await writeFile(config, `tokens:\n  cli-ops: "${line![1]}"\npolicy:\n  cli-ops:\n    publish: [tokens.>]\n    admin: [">"]\n`);
    const port = await freePort();
    const run = start(["sidecar", "--config", config, "--listen", `127.0.0.1:${port}`, "--peer-listen", "127.0.0.1:0", "--http", "off", "--data-dir", await tempDir()]);
    await waitForStderr(run, /weft sidecar listening on/);
    const address = `127.0.0.1:${port}`;
    const denied = await weft(["publish", "tokens.cli", "--to", address, "--data", "x"]);
    expect(denied.code).toBe(1);
    expect(denied.stderr).toContain("UNAUTHENTICATED");
    expect(await weft(["publish", "tokens.cli", "--to", address, "--data", "x", "--token", token])).toMatchObject({ code: 0, stdout: "tokens.cli 1\n" });
    const listed = await weft(["channels", "--to", address, "--json"], { env: { WEFT_TOKEN: token } });
    expect(listed.code).toBe(0);
    expect(listed.stdout).toContain("tokens.cli");
    run.child.kill("SIGTERM");
    expect(await run.exited).toBe(0);
  });

  it("refuses to start a sidecar with a listener beyond loopback and no TLS, saying how to fix it", async () => {
    const dataDir = join(await tempDir(), "data");
    const r = await weft(["sidecar", "--peer-listen", "0.0.0.0:0", "--listen", "127.0.0.1:0", "--http", "off", "--data-dir", dataDir]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("peerListen 0.0.0.0:0 is beyond loopback without TLS");
    expect(r.stderr).toContain("--insecure");
    await expect(stat(dataDir)).rejects.toMatchObject({ code: "ENOENT" });
  });

  it("serves clients over TLS, and takes a rotated certificate on SIGHUP", async () => {
    const tls = ["--tls-cert", join(dir, "node-cli-a.crt"), "--tls-key", join(dir, "node-cli-a.key"), "--tls-ca", join(dir, "ca.crt")];
    const dataDir = await tempDir();
    const port = await freePort();
    const run = start(["sidecar", "--listen", `127.0.0.1:${port}`, "--peer-listen", "0.0.0.0:0", "--http", "127.0.0.1:0", "--data-dir", dataDir, ...tls]);
    await waitForStderr(run, /weft sidecar listening on \S+ \(node cli-a, peers on 0\.0\.0\.0:\d+, http https:\/\/127\.0\.0\.1:\d+/);
    const address = `127.0.0.1:${port}`;

    const plain = await weft(["publish", "tls.cli", "--to", address, "--data", "x", "--timeout", "2s"]);
    expect(plain.code).toBe(1);
    const published = await weft(["publish", "tls.cli", "--to", address, "--data", "x", "--tls-ca", join(dir, "ca.crt")]);
    // Nothing on stderr: no Node warning about the IP address as the TLS server name either.
    expect(published).toMatchObject({ code: 0, stdout: "tls.cli 1\n", stderr: "" });
    const fromEnv = await weft(["channels", "--to", address, "--json"], { env: { WEFT_CLIENT_TLS_CA: join(dir, "ca.crt") } });
    expect(fromEnv.code).toBe(0);
    const missing = await weft(["publish", "tls.cli", "--to", address, "--data", "x", "--tls-ca", join(dir, "nope.crt")]);
    expect(missing).toMatchObject({ code: 2 });
    expect(missing.stderr).toContain("--tls-ca");

    expect((await weft(["certs", "node", "cli-a", "--dir", dir])).code).toBe(0);
    run.child.kill("SIGHUP");
    await waitForStderr(run, /TLS files reloaded \((SIGHUP|the files changed)\): certificate/);
    const after = await weft(["publish", "tls.cli", "--to", address, "--data", "y", "--tls-ca", join(dir, "ca.crt")]);
    expect(after).toMatchObject({ code: 0, stdout: "tls.cli 2\n" });
    run.child.kill("SIGTERM");
    expect(await run.exited).toBe(0);
  });
});
