/**
 * The container image, built from deploy/container/Containerfile by scripts/build-image.sh
 * with buildah, then checked and run.
 *
 * No base image can be pulled on the machines that run this, so the build's FROM is a
 * stand-in for node:20-bookworm-slim made of this Debian bookworm machine's own node, npm
 * and libraries (node-base-standin.sh), which installs offline from an npm cache filled on
 * the host. Everything else is the real recipe: every RUN, COPY, ENV, USER, VOLUME, EXPOSE,
 * HEALTHCHECK, ENTRYPOINT and CMD line runs in `buildah build`. The image is then run with
 * `buildah run --isolation chroot` (buildah's default OCI isolation needs runc or crun,
 * which cannot create containers in this sandbox; podman run fails the same way) inside a
 * network namespace of its own, so that its listeners on 0.0.0.0 are its own.
 *
 * Needs root, buildah and iproute2. Without them it says what it skipped and why; under
 * CI=true a missing prerequisite fails instead.
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { chmodSync, chownSync, copyFileSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, realpathSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { declaration, readContainerfile, stages } from "./containerfile.js";

const root = fileURLToPath(new URL("../../..", import.meta.url));
const containerfilePath = join(root, "deploy/container/Containerfile");
const UID = 10001;
/** Where the stand-in's npm looks for its offline cache inside the build. */
const NPM_CACHE_IN_BUILD = "/var/cache/weft-npm";
const env = process.env;

/** What this test needs and does not have here, each with the reason. */
function missingPrerequisites(): string[] {
  const missing: string[] = [];
  const has = (cmd: string): boolean => spawnSync("sh", ["-c", `command -v ${cmd}`], { stdio: "ignore" }).status === 0;
  if (process.getuid?.() !== 0) missing.push("root: buildah's storage, chroot isolation and network namespaces need it");
  if (!has("buildah")) missing.push("buildah: apt-get install buildah");
  if (!has("ip")) missing.push("ip: apt-get install iproute2");
  if (!has("nsenter")) missing.push("nsenter: apt-get install util-linux");
  if (!has("openssl")) missing.push("openssl: `weft certs` makes the TLS material with it (apt-get install openssl)");
  const os = existsSync("/etc/os-release") ? readFileSync("/etc/os-release", "utf8") : "";
  if (!/^VERSION_CODENAME=bookworm$/m.test(os) || !/^ID=debian$/m.test(os)) {
    missing.push("Debian bookworm: the stand-in for node:20-bookworm-slim is made of this machine's files");
  }
  if (process.versions.node.split(".")[0] !== "20") missing.push(`node 20 (this is ${process.versions.node}): the Containerfile's base is Node 20`);
  return missing;
}

const missing = missingPrerequisites();
if (missing.length > 0) {
  const why = `the container image test needs what this machine lacks:\n  - ${missing.join("\n  - ")}`;
  if (process.env.CI === "true") {
    describe("container image (CI)", () => {
      it("has its prerequisites", () => {
        throw new Error(why);
      });
    });
  } else {
    console.warn(`SKIPPED: ${why}`);
    describe.skip("container image (skipped: prerequisites missing, see above)", () => {
      it("builds, checks and runs the image", () => {});
    });
  }
}

describe.runIf(missing.length === 0)("container image from deploy/container/Containerfile", () => {
  const id = `${process.pid}`;
  const standin = `localhost/weft-test/node-standin:${id}`;
  const image = `localhost/weft-test/weft-mesh:${id}`;
  const netns = `weft-image-${id}`;
  let work: string;
  let tarball: string;
  let container: string;
  let mountpoint: string;
  let config: DockerConfig;
  let standinEnv: Record<string, string>;

  beforeAll(() => {
    work = mkdtempSync(join(tmpdir(), "weft-image-"));
    mkdirSync(join(work, "pack"));
    run("npm", ["pack", "--silent", "--pack-destination", join(work, "pack")], { cwd: root });
    const packed = readdirSync(join(work, "pack")).filter((f) => f.endsWith(".tgz"));
    expect(packed).toHaveLength(1);
    tarball = join(work, "pack", packed[0]!);

    // Fills an npm cache with the package's production dependencies, from this machine's
    // network; the build's npm installs from it offline.
    run("npm", ["install", "--global", "--prefix", join(work, "host"), "--cache", join(work, "npm-cache"), "--omit=dev", "--no-audit", "--no-fund", tarball]);

    run(join(root, "test/deploy/container/node-base-standin.sh"), [standin, NPM_CACHE_IN_BUILD]);
    standinEnv = envRecord(inspectImage(standin).Env ?? []);
    const built = run(join(root, "scripts/build-image.sh"), ["--builder", "buildah", "--tarball", tarball, "--tag", image], {
      env: { ...env, NODE_IMAGE: standin, WEFT_IMAGE_BUILD_FLAGS: `--isolation chroot -v ${join(work, "npm-cache")}:${NPM_CACHE_IN_BUILD}` },
    });
    console.log(`built ${image} from ${tarball.split("/").at(-1)} on the stand-in ${standin}:\n${(built.stdout + built.stderr).split("\n").filter((l) => /STEP|COMMIT/.test(l)).join("\n")}`);
    config = inspectImage(image);
    container = run("buildah", ["from", "--pull-never", "--name", `weft-image-test-${id}`, image]).stdout.trim();
    mountpoint = run("buildah", ["mount", container]).stdout.trim();
    run("ip", ["netns", "add", netns]);
    run("ip", ["netns", "exec", netns, "ip", "link", "set", "lo", "up"]);
  }, 600_000);

  afterAll(() => {
    if (container) spawnSync("buildah", ["rm", container], { env, stdio: "ignore" });
    spawnSync("buildah", ["rmi", image, standin], { env, stdio: "ignore" });
    spawnSync("ip", ["netns", "del", netns], { stdio: "ignore" });
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it("has the configuration the Containerfile declares", () => {
    const declared = declaration(readContainerfile(containerfilePath), standinEnv);
    // The pinned base names the Node release the stand-in should be; a newer node here is
    // noted, not failed: the pin is bumped on purpose, not by the machine's updates.
    const pinned = /^ARG NODE_IMAGE=node:(\d+\.\d+\.\d+)-bookworm-slim/m.exec(readFileSync(containerfilePath, "utf8"))?.[1];
    expect(pinned?.split(".")[0]).toBe(process.versions.node.split(".")[0]);
    if (pinned !== process.versions.node) console.warn(`note: the Containerfile pins node ${pinned}; the stand-in has ${process.versions.node}`);
    expect(config.User).toBe(declared.user);
    expect(Object.keys(config.Volumes ?? {}).sort()).toEqual([...declared.volumes].sort());
    expect(Object.keys(config.ExposedPorts ?? {}).sort()).toEqual([...declared.exposedPorts].sort());
    expect(config.Entrypoint).toEqual(declared.entrypoint);
    expect(config.Cmd).toEqual(declared.cmd);
    expect(config.WorkingDir).toBe(declared.workingDir);
    expect(config.StopSignal).toBe(declared.stopSignal);
    const imageEnv = envRecord(config.Env ?? []);
    for (const [k, v] of Object.entries(declared.env)) expect(imageEnv[k], `ENV ${k}`).toBe(v);
    // Dropped by an image in the OCI format: build-image.sh must write the docker format.
    expect(config.Healthcheck).toEqual({
      Test: declared.healthcheck!.test,
      Interval: declared.healthcheck!.intervalNs,
      Timeout: declared.healthcheck!.timeoutNs,
      StartPeriod: declared.healthcheck!.startPeriodNs,
      Retries: declared.healthcheck!.retries,
    });
  });

  it("runs as a numeric non-root user, listens on every address and is never told --insecure", () => {
    expect(config.User).toMatch(/^[1-9]\d*:\d+$/);
    const imageEnv = envRecord(config.Env ?? []);
    expect(imageEnv).toMatchObject({ WEFT_LISTEN: "0.0.0.0:7420", WEFT_PEER_LISTEN: "0.0.0.0:7421", WEFT_HTTP: "0.0.0.0:7422", WEFT_DATA_DIR: "/var/lib/weft" });
    expect(imageEnv.WEFT_INSECURE).toBeUndefined();
    expect([...(config.Entrypoint ?? []), ...(config.Cmd ?? [])]).not.toContain("--insecure");
    expect(Object.keys(config.Volumes ?? {})).toEqual([imageEnv.WEFT_DATA_DIR]);
  });

  it("holds the installed package, its user and its data directory, and not the build's leftovers", () => {
    const instructions = readContainerfile(containerfilePath);
    const [build, runtime] = [stages(instructions).at(0)!, stages(instructions).at(-1)!];
    // The build stage installs the tarball without dev dependencies into the prefix that the runtime stage copies.
    const install = build.find((i) => i.keyword === "RUN" && /\bnpm install\b/.test(i.args));
    expect(install?.args).toMatch(/--omit=dev/);
    const prefix = /--prefix\s+(\S+)/.exec(install!.args)?.[1];
    expect(runtime.some((i) => i.keyword === "COPY" && i.args === `--from=build ${prefix} ${prefix}`)).toBe(true);

    const pkg = JSON.parse(readFileSync(join(mountpoint, prefix!, "lib/node_modules", packageName(tarball), "package.json"), "utf8")) as { name: string; version: string };
    expect(`${pkg.name}-${pkg.version}.tgz`).toBe(tarball.split("/").at(-1));
    const bin = join(mountpoint, prefix!, "bin/weft");
    expect(lstatSync(bin).isSymbolicLink()).toBe(true);
    expect(realpathSync(bin).startsWith(join(mountpoint, prefix!, "lib/node_modules"))).toBe(true);
    const modules = join(mountpoint, prefix!, "lib/node_modules", pkg.name, "node_modules");
    // Dev dependencies stay out: the image runs the compiled dist/, with no TypeScript toolchain.
    for (const dev of ["typescript", "tsx", "vitest", "@bufbuild/buf"]) expect(existsSync(join(modules, dev)), `dev dependency ${dev}`).toBe(false);
    const version = inContainer(["weft", "--version"]);
    expect(version.stdout.trim()).toBe(pkg.version);
    // LevelDB's native addon for this libc (glibc), which node-gyp-build picks at run time.
    expect(existsSync(join(modules, "classic-level/prebuilds/linux-x64/classic-level.node"))).toBe(true);
    // koffi's prebuilt binary loads glibc there: without it the sidecar silently does without malloc_trim.
    const ffi = inContainer(["node", "-e", `require(${JSON.stringify(`${prefix}/lib/node_modules/${pkg.name}/node_modules/koffi`)}).load("libc.so.6").func("int malloc_trim(size_t pad)")`]);
    expect(ffi.status, ffi.stderr).toBe(0);
    expect(readFileSync(join(mountpoint, prefix!, "healthcheck.mjs"))).toEqual(readFileSync(join(root, "deploy/container/healthcheck.mjs")));
    expect(readdirSync(join(mountpoint, "tmp")).filter((f) => f.endsWith(".tgz"))).toEqual([]);

    const passwd = readFileSync(join(mountpoint, "etc/passwd"), "utf8");
    expect(passwd).toMatch(new RegExp(`^weft:x:${UID}:${UID}:`, "m"));
    expect(config.User).toBe(`${UID}:${UID}`);
    const data = statSync(join(mountpoint, "var/lib/weft"));
    expect({ uid: data.uid, gid: data.gid, mode: (data.mode & 0o777).toString(8) }).toEqual({ uid: UID, gid: UID, mode: "700" });
    expect(statSync(join(mountpoint, "etc/weft/tls")).isDirectory()).toBe(true);
  });

  it("refuses to start as it is, beyond loopback without TLS, and says how to fix it", () => {
    const r = inContainer([...entrypoint()]);
    expect(r.status).toBe(1);
    expect(r.stderr).toContain("beyond loopback without TLS");
    expect(r.stderr).toContain("--insecure");
    expect(r.stderr).not.toContain("listening on");
  });

  it("runs a development sidecar with --insecure: healthy, takes a publish, stops on SIGTERM", async () => {
    const sidecar = startInContainer([...entrypoint(), "--insecure"]);
    try {
      await waitHealthy(sidecar);
      await sidecar.logged("listening on 0.0.0.0:7420");
      expect(sidecar.stderr()).toContain("--insecure: listen 0.0.0.0:7420");
      const published = inContainer(["weft", "publish", "deploy.image", "--data", "hello from the image"]);
      expect(published.status, published.stderr).toBe(0);
      expect(published.stdout).toMatch(/^deploy\.image \d+\n$/);
      expect(await sidecar.stop()).toBe(0);
      expect(sidecar.stderr()).toContain("weft sidecar stopped");
    } finally {
      sidecar.kill();
    }
    // Once it is gone, the health check says so.
    const after = healthcheck();
    expect(after.status).toBe(1);
    expect(after.stderr).toMatch(/weft healthcheck: GET 127\.0\.0\.1:7422\/healthz failed: http: ECONNREFUSED; https: ECONNREFUSED/);
    // The log is in the volume, written by the image's user. (Asked in the container: a
    // second mount of its layers, as the test's own, need not show what the run wrote.)
    const owner = inContainer(["node", "-e", "const s = require('fs').statSync('/var/lib/weft/CURRENT'); console.log(s.uid + ':' + s.gid)"]);
    expect(owner.stdout.trim()).toBe(`${UID}:${UID}`);
  });

  it("runs with TLS material and a config file mounted: healthy over HTTPS, publishes need a service identity", async () => {
    const certs = join(work, "certs");
    const cli = (...args: string[]) => run(process.execPath, [join(root, "sidecar/bin/weft.js"), "certs", ...args, "--dir", certs]);
    cli("ca");
    cli("node", "image-node");
    cli("service", "checker");
    // As a Kubernetes TLS Secret names them; readable by the image's user only.
    const tls = join(work, "tls");
    mkdirSync(tls);
    for (const [from, to] of [["node-image-node.crt", "tls.crt"], ["node-image-node.key", "tls.key"], ["ca.crt", "ca.crt"]] as const) {
      copyFileSync(join(certs, from), join(tls, to));
      chownSync(join(tls, to), UID, UID);
      chmodSync(join(tls, to), 0o400);
    }
    chmodSync(certs, 0o755);
    for (const f of ["service-checker.crt", "service-checker.key", "ca.crt"]) chownSync(join(certs, f), UID, UID);
    const weftYaml = join(work, "weft.yaml");
    writeFileSync(weftYaml, ["tls: { cert: tls/tls.crt, key: tls/tls.key, ca: tls/ca.crt }", "policy:", "  checker: { publish: [deploy.>] }", ""].join("\n"));
    const mounts = ["-v", `${tls}:/etc/weft/tls:ro`, "-v", `${weftYaml}:/etc/weft/weft.yaml:ro`, "-v", `${certs}:/etc/weft/client:ro`, "--env", "WEFT_CONFIG=/etc/weft/weft.yaml"];

    const sidecar = startInContainer([...entrypoint()], mounts);
    try {
      await waitHealthy(sidecar);
      await sidecar.logged("listening on 0.0.0.0:7420");
      expect(sidecar.stderr()).toContain("http https://0.0.0.0:7422");
      expect(sidecar.stderr()).not.toContain("--insecure");
      const tlsCa = ["--tls-ca", "/etc/weft/client/ca.crt"];
      const anonymous = inContainer(["weft", "publish", "deploy.tls", "--data", "x", ...tlsCa], mounts);
      expect(anonymous.status).not.toBe(0);
      expect(anonymous.stderr).toMatch(/UNAUTHENTICATED/);
      const client = ["--tls-cert", "/etc/weft/client/service-checker.crt", "--tls-key", "/etc/weft/client/service-checker.key"];
      const published = inContainer(["weft", "publish", "deploy.tls", "--data", "x", ...tlsCa, ...client], mounts);
      expect(published.status, published.stderr).toBe(0);
      expect(published.stdout).toMatch(/^deploy\.tls \d+\n$/);
      expect(await sidecar.stop()).toBe(0);
    } finally {
      sidecar.kill();
    }
  });

  // ---- helpers ----

  function entrypoint(): string[] {
    return [...(config.Entrypoint ?? []), ...(config.Cmd ?? [])];
  }

  function buildahRun(argv: string[], mounts: string[] = []): string[] {
    return [`--net=/run/netns/${netns}`, "buildah", "run", "--isolation", "chroot", ...mounts, container, "--", ...argv];
  }

  /** Runs a command in the container (its user, environment and working directory) and waits for it. */
  function inContainer(argv: string[], mounts: string[] = []) {
    const r = spawnSync("nsenter", buildahRun(argv, mounts), { env, encoding: "utf8", timeout: 60_000 });
    return { status: r.status, stdout: r.stdout, stderr: r.stderr.replace(/^(subprocess exited with status \d+|Error: exit status \d+)\n/gm, "") };
  }

  /** The image's HEALTHCHECK command, run as the runtime would: in the container. */
  function healthcheck() {
    const test = config.Healthcheck?.Test ?? [];
    expect(test[0]).toBe("CMD");
    return inContainer(test.slice(1));
  }

  /** Polls the image's own health check until it passes; fails if the sidecar exits first or it never does. */
  async function waitHealthy(sidecar: Running): Promise<void> {
    let last = "";
    for (let attempt = 0; attempt < 120; attempt++) {
      if (sidecar.exited()) throw new Error(`the sidecar exited before it was healthy:\n${sidecar.stderr()}`);
      const r = healthcheck();
      if (r.status === 0) return;
      last = r.stderr;
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
    throw new Error(`the health check never passed; last: ${last}\nsidecar:\n${sidecar.stderr()}`);
  }

  interface Running {
    stderr(): string;
    /** Resolves once the sidecar's log has `text` (its output arrives while the test awaits). */
    logged(text: string): Promise<void>;
    exited(): boolean;
    /** SIGTERM to the sidecar's node process; resolves with the container command's exit status. */
    stop(): Promise<number | null>;
    kill(): void;
  }

  function startInContainer(argv: string[], mounts: string[] = []): Running {
    const child: ChildProcess = spawn("nsenter", buildahRun(argv, mounts), { env, stdio: ["ignore", "pipe", "pipe"] });
    let stderr = "";
    child.stderr!.on("data", (b: Buffer) => (stderr += b.toString()));
    child.stdout!.resume();
    const exit = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
    let done = false;
    void exit.then(() => (done = true));
    return {
      stderr: () => stderr,
      async logged(text) {
        for (let i = 0; i < 200 && !stderr.includes(text) && !done; i++) await new Promise((resolve) => setTimeout(resolve, 50));
        expect(stderr).toContain(text);
      },
      exited: () => done,
      async stop() {
        // buildah run does not pass signals on: the runtime's SIGTERM reaches the container's
        // process directly, as here.
        // The image's node, not buildah's chroot helper above it (which runs as the same user).
        const node = descendants(child.pid!).find((p) => p.uid === UID && p.cmdline.startsWith("node ") && p.cmdline.includes(" sidecar"));
        if (!node) throw new Error(`no sidecar process under ${child.pid}`);
        process.kill(node.pid, "SIGTERM");
        return exit;
      },
      kill() {
        if (done) return;
        for (const p of descendants(child.pid!)) {
          try {
            process.kill(p.pid, "SIGKILL");
          } catch {
            // already gone
          }
        }
        child.kill("SIGKILL");
      },
    };
  }
});

interface DockerConfig {
  User?: string;
  Env?: string[];
  Volumes?: Record<string, object>;
  ExposedPorts?: Record<string, object>;
  Entrypoint?: string[];
  Cmd?: string[];
  WorkingDir?: string;
  StopSignal?: string;
  Healthcheck?: { Test: string[]; Interval: number; Timeout: number; StartPeriod: number; Retries: number };
}

function run(cmd: string, args: string[], options: { cwd?: string; env?: NodeJS.ProcessEnv } = {}) {
  const r = spawnSync(cmd, args, { cwd: options.cwd, env: options.env ?? env, encoding: "utf8", maxBuffer: 64 * 1024 * 1024, timeout: 540_000 });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(" ")} failed (${r.status ?? r.signal ?? r.error?.message}):\n${r.stdout}\n${r.stderr}`);
  return r;
}

function inspectImage(name: string): DockerConfig {
  const out = JSON.parse(run("buildah", ["inspect", "--type", "image", name]).stdout) as { Docker: { config: DockerConfig } };
  return out.Docker.config;
}

function envRecord(list: string[]): Record<string, string> {
  return Object.fromEntries(list.map((e) => [e.slice(0, e.indexOf("=")), e.slice(e.indexOf("=") + 1)]));
}

/** weft-mesh-0.2.0.tgz -> weft-mesh */
function packageName(tarball: string): string {
  return tarball.split("/").at(-1)!.replace(/-\d+\.\d+\.\d+[^/]*\.tgz$/, "");
}

/** Every process below `pid`, from /proc. */
function descendants(pid: number): { pid: number; uid: number; cmdline: string }[] {
  const all: { pid: number; ppid: number; uid: number; cmdline: string }[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      const uid = statSync(`/proc/${entry}`).uid;
      const cmdline = readFileSync(`/proc/${entry}/cmdline`, "utf8").replaceAll("\0", " ");
      all.push({ pid: Number(entry), ppid, uid, cmdline });
    } catch {
      // exited meanwhile
    }
  }
  const out: { pid: number; uid: number; cmdline: string }[] = [];
  const queue = [pid];
  while (queue.length > 0) {
    const parent = queue.shift()!;
    for (const p of all.filter((x) => x.ppid === parent)) {
      out.push(p);
      queue.push(p.pid);
    }
  }
  return out;
}
