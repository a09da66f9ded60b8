/**
 * deploy/systemd/weft.service: its flags are flags `weft sidecar` has, its hardening is
 * there, `systemd-analyze verify` accepts it, and its ExecStart, run as systemd would run it
 * (specifiers expanded, an unprivileged user, the example /etc/weft/weft.yaml, TLS from the
 * credentials directory), starts a sidecar that serves, survives ExecReload's SIGHUP and
 * stops gracefully on SIGTERM. systemd itself does not run here (it is not PID 1): the
 * sandboxing settings are checked by systemd-analyze, not enforced.
 *
 * The unit's checks need systemd-analyze; the run needs root, iproute2 (its own network
 * namespace, for the example config's fixed ports), setpriv and openssl. Without them it
 * says what it skipped and why; under CI=true a missing prerequisite fails instead.
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { chmodSync, chownSync, copyFileSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { defaultConfig } from "../../../sidecar/settings/index.js";

const root = fileURLToPath(new URL("../../..", import.meta.url));
const unitPath = join(root, "deploy/systemd/weft.service");
const unitText = readFileSync(unitPath, "utf8");
const ci = process.env.CI === "true";
/** A UID from systemd's DynamicUser range (61184-65519), as the service would get. */
const DYNAMIC_UID = 61184;

/** A unit file as systemd reads it: [Section] -> key -> every value, in order (a repeated key adds). */
function parseUnit(text: string): Map<string, Map<string, string[]>> {
  const sections = new Map<string, Map<string, string[]>>();
  let current: Map<string, string[]> | undefined;
  for (const raw of text.replace(/\\\n/g, " ").split("\n")) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#") || line.startsWith(";")) continue;
    const section = /^\[(.+)\]$/.exec(line);
    if (section) {
      current = new Map();
      sections.set(section[1]!, current);
      continue;
    }
    const eq = line.indexOf("=");
    if (!current || eq < 0) throw new Error(`${unitPath}: not a key=value line: ${line}`);
    const key = line.slice(0, eq).trim();
    current.set(key, [...(current.get(key) ?? []), line.slice(eq + 1).trim()]);
  }
  return sections;
}

const unit = parseUnit(unitText);
const service = unit.get("Service")!;
/** The last value of a [Service] key, as systemd takes it for single-valued settings. */
const get = (key: string): string | undefined => service.get(key)?.at(-1);
const execStart = get("ExecStart")!.split(/\s+/);

function has(cmd: string): boolean {
  return spawnSync("sh", ["-c", `command -v ${cmd}`], { stdio: "ignore" }).status === 0;
}

/** Registers a test that fails under CI and is skipped, with the reason printed, elsewhere. */
function unavailable(name: string, why: string[]): void {
  const message = `${name} needs what this machine lacks:\n  - ${why.join("\n  - ")}`;
  if (ci) {
    it(name, () => {
      throw new Error(message);
    });
  } else {
    console.warn(`SKIPPED: ${message}`);
    it.skip(`${name} (skipped: prerequisites missing, see above)`, () => {});
  }
}

describe("deploy/systemd/weft.service", () => {
  it("starts `weft sidecar` with flags the sidecar has", () => {
    expect(execStart.slice(0, 2)).toEqual(["/usr/local/bin/weft", "sidecar"]);
    const help = spawnSync(process.execPath, [join(root, "sidecar/bin/weft.js"), "sidecar", "--help"], { encoding: "utf8" });
    expect(help.status, help.stderr).toBe(0);
    const known = new Set([...help.stdout.matchAll(/^\s+(?:-\w, )?(--[a-z0-9-]+)/gm)].map((m) => m[1]!));
    expect(known.has("--data-dir")).toBe(true); // the help was read
    const used = execStart.filter((a) => a.startsWith("--"));
    expect(used.length).toBeGreaterThan(0);
    for (const flag of used) expect(known.has(flag), `ExecStart uses ${flag}, which \`weft sidecar --help\` does not list`).toBe(true);
    // Each flag that takes a value has one.
    for (const [i, a] of execStart.entries()) if (a.startsWith("--tls-") || a === "--config" || a === "--data-dir") expect(execStart[i + 1]).toMatch(/^[^-]/);
  });

  it("takes the data directory from StateDirectory, the config from ConfigurationDirectory and TLS from credentials", () => {
    const flag = (name: string) => execStart[execStart.indexOf(name) + 1];
    expect(get("StateDirectory")).toBe("weft");
    expect(flag("--data-dir")).toBe("%S/weft");
    expect(get("ConfigurationDirectory")).toBe("weft");
    expect(flag("--config")).toBe("%E/weft/weft.yaml");
    const credentials = new Map((service.get("LoadCredential") ?? []).map((v) => v.split(":") as [string, string]));
    expect([...credentials.keys()].sort()).toEqual(["ca.crt", "tls.crt", "tls.key"]);
    for (const [name, file] of credentials) expect(file).toBe(`/etc/weft/tls/${name}`);
    expect([flag("--tls-cert"), flag("--tls-key"), flag("--tls-ca")]).toEqual(["%d/tls.crt", "%d/tls.key", "%d/ca.crt"]);
  });

  it("is hardened, and leaves MemoryDenyWriteExecute off", () => {
    expect({
      DynamicUser: get("DynamicUser"),
      ProtectSystem: get("ProtectSystem"),
      ProtectHome: get("ProtectHome"),
      PrivateTmp: get("PrivateTmp"),
      NoNewPrivileges: get("NoNewPrivileges"),
      CapabilityBoundingSet: get("CapabilityBoundingSet"),
      RestrictAddressFamilies: get("RestrictAddressFamilies")?.split(/\s+/).sort(),
    }).toEqual({
      DynamicUser: "yes",
      ProtectSystem: "strict",
      ProtectHome: "yes",
      PrivateTmp: "yes",
      NoNewPrivileges: "yes",
      CapabilityBoundingSet: "",
      RestrictAddressFamilies: ["AF_INET", "AF_INET6", "AF_UNIX"],
    });
    expect(service.get("SystemCallFilter")).toContain("@system-service");
    expect(["no", undefined]).toContain(get("MemoryDenyWriteExecute"));
  });

  it("restarts on failure within limits and gives the graceful stop more time than it takes", () => {
    expect(get("Restart")).toBe("on-failure");
    expect(seconds(get("RestartSec")!)).toBeGreaterThan(0);
    expect(Number(unit.get("Unit")!.get("StartLimitBurst")?.at(-1))).toBeGreaterThan(0);
    expect(seconds(unit.get("Unit")!.get("StartLimitIntervalSec")!.at(-1)!)).toBeGreaterThan(seconds(get("RestartSec")!) * Number(unit.get("Unit")!.get("StartLimitBurst")!.at(-1)));
    expect(get("KillSignal")).toBe("SIGTERM");
    // The sidecar waits up to shutdownGrace for streams, then closes its log.
    expect(seconds(get("TimeoutStopSec")!) * 1000).toBeGreaterThanOrEqual(defaultConfig().shutdownGraceMs * 2);
    expect(get("ExecReload")).toBe("/bin/kill -HUP $MAINPID");
  });

  const verifyMissing = has("systemd-analyze") ? [] : ["systemd-analyze: apt-get install systemd"];
  if (verifyMissing.length > 0) {
    unavailable("systemd-analyze verify", verifyMissing);
  } else {
    describe("systemd-analyze", () => {
      let dir: string;
      let prefix: string;
      beforeAll(() => {
        dir = mkdtempSync(join(tmpdir(), "weft-unit-"));
        prefix = installPackage(dir);
      }, 300_000);
      afterAll(() => rmSync(dir, { recursive: true, force: true }));

      /** The unit with ExecStart's binary where this test installed the package: verify checks that it exists. */
      function unitAt(name: string, text: string): string {
        mkdirSync(join(dir, name));
        const file = join(dir, name, "weft.service");
        writeFileSync(file, text.replace(/^ExecStart=\/usr\/local\/bin\/weft /m, `ExecStart=${prefix}/bin/weft `));
        return file;
      }
      const verify = (file: string) => spawnSync("systemd-analyze", ["verify", "--man=no", "--generators=no", file], { encoding: "utf8" });

      it("verify accepts it, with the binary that `npm install -g` of the package installs", () => {
        const r = verify(unitAt("ok", unitText));
        const about = (r.stdout + r.stderr).split("\n").filter((l) => l.includes("weft.service"));
        expect({ status: r.status, about }).toEqual({ status: 0, about: [] });
        // The same check sees a broken unit: a misspelt setting is reported.
        const bad = verify(unitAt("misspelt", unitText.replace("ProtectHome=yes", "ProtectHom=yes")));
        expect(bad.stderr).toContain("Unknown key 'ProtectHom'");
      });

      it("security rates its exposure low", () => {
        const r = spawnSync("systemd-analyze", ["security", "--offline=yes", "--no-pager", unitAt("security", unitText)], { encoding: "utf8" });
        const level = /Overall exposure level for weft\.service: ([\d.]+)/.exec(r.stdout)?.[1];
        console.log(`systemd-analyze security: exposure ${level} (0 is the least exposed, 10 the most)`);
        expect(Number(level)).toBeLessThanOrEqual(2);
      });
    });
  }

  const mdweMissing = has("python3") ? [] : ["python3: it sets PR_SET_MDWE (the kernel's MemoryDenyWriteExecute) before running node; apt-get install python3"];
  if (mdweMissing.length > 0) {
    unavailable("MemoryDenyWriteExecute stops node", mdweMissing);
  } else {
    it("MemoryDenyWriteExecute would stop node: V8 aborts at its first compiled function", () => {
      const underMdwe = (args: string[]) =>
        spawnSync(
          "python3",
          [
            "-c",
            // PR_SET_MDWE = 65, PR_MDWE_REFUSE_EXEC_GAIN = 1: what systemd >= 254 sets for
            // MemoryDenyWriteExecute=yes; older systemd's seccomp filter refuses more.
            "import ctypes, os, sys\nlibc = ctypes.CDLL(None, use_errno=True)\nif libc.prctl(65, 1, 0, 0, 0) != 0: sys.exit('prctl(PR_SET_MDWE): ' + os.strerror(ctypes.get_errno()))\nos.execv(sys.argv[1], sys.argv[1:])",
            process.execPath,
            ...args,
            "-e",
            "let s = 0; for (let i = 0; i < 1e7; i++) s += i; console.log(s)",
          ],
          { encoding: "utf8" },
        );
      const jit = underMdwe([]);
      if (jit.status === 1 && jit.stderr.startsWith("prctl(PR_SET_MDWE)")) throw new Error(`this kernel has no PR_SET_MDWE (Linux >= 6.3): ${jit.stderr}`);
      expect(jit.status).not.toBe(0);
      expect(jit.stderr).toContain("Check failed");
      // Without the JIT it runs: MemoryDenyWriteExecute would need node --jitless, far slower.
      expect(underMdwe(["--jitless"]).stdout.trim()).toBe("49999995000000");
    });
  }

  const runMissing = [
    ...(process.getuid?.() === 0 ? [] : ["root: a network namespace of its own and an unprivileged user to run as"]),
    ...(has("ip") ? [] : ["ip: apt-get install iproute2"]),
    ...(has("setpriv") ? [] : ["setpriv: apt-get install util-linux"]),
    ...(has("openssl") ? [] : ["openssl: `weft certs` makes the TLS material with it"]),
  ];
  if (runMissing.length > 0) {
    unavailable("ExecStart run as systemd would", runMissing);
  } else {
    describe("ExecStart, run as systemd would run it", () => {
      const netns = `weft-unit-${process.pid}`;
      let dir: string;
      let prefix: string;
      let etc: string;
      let state: string;
      let credentials: string;

      beforeAll(() => {
        dir = mkdtempSync(join(tmpdir(), "weft-unit-run-"));
        chmodSync(dir, 0o755);
        prefix = installPackage(dir);
        // /etc/weft with the example config, /var/lib/weft and the credentials directory, as
        // systemd lays them out for the dynamic user.
        etc = join(dir, "etc");
        state = join(dir, "state");
        credentials = join(dir, "credentials");
        mkdirSync(join(etc, "weft"), { recursive: true });
        copyFileSync(join(root, "deploy/systemd/weft.yaml"), join(etc, "weft/weft.yaml"));
        mkdirSync(state, { mode: 0o755 });
        mkdirSync(join(state, "weft"), { mode: 0o700 });
        chownSync(join(state, "weft"), DYNAMIC_UID, DYNAMIC_UID);
        const certs = join(dir, "certs");
        const weftCerts = (...args: string[]) => run(process.execPath, [join(root, "sidecar/bin/weft.js"), "certs", ...args, "--dir", certs]);
        weftCerts("ca");
        weftCerts("node", "host-a");
        mkdirSync(credentials, { mode: 0o500 });
        for (const [from, to] of [["node-host-a.crt", "tls.crt"], ["node-host-a.key", "tls.key"], ["ca.crt", "ca.crt"]] as const) {
          copyFileSync(join(certs, from), join(credentials, to));
          chmodSync(join(credentials, to), 0o400);
          chownSync(join(credentials, to), DYNAMIC_UID, DYNAMIC_UID);
        }
        chownSync(credentials, DYNAMIC_UID, DYNAMIC_UID);
        run("ip", ["netns", "add", netns]);
        run("ip", ["netns", "exec", netns, "ip", "link", "set", "lo", "up"]);
      }, 300_000);

      afterAll(() => {
        spawnSync("ip", ["netns", "del", netns], { stdio: "ignore" });
        if (dir) rmSync(dir, { recursive: true, force: true });
      });

      it("serves with the example config and TLS from credentials, survives SIGHUP, stops on SIGTERM", async () => {
        const argv = execStart.map((a) =>
          a.replaceAll("%E", etc).replaceAll("%S", state).replaceAll("%d", credentials).replace(/^\/usr\/local\/bin\/weft$/, `${prefix}/bin/weft`),
        );
        // The environment systemd gives the service: no WEFT_* of the test's.
        const serviceEnv = { PATH: process.env.PATH!, CREDENTIALS_DIRECTORY: credentials, STATE_DIRECTORY: join(state, "weft"), CONFIGURATION_DIRECTORY: join(etc, "weft") };
        const child = spawn("ip", ["netns", "exec", netns, "setpriv", `--reuid=${DYNAMIC_UID}`, `--regid=${DYNAMIC_UID}`, "--clear-groups", ...argv], {
          env: serviceEnv,
          stdio: ["ignore", "ignore", "pipe"],
        });
        let log = "";
        child.stderr!.on("data", (b: Buffer) => (log += b.toString()));
        const exit = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
        try {
          const healthy = async (): Promise<void> => {
            for (let i = 0; i < 120; i++) {
              if (child.exitCode !== null) throw new Error(`the sidecar exited:\n${log}`);
              const r = inNetns(["node", join(root, "deploy/container/healthcheck.mjs")], { WEFT_HTTP: "127.0.0.1:7422" });
              if (r.status === 0) return;
              await new Promise((resolve) => setTimeout(resolve, 250));
            }
            throw new Error(`/healthz never answered:\n${log}`);
          };
          await healthy();
          for (let i = 0; i < 100 && !log.includes("listening on"); i++) await new Promise((resolve) => setTimeout(resolve, 50));
          expect(log).toContain("weft sidecar listening on 127.0.0.1:7420 (node host-a, peers on 0.0.0.0:7421, http https://127.0.0.1:7422");
          expect(log).toContain(`data ${join(state, "weft")}`);

          const publish = () => inNetns([`${prefix}/bin/weft`, "publish", "deploy.systemd", "--data", "from the unit", "--tls-ca", join(credentials, "ca.crt")]);
          const published = publish();
          expect(published.status, published.stderr).toBe(0);
          expect(published.stdout).toBe("deploy.systemd 1\n");
          expect(readdirSync(join(state, "weft"))).toContain("CURRENT");

          // ExecReload: SIGHUP re-reads the TLS files and must not end the process.
          process.kill(child.pid!, "SIGHUP");
          const again = publish();
          expect(again.stdout, again.stderr).toBe("deploy.systemd 2\n");
          expect(child.exitCode).toBeNull();

          process.kill(child.pid!, "SIGTERM");
          expect(await exit).toBe(0);
          expect(log).toContain("weft sidecar stopped");
        } finally {
          if (child.exitCode === null) child.kill("SIGKILL");
        }
      });

      function inNetns(argv: string[], extraEnv: Record<string, string> = {}) {
        return spawnSync("ip", ["netns", "exec", netns, ...argv], { env: { ...process.env, ...extraEnv }, encoding: "utf8", timeout: 60_000 });
      }
    });
  }
});

/** Packs this checkout and installs it as `npm install -g` does, under DIR/prefix. Returns the prefix. */
function installPackage(dir: string): string {
  const pack = join(dir, "pack");
  mkdirSync(pack);
  run("npm", ["pack", "--silent", "--pack-destination", pack], { cwd: root });
  const tarball = readdirSync(pack).find((f) => f.endsWith(".tgz"))!;
  const prefix = join(dir, "prefix");
  run("npm", ["install", "--global", "--prefix", prefix, "--omit=dev", "--no-audit", "--no-fund", join(pack, tarball)]);
  return prefix;
}

function run(cmd: string, args: string[], options: { cwd?: string } = {}) {
  const r = spawnSync(cmd, args, { cwd: options.cwd, encoding: "utf8", maxBuffer: 64 * 1024 * 1024, timeout: 280_000 });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(" ")} failed (${r.status ?? r.signal ?? r.error?.message}):\n${r.stdout}\n${r.stderr}`);
  return r;
}

/** A systemd time span ("30s", "2min", "500ms", "5") in seconds. */
function seconds(span: string): number {
  let total = 0;
  const units: Record<string, number> = { ms: 0.001, s: 1, sec: 1, m: 60, min: 60, h: 3600, "": 1 };
  for (const m of span.trim().matchAll(/(\d+(?:\.\d+)?)\s*([a-z]*)/g)) {
    const unit = units[m[2]!];
    if (unit === undefined) throw new Error(`not a time span systemd reads here: ${span}`);
    total += Number(m[1]) * unit;
  }
  return total;
}
