import { type ChildProcess, execFile, spawn } from "node:child_process";
import { once } from "node:events";
import { chmod, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { request } from "node:https";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parse as parseYaml } from "yaml";
import { AdminClient, connect } from "../../src/client/index.js";
import { WEFT_BIN, freePorts } from "../support/process.js";
import {
  type K8sObject,
  type SidecarSetup,
  containerEnv,
  expandArg,
  imageEnv,
  manifestProblems,
  podSpec,
  renderKustomization,
  serviceContainers,
  sidecarContainer,
  weftFacts,
  workload,
} from "./k8s-manifests.js";

// The pods of deploy/k8s, run as processes on this machine: the weft sidecar with exactly the
// arguments and environment of its container (the downward API giving the pod's name, each
// volume a temp dir, the TLS Secret made by docs/deploy.md's own commands), its probes asked
// as the kubelet asks them, and the example service container's command run against it.
// That the flags exist is the unit test's; this one shows they work together.
//
// What differs from a cluster, on purpose, is only where things listen. The listener ports
// are mapped to free ones (other tests run beside this one), in the args, the probes and the
// service's address alike. One pod keeps its hosts (0.0.0.0, and 127.0.0.1 for the service
// API); the peers' DNS name does not resolve here, and the sidecar runs on, as it does before
// the headless Service has any address. Two pods on one machine each get a loopback address
// of their own as their "pod IP" (0.0.0.0 and 127.0.0.1 both become it), and the address
// list the headless Service's name would resolve to is given as --peers.

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

interface Weft {
  child: ChildProcess;
  stdout: () => string;
  stderr: () => string;
}

/** Runs `weft ARGS` as a container would: only the container's environment, plus PATH and HOME. */
function startWeft(args: string[], env: Record<string, string>, cwd: string): Weft {
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
function probe(host: string, port: number, path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host, port, path, rejectUnauthorized: false }, (res) => {
      let body = "";
      res.setEncoding("utf8").on("data", (s: string) => (body += s));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on("error", reject);
    req.end();
  });
}

/**
 * A bound on making the certificates and starting pods, not a figure anything is measured
 * against: wide enough for a small machine busy with other test files.
 */
const STARTING = 180_000;

const pause = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * Runs the shell block of docs/deploy.md marked "test: k8s-certs" in a temp dir, with `weft`
 * this checkout's CLI and `kubectl` the real one told `--dry-run=client -o yaml` (no cluster
 * is reached), and returns the Secret it makes: file name -> contents. Without kubectl here,
 * the Secret is read from kubectl's arguments (--from-file=PATH gives the key basename(PATH)).
 * Made once per file: every pod of the StatefulSet mounts the same Secret.
 */
function secretFromDocs(): Promise<Record<string, Buffer>> {
  made ??= makeSecretFromDocs();
  return made;
}
let made: Promise<Record<string, Buffer>> | undefined;

async function makeSecretFromDocs(): Promise<Record<string, Buffer>> {
  const doc = await readFile(new URL("../../docs/deploy.md", import.meta.url), "utf8");
  // The docs test's own marker (not-runnable: it has no cluster) may stand between.
  const block = /<!-- test: k8s-certs -->\s*(?:<!--[^>]*-->\s*)?```sh\n([\s\S]*?)```/.exec(doc)?.[1];
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

/** The manifests, checked, with the Secret their docs make and free ports for their listeners. */
interface Deployment {
  objects: K8sObject[];
  setup: SidecarSetup;
  secret: Record<string, Buffer>;
  /** Declared port -> the free port standing for it (every pod listens on the same ports, as in a cluster). */
  ports: Map<number, number>;
}

async function deployment(): Promise<Deployment> {
  const objects = renderKustomization().objects;
  const checked = await manifestProblems(objects, await weftFacts());
  expect(checked.problems).toEqual([]);
  const setup = checked.setup!;
  const declared = [setup.config.listen, setup.config.peerListen, setup.config.http].map(portOf);
  const free = await freePorts(declared.length);
  const secret = await secretFromDocs();
  expect(Object.keys(secret)).not.toContain("ca.key");
  return { objects, setup, secret, ports: new Map(declared.map((p, i) => [p, free[i]!])) };
}

function portOf(address: string): number {
  return Number(address.slice(address.lastIndexOf(":") + 1));
}

/** One pod: its sidecar and where its HTTP and service API are. */
interface Pod {
  name: string;
  sidecar: Weft;
  /** The host the pod's listeners are reached at here, and their ports. */
  host: string;
  httpPort: number;
  servicePort: number;
  /** The example service container's args and env, volumes and ports replaced. */
  service: { args: string[]; env: Record<string, string> };
  /** The CA file the service container sees. */
  serviceCa: string;
}

/**
 * Starts pod number `index` of the StatefulSet: the Secret and empty dirs as its volumes, its
 * sidecar with the container's args and env. `podIp` (two pods on one machine) replaces
 * 0.0.0.0 and 127.0.0.1, and `peers` the --peers-dns name's addresses; without them the
 * hosts stay as written. Resolves once the startup probe answers 200.
 */
async function startPod(d: Deployment, index: number, where: { podIp?: string; peers?: string[] } = {}): Promise<Pod> {
  const name = `${String((workload(d.objects).metadata as { name: string }).name)}-${index}`;
  const pod = podSpec(d.objects);
  const container = sidecarContainer(d.objects);
  // The image's environment, under each container's own, as the kubelet makes it.
  const image = imageEnv() ?? {};
  const volumes = pod.volumes as { name: string; secret?: { secretName: string; items?: { key: string; path: string }[] } }[];

  // A volume's contents: a Secret's keys (or the items it selects), or nothing.
  const volumeDir = async (volumeName: string): Promise<string> => {
    const dir = await tempDir(`${name}-${volumeName}`);
    const secret = volumes.find((v) => v.name === volumeName)?.secret;
    if (secret) {
      expect(secret.secretName).toBe("weft-tls");
      const items = secret.items ?? Object.keys(d.secret).map((key) => ({ key, path: key }));
      for (const item of items) await writeFile(join(dir, item.path), d.secret[item.key]!, { mode: 0o440 });
    }
    return dir;
  };
  const mountsOf = async (c: Record<string, unknown>): Promise<Map<string, string>> => {
    const mounts = new Map<string, string>();
    for (const m of (c.volumeMounts ?? []) as { name: string; mountPath: string }[]) mounts.set(m.mountPath, await volumeDir(m.name));
    return mounts;
  };

  // A value of a container with the mount path it lies under and its host:port replaced by
  // their stand-ins. One replacement each: the stand-ins lie under /tmp, a mount path too.
  const local = (value: string, mounts: Map<string, string>): string => {
    const eq = value.startsWith("--") ? value.indexOf("=") + 1 : 0;
    const [flag, v] = [value.slice(0, eq), value.slice(eq)];
    const under = [...mounts.keys()].filter((p) => v === p || v.startsWith(`${p}/`)).sort((a, b) => b.length - a.length)[0];
    const path = under === undefined ? v : mounts.get(under)! + v.slice(under.length);
    const address = /^(.*):(\d+)$/.exec(path);
    if (!address || !d.ports.has(Number(address[2]))) return flag + path;
    const host = where.podIp && (address[1] === "0.0.0.0" || address[1] === "127.0.0.1") ? where.podIp : address[1];
    return `${flag}${host}:${d.ports.get(Number(address[2]))}`;
  };

  const mounts = await mountsOf(container);
  const env = { ...image, ...containerEnv(container, name) };
  const problems: string[] = [];
  let args = (container.args as string[]).map((a) => local(expandArg(a, env, problems), mounts));
  expect(problems).toEqual([]);
  if (where.peers) args = args.map((a) => (a.startsWith("--peers-dns=") ? `--peers=${where.peers!.join(",")}` : a));
  const sidecar = startWeft(args, Object.fromEntries(Object.entries(env).map(([k, v]) => [k, local(v, mounts)])), mounts.get(d.setup.config.dataDir)!);

  const host = where.podIp ?? "127.0.0.1";
  const httpGet = (container.startupProbe as { httpGet: { path: string; port: string | number } }).httpGet;
  const probePort = typeof httpGet.port === "number" ? httpGet.port : (container.ports as { name: string; containerPort: number }[]).find((p) => p.name === httpGet.port)!.containerPort;
  const httpPort = d.ports.get(probePort)!;
  // The startup probe: asked until it answers 200, as the kubelet does, while the sidecar runs.
  for (;;) {
    if (sidecar.child.exitCode !== null) throw new Error(`pod ${name}: the sidecar exited with ${sidecar.child.exitCode}: ${sidecar.stderr()}`);
    const answer = await probe(host, httpPort, httpGet.path).catch(() => undefined);
    if (answer?.status === 200) break;
    await pause(100);
  }

  const example = serviceContainers(d.objects)[0]!;
  const serviceMounts = await mountsOf(example);
  const serviceEnv = Object.fromEntries(Object.entries({ ...image, ...containerEnv(example, name) }).map(([k, v]) => [k, local(v, serviceMounts)]));
  return {
    name,
    sidecar,
    host,
    httpPort,
    servicePort: d.ports.get(portOf(d.setup.config.listen))!,
    service: { args: (example.args as string[]).map((a) => local(a, serviceMounts)), env: serviceEnv },
    serviceCa: serviceEnv.WEFT_CLIENT_TLS_CA!,
  };
}

/** Stops a pod as Kubernetes deletes one: the service container first, then the native sidecar. */
async function deletePod(pod: Pod, service?: Weft): Promise<{ code: number | null; stderr: string }> {
  if (service) {
    service.child.kill("SIGTERM");
    await once(service.child, "close");
  }
  pod.sidecar.child.kill("SIGTERM");
  const [code] = (await once(pod.sidecar.child, "close")) as [number | null];
  return { code, stderr: pod.sidecar.stderr() };
}

describe("a pod of deploy/k8s, run here", () => {
  let d: Deployment;
  let pod: Pod;

  beforeAll(async () => {
    d = await deployment();
    pod = await startPod(d, 0);
  }, STARTING);

  it("starts with the manifest's arguments, as the node its certificate and pod name say", () => {
    const started = pod.sidecar.stderr().split("\n").find((l) => l.includes("weft sidecar listening on"));
    expect(started).toBeDefined();
    const record = JSON.parse(started!) as { msg: string; node: string };
    expect(record.node).toBe("weft-example-0");
    expect(record.msg).toContain(`http https://0.0.0.0:${pod.httpPort}`);
    expect(record.msg).toContain(`peers on 0.0.0.0:${d.ports.get(portOf(d.setup.config.peerListen))}`);
  });

  it("answers its liveness and readiness probes, and a scrape, on the declared HTTP port", async () => {
    const container = sidecarContainer(d.objects) as Record<string, { httpGet: { path: string } }>;
    expect(await probe(pod.host, pod.httpPort, container.livenessProbe!.httpGet.path)).toEqual({ status: 200, body: "ok\n" });
    // Readiness follows the sidecar's own state; the peers' name not resolving does not matter.
    let ready = await probe(pod.host, pod.httpPort, container.readinessProbe!.httpGet.path);
    while (ready.status !== 200 && pod.sidecar.child.exitCode === null) {
      await pause(100);
      ready = await probe(pod.host, pod.httpPort, container.readinessProbe!.httpGet.path);
    }
    expect(ready).toEqual({ status: 200, body: "ready\n" });
    expect((await probe(pod.host, pod.httpPort, "/metrics")).body).toContain("weft_");
  });

  it("serves the example service container, which reaches it with the CA only", async () => {
    const example = startWeft(pod.service.args, pod.service.env, await tempDir("example"));
    // A publisher elsewhere in the pod; the example group starts at the latest event, so
    // events are published until its first one arrives.
    const client = connect(pod.service.env.WEFT_ADDRESS!, { tls: { ca: await readFile(pod.serviceCa) } });
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

    const stopped = await deletePod(pod, example);
    expect(stopped.code).toBe(0);
    expect(stopped.stderr).toContain("weft sidecar stopped");
  });
});

describe("two pods of deploy/k8s, run here", () => {
  it("link over mutual TLS as the nodes their pod names say, and an event crosses", async () => {
    const d = await deployment();
    // Each pod's own address, as a cluster gives every pod one; 127.0.0.0/8 is all loopback.
    const ips = ["127.77.0.1", "127.77.0.2"];
    const peerPort = d.ports.get(portOf(d.setup.config.peerListen))!;
    const peers = ips.map((ip) => `${ip}:${peerPort}`);
    const pods = await Promise.all(ips.map((podIp, i) => startPod(d, i, { podIp, peers })));

    // The service containers' way in, but at the pod's stand-in address: the certificate
    // names 127.0.0.1 and localhost, so the client checks the name "localhost".
    const client = (pod: Pod): ReturnType<typeof connect> =>
      connect(`${pod.host}:${pod.servicePort}`, { tls: { ca: d.secret["ca.crt"]!, serverName: "localhost" } });
    const subscriber = client(pods[1]!);
    const publisher = client(pods[0]!);
    try {
      const sub = subscriber.subscribe({ channel: "orders.created", group: "example" });
      const received = (async () => {
        for await (const delivery of sub) {
          delivery.ack();
          return delivery;
        }
        return undefined;
      })();
      // The group becomes known to pod 0 over the link; events published before that are
      // not the group's (it starts at the latest), so publish until one arrives.
      let arrived: Awaited<typeof received> | "waiting" = "waiting";
      void received.then((r) => (arrived = r));
      let n = 0;
      while (arrived === "waiting") {
        await publisher.publish({ channel: "orders.created", data: Buffer.from(`order ${++n}`), source: "//pod-0" });
        await Promise.race([received, pause(200)]);
      }
      const delivery = arrived as Awaited<typeof received>;
      expect(delivery?.event.source).toBe("//pod-0");
      expect(Buffer.from(delivery!.event.data).toString()).toMatch(/^order \d+$/);
      sub.close();
    } finally {
      subscriber.close();
      publisher.close();
    }

    // Each knows the other by its pod's name, which its certificate names.
    for (const [pod, other] of [[pods[0]!, pods[1]!], [pods[1]!, pods[0]!]] as const) {
      const admin = new AdminClient(`${pod.host}:${pod.servicePort}`, { tls: { ca: d.secret["ca.crt"]!, serverName: "localhost" } });
      try {
        const { nodeId, peers: linked } = await admin.listPeers();
        expect(nodeId).toBe(pod.name);
        // Connected or not at this moment: a peer is listed until the peer timeout.
        expect(linked.map((p) => p.nodeId)).toEqual([other.name]);
      } finally {
        admin.close();
      }
    }
    for (const pod of pods) expect((await deletePod(pod)).code).toBe(0);
  }, STARTING);
});
