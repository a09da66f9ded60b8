/**
 * Every command the docs show runs as written: this test extracts the shell blocks of
 * README.md, CONTRIBUTING.md, docs/**.md, bench/README.md and the READMEs under deploy/ and
 * examples/ and runs those marked runnable against real
 * sidecars. A documented command that breaks (a renamed flag, a changed output, a port
 * that moved) fails it.
 *
 * The convention (CONTRIBUTING.md, "Writing docs", says the same for writers): an HTML
 * comment on the line before a shell block (```sh, ```bash, ```shell, ```console, or a bare
 * ``` whose first line is a command such as `$ …`, `npx …`, `weft …`) says what it is:
 *
 *   <!-- runnable -->                   runs on its own, in a fresh directory
 *   <!-- runnable: OPTIONS -->          the same, with space-separated options:
 *     session=NAME     the file's blocks with this name run in order, in one directory and
 *                      one network; what a block started keeps running for the next ones
 *     background       a long-running command (a sidecar): started, waited for (ready=),
 *                      left running for the session's later blocks, then stopped with
 *                      SIGINT, as Ctrl-C does; it must exit 0 or as SIGINT says (130)
 *     ready=P1,P2      TCP ports on 127.0.0.1 that a background block opens when ready
 *     needs=sidecar    the harness starts `weft sidecar` with its defaults before the session
 *     cwd=repo         runs in the repository checkout (development commands) instead
 *     timeout=SECONDS  the block's limit (default 60)
 *     file=NAME        on a block in any language (```js, ```yaml): not run, but written to
 *                      NAME in the session's directory for its later blocks to use
 *   <!-- not-runnable: REASON -->       never run; the reason is shown in the test's list
 *
 * A shell block with neither marker fails the test: nothing drops out silently. In a
 * runnable block a `# → TEXT` comment is expected output: TEXT must appear in one line of
 * what the block printed (stdout or stderr), where `…` stands for anything.
 *
 * How a block runs: `bash -euo pipefail BLOCK` (so any failing command fails it), stdin
 * empty, in a fresh directory set up as a project that installed weft-mesh (package.json,
 * node_modules/weft-mesh linked to this checkout, node_modules/.bin/weft): `weft` is on
 * PATH and `npx weft` resolves locally, as in a user's project. A failed or timed-out block
 * ends its session; the failure names the block's file and line and shows its output.
 *
 * Ports: the docs rely on the defaults (7420-7422) and say `curl 127.0.0.1:7422`, so each
 * session runs in a network namespace of its own (`unshare --user --map-root-user --net`,
 * unprivileged), with its own loopback: the commands run exactly as written, sessions run
 * side by side, and nothing else on the machine (other test files, other checkouts' tests,
 * a developer's sidecar) can take those ports or be reached by them. Rewriting ports per
 * session would test something other than what the docs say. Where user namespaces are not
 * allowed, sessions run one at a time on the host's loopback, and a session whose default
 * ports are taken fails, saying so.
 */
import { spawn, spawnSync } from "node:child_process";
import { mkdir, mkdtemp, readFile, readdir, rm, symlink, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const SHELL_LANGS = new Set(["sh", "bash", "shell", "console"]);
/** A bare block starting like this is a command, not output: it must be marked too. */
const COMMAND_START = /^(\$ |npx |npm |weft |curl |sudo |\.ci\/)/;
const DEFAULT_TIMEOUT_S = 60;
/** Sessions at once. Each starts sidecars and Node processes; the machine has two cores. */
const PARALLEL = 2;
const DEFAULT_PORTS = [7420, 7421, 7422];
/**
 * A user namespace (unprivileged), a network namespace (its own loopback) and a PID
 * namespace: when the session's shell, its PID 1, exits, the kernel kills whatever a block
 * left running, so nothing outlives its session.
 */
const ISOLATE = ["unshare", "--user", "--map-root-user", "--net", "--pid", "--fork"];

type Marker = { kind: "runnable"; options: Map<string, string> } | { kind: "not-runnable"; reason: string } | { kind: "none" };

interface ShellBlock {
  /** Path relative to the repository, e.g. docs/mesh.md. */
  file: string;
  /** 1-based line of the opening fence. */
  line: number;
  text: string;
  marker: Marker;
}

/** Every shell block of a markdown file, with the marker on the line before it. */
function shellBlocks(file: string, markdown: string): ShellBlock[] {
  const lines = markdown.split("\n");
  const blocks: ShellBlock[] = [];
  for (let i = 0; i < lines.length; i++) {
    const open = /^(\s*)(`{3,}|~{3,})\s*([\w-]*)(.*)$/.exec(lines[i]!);
    if (!open) continue;
    const [, indent, fence, lang] = open as unknown as [string, string, string, string];
    const body: string[] = [];
    let j = i + 1;
    for (; j < lines.length; j++) {
      const l = lines[j]!;
      if (l.trim().startsWith(fence) && l.trim().replace(/[`~]/g, "") === "") break;
      body.push(l.startsWith(indent) ? l.slice(indent.length) : l.trimStart());
    }
    const first = body.find((l) => l.trim() !== "")?.trim() ?? "";
    const isShell = SHELL_LANGS.has(lang) || (lang === "" && COMMAND_START.test(first));
    let k = i - 1;
    while (k >= 0 && lines[k]!.trim() === "") k--;
    const marker = parseMarker(k >= 0 ? lines[k]!.trim() : "");
    if (isShell || (marker.kind === "runnable" && marker.options.has("file"))) {
      blocks.push({ file, line: i + 1, text: body.join("\n") + "\n", marker });
    }
    i = j;
  }
  return blocks;
}

/** Lines (1-based) of markers that no shell block follows: a marker on a ```ts block runs nothing. */
function strayMarkers(markdown: string): number[] {
  const lines = markdown.split("\n");
  const stray: number[] = [];
  lines.forEach((line, i) => {
    if (parseMarker(line.trim()).kind === "none") return;
    let k = i + 1;
    while (k < lines.length && lines[k]!.trim() === "") k++;
    if (!shellBlocks("", lines.slice(i).join("\n")).some((b) => b.line === k - i + 1)) stray.push(i + 1);
  });
  return stray;
}

function parseMarker(line: string): Marker {
  const not = /^<!--\s*not-runnable:\s*(.+?)\s*-->$/.exec(line);
  if (not) return { kind: "not-runnable", reason: not[1]! };
  const run = /^<!--\s*runnable(?::\s*(.*?))?\s*-->$/.exec(line);
  if (!run) return { kind: "none" };
  const options = new Map<string, string>();
  for (const token of (run[1] ?? "").split(/\s+/).filter(Boolean)) {
    const eq = token.indexOf("=");
    options.set(eq < 0 ? token : token.slice(0, eq), eq < 0 ? "" : token.slice(eq + 1));
  }
  return { kind: "runnable", options };
}

const KNOWN_OPTIONS = new Set(["session", "background", "ready", "needs", "cwd", "timeout", "file"]);

/** What a marker's options must satisfy; an empty list means the block can run. */
function optionProblems(options: Map<string, string>): string[] {
  const problems: string[] = [];
  for (const key of options.keys()) if (!KNOWN_OPTIONS.has(key)) problems.push(`unknown option ${key}`);
  if (options.has("background") && !/^\d+(,\d+)*$/.test(options.get("ready") ?? "")) problems.push("a background block needs ready=PORT[,PORT…]");
  if (options.has("needs") && options.get("needs") !== "sidecar") problems.push(`needs=${options.get("needs")}: only needs=sidecar exists`);
  if (options.has("cwd") && options.get("cwd") !== "repo") problems.push(`cwd=${options.get("cwd")}: only cwd=repo exists`);
  if (options.has("timeout") && !/^\d+$/.test(options.get("timeout")!)) problems.push("timeout= takes whole seconds");
  if (options.has("file") && !/^[\w.-]+$/.test(options.get("file")!)) problems.push("file= takes a file name, no directories");
  if (options.has("file") && options.has("background")) problems.push("a file= block is written, not run: it cannot be background");
  return problems;
}

/** `# → TEXT` comments of a block, as patterns over one line of output. */
function expectations(text: string): { text: string; pattern: RegExp }[] {
  const found: { text: string; pattern: RegExp }[] = [];
  for (const line of text.split("\n")) {
    const at = line.indexOf("# → ");
    if (at < 0) continue;
    const expected = line.slice(at + "# → ".length).trim();
    const source = expected
      .split("…")
      .map((part) => part.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"))
      .join(".*");
    found.push({ text: expected, pattern: new RegExp(source) });
  }
  return found;
}

async function markdownFiles(): Promise<string[]> {
  const files = ["README.md", "CONTRIBUTING.md", "bench/README.md"];
  for (const entry of await readdir(join(ROOT, "docs"), { recursive: true })) if (entry.endsWith(".md")) files.push(join("docs", entry));
  // The READMEs beside deployment files and examples are where a person looks for how to use them.
  for (const dir of ["deploy", "examples"]) {
    for (const entry of await readdir(join(ROOT, dir), { recursive: true })) if (entry.endsWith("README.md")) files.push(join(dir, entry));
  }
  const present: string[] = [];
  for (const f of files) if (await readFile(join(ROOT, f)).then(() => true, () => false)) present.push(f);
  return present.sort();
}

/** Whether this machine lets an unprivileged process have its own network namespace. */
function canIsolate(): boolean {
  const r = spawnSync(ISOLATE[0]!, [...ISOLATE.slice(1), "sh", "-c", "ip link set lo up"], { stdio: "ignore", timeout: 10_000 });
  return r.status === 0;
}

function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once("error", () => resolve(false));
    server.listen(port, "127.0.0.1", () => server.close(() => resolve(true)));
  });
}

interface BlockResult {
  block: ShellBlock;
  rc: number | undefined;
  out: string;
  err: string;
  note: string;
}

const q = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`;

/**
 * Runs one session's blocks in one bash script (inside the namespace when isolated) and
 * returns what each printed and its exit status. Blocks after a failed one do not run.
 */
async function runSession(blocks: ShellBlock[], isolated: boolean): Promise<BlockResult[]> {
  const base = await mkdtemp(join(tmpdir(), "weft-docs-"));
  try {
    const work = join(base, "work");
    const harness = join(base, "harness");
    await mkdir(join(work, "node_modules", ".bin"), { recursive: true });
    await mkdir(harness);
    // A project that installed weft-mesh, as `npm install weft-mesh` leaves it, pointing here.
    await writeFile(join(work, "package.json"), JSON.stringify({ name: "docs-block", private: true, type: "module" }) + "\n");
    await symlink(ROOT, join(work, "node_modules", "weft-mesh"));
    await symlink(join("..", "weft-mesh", "sidecar", "bin", "weft.js"), join(work, "node_modules", ".bin", "weft"));

    const script: string[] = [
      "set -u",
      isolated ? "ip link set lo up" : "",
      "set -m # each job its own process group: SIGINT reaches a block's every process, as Ctrl-C does",
      `H=${q(harness)}`,
      "bg=(); bgn=()",
      // Stops background blocks (latest first, so clients go before their sidecar) and records their status.
      `finish() { local i; for ((i=\${#bg[@]}-1; i>=0; i--)); do kill -INT -- "-\${bg[$i]}" 2>/dev/null; timeout 20 tail --pid="\${bg[$i]}" -f /dev/null || kill -KILL -- "-\${bg[$i]}" 2>/dev/null; wait "\${bg[$i]}"; echo $? > "$H/\${bgn[$i]}.rc"; done; }`,
      `ready() { local n=$1 pid=$2 p; shift 2; local end=$((SECONDS+30)); for p in "$@"; do until (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; do if ! kill -0 "$pid" 2>/dev/null; then echo "exited before port $p was open" > "$H/$n.note"; return 1; fi; if ((SECONDS>end)); then echo "port $p not open after 30 s" > "$H/$n.note"; return 1; fi; sleep 0.1; done; done; }`,
    ];
    const needsSidecar = blocks.some((b) => b.marker.kind === "runnable" && b.marker.options.get("needs") === "sidecar");
    if (needsSidecar) {
      // The sidecar a block "needs": the defaults, its data outside the block's directory.
      script.push(
        `(cd "$H" && exec ${q(join(ROOT, "sidecar", "bin", "weft.js"))} sidecar --log-level warn) > "$H/sidecar.out" 2> "$H/sidecar.err" < /dev/null &`,
        `bg+=($!); bgn+=(sidecar)`,
        `ready sidecar $! ${DEFAULT_PORTS.join(" ")} || { finish; exit 0; }`,
      );
    }
    blocks.forEach((b, n) => {
      const options = (b.marker as { options: Map<string, string> }).options;
      const cwd = options.get("cwd") === "repo" ? ROOT : work;
      const timeout = Number(options.get("timeout") ?? DEFAULT_TIMEOUT_S);
      const run = `bash -c 'cd "$1" && exec bash -euo pipefail "$2"' block ${q(cwd)} "$H/${n}.sh" > "$H/${n}.out" 2> "$H/${n}.err" < /dev/null`;
      if (options.has("file")) {
        script.push(`cp "$H/${n}.sh" ${q(join(work, options.get("file")!))}; echo $? > "$H/${n}.rc"`);
      } else if (options.has("background")) {
        script.push(`${run} &`, `bg+=($!); bgn+=(${n})`, `ready ${n} $! ${options.get("ready")!.split(",").join(" ")} || { finish; exit 0; }`);
      } else {
        // timeout signals the block's whole process group: 124 when it ran out of time.
        script.push(`timeout -s INT -k 5 ${timeout} ${run}; rc=$?`, `echo $rc > "$H/${n}.rc"; [ $rc = 0 ] || { finish; exit 0; }`);
      }
    });
    script.push("finish");
    await Promise.all(blocks.map((b, n) => writeFile(join(harness, `${n}.sh`), b.text)));
    await writeFile(join(harness, "session.sh"), script.join("\n") + "\n");

    const command = [...(isolated ? ISOLATE : []), "bash", join(harness, "session.sh")];
    // A block inherits no WEFT_ setting (an address, a config file) that would point its
    // commands elsewhere than the docs say.
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("WEFT_")));
    Object.assign(env, { PATH: `${join(work, "node_modules", ".bin")}:${process.env.PATH ?? ""}`, npm_config_update_notifier: "false" });
    const limit = blocks.reduce((s, b) => s + Number((b.marker as { options: Map<string, string> }).options.get("timeout") ?? DEFAULT_TIMEOUT_S), 60) * 1000;
    const child = spawn(command[0]!, command.slice(1), { cwd: work, env, stdio: ["ignore", "pipe", "pipe"], detached: true });
    let harnessOutput = "";
    child.stdout.setEncoding("utf8").on("data", (s: string) => (harnessOutput += s));
    child.stderr.setEncoding("utf8").on("data", (s: string) => (harnessOutput += s));
    const timer = setTimeout(() => process.kill(-child.pid!, "SIGKILL"), limit);
    await new Promise<void>((resolve) => child.on("close", () => resolve()));
    clearTimeout(timer);
    // Anything a block left running outside its process group (it should not) goes now.
    try {
      process.kill(-child.pid!, "SIGKILL");
    } catch {
      // The group is gone: nothing was left.
    }

    const read = (name: string): Promise<string> => readFile(join(harness, name), "utf8").catch(() => "");
    const results: BlockResult[] = [];
    for (const [n, block] of blocks.entries()) {
      const rc = await read(`${n}.rc`);
      results.push({ block, rc: rc.trim() === "" ? undefined : Number(rc), out: await read(`${n}.out`), err: await read(`${n}.err`), note: (await read(`${n}.note`)).trim() });
    }
    if (needsSidecar) {
      const rc = (await read("sidecar.rc")).trim();
      if (rc !== "0" && rc !== "130") {
        results.unshift({ block: { ...blocks[0]!, text: "(the sidecar the session needs)\n" }, rc: rc === "" ? undefined : Number(rc), out: await read("sidecar.out"), err: await read("sidecar.err") + harnessOutput, note: (await read("sidecar.note")).trim() });
      }
    }
    return results;
  } finally {
    await rm(base, { recursive: true, force: true, maxRetries: 3 });
  }
}

/** Why a block's run fails the docs, or undefined when it did what the docs say. */
function failure(r: BlockResult): string | undefined {
  const where = `${r.block.file}:${r.block.line}`;
  const shown = `--- the block\n${r.block.text}--- stdout\n${r.out.slice(-4000)}--- stderr\n${r.err.slice(-4000)}`;
  const background = r.block.marker.kind === "runnable" && r.block.marker.options.has("background");
  if (r.note) return `${where}: ${r.note}\n${shown}`;
  if (r.rc === undefined) return `${where}: did not run (an earlier block of its session failed)`;
  // 130: a background block stopped by SIGINT reports the signal when a shell or npx relays it.
  const ok = r.rc === 0 || (background && r.rc === 130);
  if (!ok) return `${where}: exited ${r.rc}${r.rc === 124 || r.rc === 137 ? " (timed out)" : ""}\n${shown}`;
  const output = `${r.out}\n${r.err}`.split("\n");
  for (const e of expectations(r.block.text)) {
    if (!output.some((l) => e.pattern.test(l))) return `${where}: expected a line with "${e.text}"\n${shown}`;
  }
  return undefined;
}

const files = await markdownFiles();
const blocksByFile = new Map<string, ShellBlock[]>();
const strayByFile = new Map<string, number[]>();
for (const file of files) {
  const markdown = await readFile(join(ROOT, file), "utf8");
  blocksByFile.set(file, shellBlocks(file, markdown));
  strayByFile.set(file, strayMarkers(markdown));
}
const isolated = canIsolate();

/** At most PARALLEL sessions at once; one at a time when they share the host's ports. */
const slots: (() => void)[] = [];
let busy = 0;
async function slot<T>(run: () => Promise<T>): Promise<T> {
  const limit = isolated ? PARALLEL : 1;
  if (busy >= limit) await new Promise<void>((resolve) => slots.push(resolve));
  busy++;
  try {
    return await run();
  } finally {
    busy--;
    slots.shift()?.();
  }
}

describe("the docs' shell blocks", () => {
  it("are each marked runnable or not-runnable with a reason, with options the harness knows", () => {
    const problems: string[] = [];
    const summary: string[] = [];
    for (const [file, blocks] of blocksByFile) {
      const runnable = blocks.filter((b) => b.marker.kind === "runnable").length;
      const not = blocks.filter((b) => b.marker.kind === "not-runnable");
      if (blocks.length > 0) summary.push(`${file}: ${runnable} runnable, ${not.length} not${not.map((b) => `\n    :${b.line} ${(b.marker as { reason: string }).reason}`).join("")}`);
      for (const b of blocks) {
        if (b.marker.kind === "none") problems.push(`${b.file}:${b.line}: a shell block without <!-- runnable --> or <!-- not-runnable: REASON --> before it`);
        if (b.marker.kind === "runnable") for (const p of optionProblems(b.marker.options)) problems.push(`${b.file}:${b.line}: ${p}`);
      }
      for (const line of strayByFile.get(file) ?? []) problems.push(`${file}:${line}: a marker with no shell block right after it`);
    }
    console.log(`Shell blocks in the docs (${isolated ? "each session in its own network namespace" : "no user namespaces here: sessions one at a time on the host's loopback"}):\n  ${summary.join("\n  ")}`);
    expect(problems).toEqual([]);
    // The walk-through a new user follows must be among what runs.
    expect(blocksByFile.get("README.md")?.filter((b) => b.marker.kind === "runnable").length ?? 0).toBeGreaterThanOrEqual(4);
  });

  it("finds marked, unmarked and indented blocks, and reads expected output", () => {
    const md = ["<!-- runnable: session=a background ready=7420 -->", "```sh", "weft sidecar", "```", "", "```", "$ weft peers", "```", "- item:", "", "  <!-- not-runnable: needs a cluster -->", "  ```bash", "  kubectl apply -k .", "  ```", "```", "plain output", "```"].join("\n");
    const blocks = shellBlocks("x.md", md);
    expect(blocks.map((b) => [b.line, b.marker.kind, b.text])).toEqual([
      [2, "runnable", "weft sidecar\n"],
      [6, "none", "$ weft peers\n"],
      [12, "not-runnable", "kubectl apply -k .\n"],
    ]);
    expect((blocks[0]!.marker as { options: Map<string, string> }).options.get("ready")).toBe("7420");
    expect(strayMarkers(md)).toEqual([]);
    expect(strayMarkers("<!-- runnable -->\n```ts\nconnect();\n```\n")).toEqual([1]);
    const file = "<!-- runnable: session=a file=app.mjs -->\n```js\nconnect();\n```\n";
    expect(strayMarkers(file)).toEqual([]);
    expect(shellBlocks("x.md", file).map((b) => b.text)).toEqual(["connect();\n"]);
    const [e] = expectations("npx weft publish a.b --data x   # → a.b 1 … done");
    expect(e!.pattern.test("a.b 1 and done")).toBe(true);
    expect(e!.pattern.test("a.b 10")).toBe(false);
  });

  for (const [file, blocks] of blocksByFile) {
    const sessions = new Map<string, ShellBlock[]>();
    for (const b of blocks) {
      if (b.marker.kind !== "runnable" || optionProblems(b.marker.options).length > 0) continue;
      const name = b.marker.options.get("session") ?? `line ${b.line}`;
      sessions.set(name, [...(sessions.get(name) ?? []), b]);
    }
    for (const [name, session] of sessions) {
      const limit = session.reduce((s, b) => s + Number((b.marker as { options: Map<string, string> }).options.get("timeout") ?? DEFAULT_TIMEOUT_S), 90) * 1000;
      it.concurrent(`${file} ${name.startsWith("line ") ? name : `session ${name}`} (${session.map((b) => `:${b.line}`).join(" ")}) runs as written`, async () => {
        const results = await slot(async () => {
          if (!isolated) {
            const taken = [];
            for (const p of DEFAULT_PORTS) if (!(await portFree(p))) taken.push(p);
            if (taken.length > 0) throw new Error(`no user namespaces on this machine, and port(s) ${taken.join(", ")} on 127.0.0.1 are taken: the docs' defaults cannot be tested here`);
          }
          return runSession(session, isolated);
        });
        const failures = results.map(failure).filter((f): f is string => f !== undefined);
        expect(failures.slice(0, 1).join("\n"), `${relative(ROOT, join(ROOT, file))}`).toBe("");
      }, limit);
    }
  }
});
