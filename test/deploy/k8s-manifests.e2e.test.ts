import { type ChildProcess, execFile, spawn } from "node:child_process";
import { once } from "node:events";
import { readFileSync } from "node:fs";
import { chmod, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { request } from "node:https";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parse as parseYaml } from "yaml";
import { connect } from "../../src/client/index.js";
import { WEFT_BIN, freePorts } from "../support/process.js";
import {
  type K8sObject,
  type SidecarSetup,
  containerEnv,
  firstPodName,
  manifestProblems,
  podSpec,
  renderKustomization,
  serviceContainers,
  sidecarContainer,
  weftFacts,
} from "./k8s-manifests.js";

// The pod of deploy/k8s, run as processes on this machine: the weft sidecar with exactly the
// arguments and environment of its container (the downward API giving the first pod's name,
// each volume a temp dir, the TLS Secret made by docs/deploy.md's own commands), its
// probes asked as the kubelet asks them, and the example service container's command run
// against it. That the flags exist is the unit test's; this one shows they work together.
//
// Two things differ from a pod, on purpose: the three listener ports are mapped to free ones
// (other tests run beside this one; the mapping is applied to the args, the probes and the
// service's address alike), and the peers' DNS name does not resolve here (the sidecar says
// so and runs on, as it does before the headless Service has any address).

const run = promisify(execFile);
const children = new Set<ChildProcess>();
const dirs: string[] = [];

afterAll(async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
});

async function tempDir(name: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), `weft-k8s-${name}-`));
  dirs.push(dir);
  return dir;
}

/** Runs `weft ARGS` as a container would: only the container's environment, plus PATH and HOME. */
function startWeft(args: string[], env: Record<string, string>, cwd: string): { child: ChildProcess; stdout: () => string; stderr: () => string } {
  const child = spawn(process.execPath, [WEFT_BIN, ...args], {
    cwd,
    env: { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: cwd, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  children.add(child);
  let out = "";
  let err = "";
  child.stdout!.setEncoding("utf8").on("data", (s: string) => (out += s));
  child.stderr!.setEncoding("utf8").on("data", (s: string) => (err += s));
  return { child, stdout: () => out, stderr: () => err };
}

/** GET over HTTPS as the kubelet probes: the certificate is not checked. */
function probe(port: number, path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: "127.0.0.1", port, path, rejectUnauthorized: false }, (res) => {
      let body = "";
      res.setEncoding("utf8").on("data", (s: string) => (body += s));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on("error", reject);
    req.end();
  });
}

/**
 * Runs the shell block of docs/deploy.md marked "test: k8s-certs" in a temp dir, with `weft`
 * this checkout's CLI and `kubectl` the real one told `--dry-run=client -o yaml` (no cluster
 * is reached), and returns the Secret it makes: file name -> contents. Without kubectl here,
 * the Secret is read from kubectl's arguments (--from-file=PATH gives the key basename(PATH)).
 */
async function secretFromDocs(): Promise<Record<string, Buffer>> {
  const doc = await readFile(new URL("../../docs/deploy.md", import.meta.url), "utf8");
  const block = /<!-- test: k8s-certs\b[^>]*-->\s*```sh\n([\s\S]*?)```/.exec(doc)?.[1];
  if (!block) throw new Error("docs/deploy.md has no shell block marked <!-- test: k8s-certs -->");
  const work = await tempDir("docs-certs");
  const bin = join(work, ".bin");
  const realKubectl = await run("sh", ["-c", "command -v kubectl"]).then((r) => r.stdout.trim(), () => "");
  await run("mkdir", [bin]);
  const shims = {
    weft: `#!/bin/sh\nexec "${process.execPath}" "${WEFT_BIN}" "$@"\n`,
    kubectl: `#!/bin/sh\nprintf '%s\\n' "$@" > "${work}/.kubectl-args"\n${realKubectl ? `exec "${realKubectl}" "$@" --dry-run=client -o yaml > "${work}/.secret.yaml"` : "exit 0"}\n`,
  };
  for (const [name, text] of Object.entries(shims)) {
    await writeFile(join(bin, name), text);
    await chmod(join(bin, name), 0o755);
  }
  await run("bash", ["-euo", "pipefail", "-c", block], { cwd: work, env: { ...process.env, PATH: `${bin}:${process.env.PATH ?? ""}` } });
  const args = (await readFile(join(work, ".kubectl-args"), "utf8")).split("\n").filter(Boolean);
  expect(args.slice(0, 4)).toEqual(["create", "secret", "generic", "weft-tls"]);
  if (realKubectl) {
    const made = parseYaml(await readFile(join(work, ".secret.yaml"), "utf8")) as { kind: string; metadata: { name: string }; data: Record<string, string> };
    expect(made).toMatchObject({ kind: "Secret", metadata: { name: "weft-tls" } });
    return Object.fromEntries(Object.entries(made.data).map(([k, v]) => [k, Buffer.from(v, "base64")]));
  }
  console.log("kubectl is not installed: the Secret is read from its arguments, which kubectl itself did not check");
  const files = args.filter((a) => a.startsWith("--from-file=")).map((a) => a.slice("--from-file=".length));
  return Object.fromEntries(await Promise.all(files.map(async (f) => [basename(f), await readFile(join(work, f))] as const)));
}

const pause = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe("the pod of deploy/k8s, run here", () => {
  let objects: K8sObject[];
  let setup: SidecarSetup;
  /** Declared port -> the free port standing for it. */
  const ports = new Map<number, number>();
  /** A volume's mountPath -> the temp dir standing for it, in the sidecar and in the service container. */
  const sidecarMounts = new Map<string, string>();
  const serviceMounts = new Map<string, string>();
  let sidecar: ReturnType<typeof startWeft>;
  let httpPort: number;

  /**
   * A value of a container (`mounts`: its volumes) with the mount path it lies under, if any,
   * and its port replaced by this machine's stand-ins. One replacement each: the stand-ins
   * themselves lie under /tmp, which is a mount path too.
   */
  function local(value: string, mounts: Map<string, string>): string {
    const eq = value.startsWith("--") ? value.indexOf("=") + 1 : 0;
    const [flag, v] = [value.slice(0, eq), value.slice(eq)];
    const under = [...mounts.keys()].filter((p) => v === p || v.startsWith(`${p}/`)).sort((a, b) => b.length - a.length)[0];
    const path = under === undefined ? v : mounts.get(under)! + v.slice(under.length);
    return flag + path.replace(/:(\d+)$/, (whole, port: string) => (ports.has(Number(port)) ? `:${ports.get(Number(port))}` : whole));
  }

  beforeAll(async () => {
    objects = renderKustomization().objects;
    const checked = await manifestProblems(objects, await weftFacts());
    expect(checked.problems).toEqual([]);
    setup = checked.setup!;
    const pod = podSpec(objects);
    const container = sidecarContainer(objects);

    const declared = [setup.config.listen, setup.config.peerListen, setup.config.http].map((a) => Number(a.slice(a.lastIndexOf(":") + 1)));
    const free = await freePorts(declared.length);
    declared.forEach((p, i) => ports.set(p, free[i]!));

    // The TLS Secret, made by docs/deploy.md's own commands.
    const podName = firstPodName(objects);
    const secret = await secretFromDocs();
    expect(Object.keys(secret).sort()).toEqual(expect.arrayContaining(["ca.crt", `node-${podName}.crt`, `node-${podName}.key`]));
    expect(Object.keys(secret)).not.toContain("ca.key");
    const secretDir = await tempDir("secret-weft-tls");
    for (const [key, value] of Object.entries(secret)) await writeFile(join(secretDir, key), value, { mode: 0o440 });

    // Each of the sidecar's volumes: the TLS Secret, or an empty directory (the data volume, /tmp).
    const volumes = pod.volumes as { name: string; secret?: { secretName: string; items?: { key: string; path: string }[] } }[];
    for (const m of container.volumeMounts as { name: string; mountPath: string }[]) {
      const volume = volumes.find((v) => v.name === m.name);
      sidecarMounts.set(m.mountPath, volume?.secret?.secretName === "weft-tls" && !volume.secret.items ? secretDir : await tempDir(m.name));
    }
    // The service's CA volume: the Secret's ca.crt only, as its items say.
    for (const c of serviceContainers(objects)) {
      for (const m of (c.volumeMounts ?? []) as { name: string; mountPath: string }[]) {
        const volume = volumes.find((v) => v.name === m.name);
        const dir = await tempDir(m.name);
        for (const item of volume?.secret?.items ?? []) await writeFile(join(dir, item.path), secret[item.key]!);
        serviceMounts.set(m.mountPath, dir);
      }
    }

    const env = Object.fromEntries(Object.entries(setup.env).map(([k, v]) => [k, local(v, sidecarMounts)]));
    sidecar = startWeft(
      setup.args.map((a) => local(a, sidecarMounts)),
      env,
      sidecarMounts.get(setup.config.dataDir)!,
    );
    const httpGet = (container.startupProbe as { httpGet: { path: string; port: string | number } }).httpGet;
    const probePort = typeof httpGet.port === "number" ? httpGet.port : (container.ports as { name: string; containerPort: number }[]).find((p) => p.name === httpGet.port)!.containerPort;
    httpPort = ports.get(probePort)!;

    // The startup probe: asked until it answers 200, as the kubelet does, while the sidecar runs.
    for (;;) {
      if (sidecar.child.exitCode !== null) throw new Error(`the sidecar exited with ${sidecar.child.exitCode}: ${sidecar.stderr()}`);
      const answer = await probe(httpPort, httpGet.path).catch(() => undefined);
      if (answer?.status === 200) break;
      await pause(100);
    }
  });

  it("starts with the manifest's arguments, as the node its certificate and pod name say", () => {
    const started = sidecar.stderr().split("\n").find((l) => l.includes("weft sidecar listening on"));
    expect(started).toBeDefined();
    const record = JSON.parse(started!) as { msg: string; node: string };
    expect(record.node).toBe(firstPodName(objects));
    expect(record.msg).toContain(`http https://0.0.0.0:${httpPort}`);
    expect(record.msg).toContain(`peers on 0.0.0.0:${ports.get(7421)}`);
  });

  it("answers its liveness and readiness probes, and a scrape, on the declared HTTP port", async () => {
    const container = sidecarContainer(objects) as Record<string, { httpGet: { path: string } }>;
    expect(await probe(httpPort, container.livenessProbe!.httpGet.path)).toEqual({ status: 200, body: "ok\n" });
    // Readiness follows the sidecar's own state; the peers' name not resolving does not matter.
    let ready = await probe(httpPort, container.readinessProbe!.httpGet.path);
    while (ready.status !== 200 && sidecar.child.exitCode === null) {
      await pause(100);
      ready = await probe(httpPort, container.readinessProbe!.httpGet.path);
    }
    expect(ready).toEqual({ status: 200, body: "ready\n" });
    expect((await probe(httpPort, "/metrics")).body).toContain("weft_");
  });

  it("serves the example service container, which reaches it with the CA only", async () => {
    const service = serviceContainers(objects)[0]!;
    const env = Object.fromEntries(Object.entries(containerEnv(service, firstPodName(objects))).map(([k, v]) => [k, local(v, serviceMounts)]));
    const example = startWeft((service.args as string[]).map((a) => local(a, serviceMounts)), env, await tempDir("example"));

    // A publisher elsewhere in the pod; the example group starts at the latest event, so
    // events are published until its first one arrives.
    const client = connect(local(setup.config.listen, serviceMounts), { tls: { ca: readFileSync(env.WEFT_CLIENT_TLS_CA!) } });
    try {
      let n = 0;
      while (!example.stdout().includes("\n")) {
        if (example.child.exitCode !== null) throw new Error(`the example service exited with ${example.child.exitCode}: ${example.stderr()}`);
        await client.publish({ channel: "orders.created", data: Buffer.from(`order ${++n}`) });
        await pause(200);
      }
    } finally {
      client.close();
    }
    const first = JSON.parse(example.stdout().split("\n")[0]!) as { channel: string; data: string };
    expect(first.channel).toBe("orders.created");
    expect(first.data).toMatch(/^order \d+$/);

    // Pod deletion: the service is stopped first, then the native sidecar.
    example.child.kill("SIGTERM");
    await once(example.child, "close");
    sidecar.child.kill("SIGTERM");
    const [code] = (await once(sidecar.child, "close")) as [number | null];
    expect(code).toBe(0);
    expect(sidecar.stderr()).toContain("weft sidecar stopped");
  });
});
