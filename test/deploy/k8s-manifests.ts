import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { Command } from "commander";
import ts from "typescript";
import { parseAllDocuments, parse as parseYaml } from "yaml";
import { serveOperations } from "../../src/ops/http-server.js";
import { CONFIG_ENV_VARS, ConfigError, type ConfigFlags, resolveConfig } from "../../sidecar/settings/index.js";
import { exposureProblem } from "../../sidecar/exposure.js";
import { buildProgram } from "../../sidecar/cli.js";
import type { SidecarConfig } from "../../sidecar/sidecar.js";

// The Kubernetes manifests of deploy/k8s, rendered as kustomize renders them, and checked
// against the Kubernetes API's types and against what the sidecar really has: its flags
// (commander), its settings and their environment variables (sidecar/settings), its HTTP routes
// (serveOperations). Shared by the unit test (static checks) and the e2e test (the
// manifest's command line, really run).

export const K8S_DIR = fileURLToPath(new URL("../../deploy/k8s", import.meta.url));

/** A Kubernetes object as parsed from YAML; fields are read with the accessors below. */
export type K8sObject = Record<string, unknown>;

/** The objects of a kustomization, and how they were rendered. */
export interface Rendered {
  objects: K8sObject[];
  /** "kubectl kustomize", or a note that the resources were read without kustomize. */
  renderer: string;
  /** What this rendering leaves unchecked, for the test's output. */
  unchecked: string[];
}

/**
 * Renders the kustomization in `dir` with `kubectl kustomize` when kubectl is installed
 * (so kustomize's own parsing and transformers run); otherwise reads the files its
 * `resources` list, without kustomize's transformers (images, labels).
 */
export function renderKustomization(dir = K8S_DIR): Rendered {
  const notSchema = "the API server's own validation (allowed values, required fields, cross-field rules): no cluster here; field names and types are checked against kubernetes-types";
  let yaml: string | undefined;
  try {
    yaml = execFileSync("kubectl", ["kustomize", dir], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw new Error(`kubectl kustomize ${dir} failed: ${(e as { stderr?: string }).stderr ?? (e as Error).message}`);
  }
  if (yaml !== undefined) return { objects: parseObjects(yaml, "kubectl kustomize"), renderer: "kubectl kustomize", unchecked: [notSchema] };
  const kustomization = parseYaml(readFileSync(join(dir, "kustomization.yaml"), "utf8")) as { resources?: string[] };
  const objects = (kustomization.resources ?? []).flatMap((r) => parseObjects(readFileSync(join(dir, r), "utf8"), r));
  return {
    objects,
    renderer: "the kustomization's resources, read directly (kubectl is not installed)",
    unchecked: [notSchema, "kustomize's rendering and transformers (images, labels): kubectl is not installed"],
  };
}

function parseObjects(text: string, where: string): K8sObject[] {
  return parseAllDocuments(text).flatMap((doc) => {
    if (doc.errors.length > 0) throw new Error(`${where}: ${doc.errors[0]!.message}`);
    const value: unknown = doc.toJS();
    return value === null ? [] : [value as K8sObject];
  });
}

// ---- the Kubernetes API's types ----

/** The kubernetes-types module and type of each apiVersion/kind the manifests use. */
const API_TYPES: Record<string, [module: string, type: string]> = {
  "apps/v1 StatefulSet": ["kubernetes-types/apps/v1", "StatefulSet"],
  "v1 Service": ["kubernetes-types/core/v1", "Service"],
  "policy/v1 PodDisruptionBudget": ["kubernetes-types/policy/v1", "PodDisruptionBudget"],
};

/**
 * Type-checks each object against the Kubernetes API's own types (kubernetes-types, made
 * from the API's OpenAPI schema, 1.30): a field the API does not have (TypeScript's
 * excess-property check on object literals) or a value of the wrong type is a problem, with
 * the line it is on. Not checked this way: enums, formats and cross-field rules (those are
 * the API server's), and required fields the types mark optional.
 */
export function apiTypeProblems(objects: K8sObject[]): string[] {
  const problems: string[] = [];
  const root = fileURLToPath(new URL("../../", import.meta.url));
  const file = join(root, "test/deploy/k8s-api-types.check.ts");
  let source = "";
  objects.forEach((o, i) => {
    const key = `${String(o.apiVersion)} ${String(o.kind)}`;
    const type = API_TYPES[key];
    if (!type) {
      problems.push(`${key}: this test knows no type for it`);
      return;
    }
    source += `import type { ${type[1]} as T${i} } from "${type[0]}";\nexport const object${i}: T${i} = ${JSON.stringify(o, null, 2)};\n`;
  });
  const options: ts.CompilerOptions = {
    strict: true,
    noEmit: true,
    target: ts.ScriptTarget.ES2022,
    module: ts.ModuleKind.ESNext,
    moduleResolution: ts.ModuleResolutionKind.Bundler,
    types: [],
    skipLibCheck: true,
  };
  const host = ts.createCompilerHost(options);
  const read = host.readFile.bind(host);
  const exists = host.fileExists.bind(host);
  const getSource = host.getSourceFile.bind(host);
  host.readFile = (f) => (f === file ? source : read(f));
  host.fileExists = (f) => f === file || exists(f);
  host.getSourceFile = (f, language, ...rest) => (f === file ? ts.createSourceFile(f, source, language) : getSource(f, language, ...rest));
  const program = ts.createProgram([file], options, host);
  const lines = source.split("\n");
  for (const d of ts.getPreEmitDiagnostics(program)) {
    const message = ts.flattenDiagnosticMessageText(d.messageText, " ");
    if (d.file?.fileName !== file || d.start === undefined) {
      problems.push(message);
      continue;
    }
    const { line } = d.file.getLineAndCharacterOfPosition(d.start);
    problems.push(`${message} (at ${lines[line]!.trim()})`);
  }
  return problems;
}

// ---- what the sidecar really has ----

/** The facts about the `weft` CLI and the sidecar that the manifests must agree with. */
export interface WeftFacts {
  /** `weft sidecar`'s options by long flag, and whether each takes a value. */
  sidecarFlags: Map<string, { takesValue: boolean }>;
  /** Every environment variable the sidecar's configuration reads. */
  configEnv: ReadonlySet<string>;
  /** The HTTP routes the sidecar answers GET on for operators (probes, scrapes). */
  routes: ReadonlySet<string>;
  /** The environment variables the options of a `weft` command read (e.g. WEFT_ADDRESS), or undefined for no such command. */
  commandEnv(command: string): ReadonlySet<string> | undefined;
  /** Parses `weft ARGS` as the CLI does and returns the sidecar's options; throws commander's error. */
  parseSidecarArgs(args: string[]): Promise<Record<string, unknown>>;
}

export async function weftFacts(): Promise<WeftFacts> {
  const commandOf = (program: Command, name: string): Command | undefined => program.commands.find((c) => c.name() === name);
  const sidecar = commandOf(buildProgram({ code: 0 }), "sidecar");
  if (!sidecar) throw new Error("the weft CLI has no sidecar command");
  const sidecarFlags = new Map<string, { takesValue: boolean }>();
  for (const o of sidecar.options) if (o.long) sidecarFlags.set(o.long, { takesValue: o.required || o.optional });

  const routes = new Set<string>();
  // The real route table, recorded instead of served: which paths GET is answered on.
  const recorder = { route: (method: string, path: string) => method === "GET" && routes.add(path) };
  serveOperations(recorder as never, { metrics: { contentType: "text/plain", render: async () => "" }, notReady: () => undefined });

  return {
    sidecarFlags,
    configEnv: new Set(CONFIG_ENV_VARS),
    routes,
    commandEnv(name) {
      const command = commandOf(buildProgram({ code: 0 }), name);
      if (!command) return undefined;
      return new Set(command.options.flatMap((o) => (o.envVar ? [o.envVar] : [])));
    },
    async parseSidecarArgs(args) {
      const program = buildProgram({ code: 0 });
      let options: Record<string, unknown> | undefined;
      const quiet = { writeOut: () => {}, writeErr: () => {} };
      program.configureOutput(quiet);
      for (const c of program.commands) c.configureOutput(quiet);
      commandOf(program, "sidecar")!.action((o: Record<string, unknown>) => void (options = o));
      await program.parseAsync(["node", "weft", ...args]);
      if (!options) throw new Error(`weft ${args.join(" ")} did not run the sidecar command`);
      return options;
    },
  };
}

// ---- reading the pod ----

function at(value: unknown, ...path: (string | number)[]): unknown {
  let v = value;
  for (const p of path) v = v !== null && typeof v === "object" ? (v as Record<string | number, unknown>)[p] : undefined;
  return v;
}
const list = (v: unknown): Record<string, unknown>[] => (Array.isArray(v) ? (v as Record<string, unknown>[]) : []);
const text = (v: unknown): string | undefined => (typeof v === "string" ? v : undefined);

/** The one workload (a StatefulSet) of the manifests. */
export function workload(objects: K8sObject[]): K8sObject {
  const found = objects.filter((o) => o.kind === "StatefulSet");
  if (found.length !== 1) throw new Error(`expected one StatefulSet in deploy/k8s, found ${found.length}`);
  return found[0]!;
}

export function podSpec(objects: K8sObject[]): Record<string, unknown> {
  return at(workload(objects), "spec", "template", "spec") as Record<string, unknown>;
}

/** The weft sidecar container: the init container named "weft". */
export function sidecarContainer(objects: K8sObject[]): Record<string, unknown> {
  const c = list(podSpec(objects).initContainers).find((c) => c.name === "weft");
  if (!c) throw new Error("no init container named weft in the pod");
  return c;
}

export function serviceContainers(objects: K8sObject[]): Record<string, unknown>[] {
  return list(podSpec(objects).containers);
}

/** The name of the pod the StatefulSet makes first (NAME-0): what the downward API gives it. */
export function firstPodName(objects: K8sObject[]): string {
  return `${text(at(workload(objects), "metadata", "name"))}-0`;
}

export const CONTAINERFILE = fileURLToPath(new URL("../../deploy/container/Containerfile", import.meta.url));

/**
 * The WEFT_ variables the image sets (`ENV KEY=VALUE` in deploy/container/Containerfile),
 * which a container's environment starts from; undefined when that file is not in the tree.
 */
export function imageEnv(file = CONTAINERFILE): Record<string, string> | undefined {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch {
    return undefined;
  }
  const env: Record<string, string> = {};
  for (const line of text.replace(/\\\n/g, " ").split("\n")) {
    const instruction = /^\s*ENV\s+(.*)$/i.exec(line);
    if (!instruction) continue;
    for (const [, key, value] of instruction[1]!.matchAll(/([A-Za-z_][A-Za-z0-9_]*)=("[^"]*"|\S*)/g)) {
      if (key!.startsWith("WEFT_")) env[key!] = value!.replace(/^"(.*)"$/, "$1");
    }
  }
  return env;
}

/**
 * A container's environment as the kubelet gives it to the pod `podName`: plain values, and
 * metadata.name / metadata.namespace from the downward API. Other sources are reported.
 */
export function containerEnv(container: Record<string, unknown>, podName: string, problems: string[] = []): Record<string, string> {
  const env: Record<string, string> = {};
  for (const e of list(container.env)) {
    const name = text(e.name) ?? "";
    const field = text(at(e, "valueFrom", "fieldRef", "fieldPath"));
    if (typeof e.value === "string") env[name] = e.value;
    else if (field === "metadata.name") env[name] = podName;
    else if (field === "metadata.namespace") env[name] = "default";
    else problems.push(`env ${name} of container ${String(container.name)}: only plain values and metadata.name/namespace are understood by this test`);
  }
  return env;
}

/**
 * Expands $(VAR) in a container argument as the kubelet does: VAR from the container's env;
 * "$$" is a literal "$"; a reference to an undefined variable stays as written (and is reported).
 */
export function expandArg(arg: string, env: Record<string, string>, problems: string[] = []): string {
  return arg.replace(/\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (whole, name: string | undefined) => {
    if (name === undefined) return "$";
    const value = env[name];
    if (value === undefined) {
      problems.push(`argument ${JSON.stringify(arg)} refers to $(${name}), which the container's env does not define: the kubelet leaves it as written`);
      return whole;
    }
    return value;
  });
}

/** A Kubernetes quantity of bytes ("10Gi", "500M", "1024"), or undefined for one this test does not read. */
function quantityBytes(q: unknown): number | undefined {
  const m = typeof q === "string" ? /^(\d+)(Ki|Mi|Gi|Ti|k|M|G|T)?$/.exec(q) : undefined;
  if (!m) return typeof q === "number" ? q : undefined;
  const unit = { Ki: 1024, Mi: 1024 ** 2, Gi: 1024 ** 3, Ti: 1024 ** 4, k: 1e3, M: 1e6, G: 1e9, T: 1e12 }[m[2] ?? ""] ?? 1;
  return Number(m[1]) * unit;
}

function portOf(address: string): number {
  return Number(address.slice(address.lastIndexOf(":") + 1));
}
function hostOf(address: string): string {
  return address.slice(0, address.lastIndexOf(":"));
}

/** Resolves a probe's or a Service's port (a number, or a name of the container's ports). */
function containerPort(container: Record<string, unknown>, port: unknown): number | undefined {
  if (typeof port === "number") return port;
  const named = list(container.ports).find((p) => p.name === port);
  return typeof named?.containerPort === "number" ? named.containerPort : undefined;
}

function effectiveSecurity(pod: Record<string, unknown>, container: Record<string, unknown>, key: string): unknown {
  const own = at(container, "securityContext", key);
  return own !== undefined ? own : at(pod, "securityContext", key);
}

/** What the sidecar was configured with by the manifest, once its flags and env are resolved. */
export interface SidecarSetup {
  /** The container's arguments, $(VAR) expanded: what `weft` is run with. */
  args: string[];
  /** The container's environment (downward API resolved for the first pod). */
  env: Record<string, string>;
  /** The configuration the sidecar resolves from them, without reading the TLS files. */
  config: SidecarConfig;
  /** The TLS files the args name, if any. */
  tls: { cert: string; key: string; ca: string } | undefined;
}

/**
 * Everything the manifests get wrong about the sidecar, one sentence each: flags, env vars,
 * ports, probes, the Service, the volume, TLS, the security context, resources, shutdown.
 * Empty when the manifests agree with the sidecar `facts` describe.
 */
export async function manifestProblems(objects: K8sObject[], facts: WeftFacts, image: Record<string, string> = imageEnv() ?? {}): Promise<{ problems: string[]; setup?: SidecarSetup }> {
  const problems: string[] = [];
  const pod = podSpec(objects);
  const sidecar = sidecarContainer(objects);
  const podName = firstPodName(objects);

  if (sidecar.restartPolicy !== "Always") problems.push("the weft init container is not a native sidecar: restartPolicy must be Always");

  // The flags, one by one, against the CLI's own option list.
  const own = containerEnv(sidecar, podName, problems);
  // The image's environment, and the container's over it.
  const env = { ...image, ...own };
  const rawArgs = list(sidecar.args).map(String);
  const args = rawArgs.map((a) => expandArg(a, env, problems));
  if (args[0] !== "sidecar") problems.push(`the sidecar's first argument is ${JSON.stringify(args[0])}, not the sidecar command`);
  for (const arg of args.slice(1)) {
    const [flag, value] = arg.includes("=") ? [arg.slice(0, arg.indexOf("=")), arg.slice(arg.indexOf("=") + 1)] : [arg, undefined];
    const option = facts.sidecarFlags.get(flag);
    if (!option) problems.push(`${flag} is not a flag of weft sidecar (it has ${[...facts.sidecarFlags.keys()].join(", ")})`);
    else if (option.takesValue && value === undefined) problems.push(`${flag} takes a value: write it as ${flag}=VALUE`);
    else if (!option.takesValue && value !== undefined) problems.push(`${flag} takes no value, but is given ${JSON.stringify(value)}`);
  }
  for (const name of Object.keys(own)) {
    if (name.startsWith("WEFT_") && !facts.configEnv.has(name)) problems.push(`env ${name} of the sidecar is not a setting the sidecar reads`);
  }
  const nodeIdFrom = list(sidecar.env).find((e) => e.name === "WEFT_NODE_ID");
  if (at(nodeIdFrom, "valueFrom", "fieldRef", "fieldPath") !== "metadata.name") problems.push("WEFT_NODE_ID does not come from the pod's name (downward API metadata.name)");
  if (problems.length > 0) return { problems };

  // Then as the CLI parses them and as the sidecar resolves its configuration.
  let options: Record<string, unknown>;
  try {
    options = await facts.parseSidecarArgs(args);
  } catch (e) {
    return { problems: [`weft ${args.join(" ")}: ${(e as Error).message}`] };
  }
  const tlsPaths = typeof options.tlsCert === "string" ? { cert: options.tlsCert, key: String(options.tlsKey), ca: String(options.tlsCa) } : undefined;
  let config: SidecarConfig;
  try {
    // The TLS files exist only in the pod: the e2e test reads real ones.
    const flags = { ...options, tlsCert: undefined, tlsKey: undefined, tlsCa: undefined } as ConfigFlags;
    config = await resolveConfig({ env, flags, warn: (m) => problems.push(`the sidecar warns: ${m}`) });
  } catch (e) {
    if (!(e instanceof ConfigError)) throw e;
    return { problems: [...problems, `the sidecar refuses its configuration: ${e.message}`] };
  }
  const refusal = exposureProblem({ ...config, tls: tlsPaths });
  if (refusal) problems.push(`the sidecar would refuse to start: ${refusal}`);
  if (config.nodeId !== podName) problems.push(`the node id is ${config.nodeId}, not the pod's name ${podName}`);

  // Listeners and ports.
  if (hostOf(config.listen) !== "127.0.0.1") problems.push(`the service API listens on ${config.listen}: in a pod it belongs on loopback, where only the pod's containers reach it`);
  for (const [setting, address] of [["peerListen", config.peerListen], ["http", config.http]] as const) {
    if (hostOf(address) !== "0.0.0.0") problems.push(`${setting} ${address} is not on every address: peers and the kubelet reach the pod's address`);
  }
  const declared = list(sidecar.ports).map((p) => `${String(p.name)}=${String(p.containerPort)}/${String(p.protocol ?? "TCP")}`).sort();
  const expected = [`http=${portOf(config.http)}/TCP`, `peer=${portOf(config.peerListen)}/TCP`];
  if (JSON.stringify(declared) !== JSON.stringify(expected)) problems.push(`the sidecar's container ports are ${declared.join(", ")}; its listeners beyond loopback are ${expected.join(", ")}`);

  // Probes: the real routes, on the HTTP port, with the listener's scheme.
  const probes = { startupProbe: "/healthz", livenessProbe: "/healthz", readinessProbe: "/readyz" } as const;
  for (const [probe, path] of Object.entries(probes)) {
    const get = at(sidecar, probe, "httpGet");
    if (!get) {
      problems.push(`the sidecar has no ${probe} (httpGet)`);
      continue;
    }
    const probePath = text(at(get, "path"));
    if (probePath === undefined || !facts.routes.has(probePath)) problems.push(`${probe} asks for ${probePath}, which the sidecar does not answer (it answers ${[...facts.routes].join(", ")})`);
    else if (probePath !== path) problems.push(`${probe} asks for ${probePath}; it should be ${path}`);
    const port = containerPort(sidecar, at(get, "port"));
    if (port !== portOf(config.http)) problems.push(`${probe} probes port ${String(at(get, "port"))} (${port}), not the HTTP listener's ${portOf(config.http)}`);
    const scheme = text(at(get, "scheme")) ?? "HTTP";
    if (scheme !== (tlsPaths ? "HTTPS" : "HTTP")) problems.push(`${probe} uses ${scheme}, but the HTTP listener speaks ${tlsPaths ? "HTTPS (TLS is on)" : "HTTP"}`);
  }

  // The headless Service the peers are found through.
  const services = objects.filter((o) => o.kind === "Service");
  const labels = (at(workload(objects), "spec", "template", "metadata", "labels") ?? {}) as Record<string, string>;
  if (config.peersDns.length !== 1) problems.push(`--peers-dns names ${config.peersDns.length} names; the manifests have one headless Service`);
  for (const entry of config.peersDns) {
    const name = hostOf(entry).split(".")[0];
    const service = services.find((s) => at(s, "metadata", "name") === name);
    if (!service) {
      problems.push(`--peers-dns ${entry}: no Service named ${name}`);
      continue;
    }
    if (at(service, "spec", "clusterIP") !== "None") problems.push(`Service ${name} is not headless (clusterIP: None): its name would resolve to one virtual IP, not to every pod`);
    if (at(service, "spec", "publishNotReadyAddresses") !== true) problems.push(`Service ${name} hides pods that are not ready: a sidecar with events for its peers would not be found`);
    const selector = (at(service, "spec", "selector") ?? {}) as Record<string, string>;
    if (Object.keys(selector).length === 0 || Object.entries(selector).some(([k, v]) => labels[k] !== v)) problems.push(`Service ${name}'s selector does not select the pods`);
    const port = list(at(service, "spec", "ports")).find((p) => p.port === portOf(entry));
    if (!port) problems.push(`Service ${name} has no port ${portOf(entry)} (--peers-dns ${entry})`);
    else if (containerPort(sidecar, port.targetPort ?? port.port) !== portOf(config.peerListen)) problems.push(`Service ${name} port ${portOf(entry)} targets ${String(port.targetPort)}, not the peer listener's ${portOf(config.peerListen)}`);
    if (portOf(entry) !== portOf(config.peerListen)) problems.push(`--peers-dns dials port ${portOf(entry)}, but peers listen on ${portOf(config.peerListen)}`);
    if (at(workload(objects), "spec", "serviceName") !== name) problems.push(`the StatefulSet's serviceName is not ${name}: pods would have no stable DNS names`);
  }

  // The data directory: a mount of a per-pod persistent volume.
  const mounts = list(sidecar.volumeMounts);
  const dataMount = mounts.find((m) => m.mountPath === config.dataDir);
  const claims = list(at(workload(objects), "spec", "volumeClaimTemplates")).map((c) => at(c, "metadata", "name"));
  if (!dataMount) problems.push(`no volume is mounted at the data directory ${config.dataDir}: the log would be on the container's (read-only) filesystem`);
  else if (!claims.includes(dataMount.name)) problems.push(`the data directory's volume ${String(dataMount.name)} is not one of the volumeClaimTemplates: it would not survive the pod`);
  // A quota below the volume's size: publishes are refused (STORAGE_QUOTA) before the disk fills.
  const claim = list(at(workload(objects), "spec", "volumeClaimTemplates")).find((c) => at(c, "metadata", "name") === dataMount?.name);
  const volumeBytes = quantityBytes(at(claim, "spec", "resources", "requests", "storage"));
  if (config.maxStoredBytes === 0 || volumeBytes === undefined || config.maxStoredBytes >= volumeBytes) {
    problems.push(`maxStoredBytes (${config.maxStoredBytes}) is not set below the data volume's size (${String(at(claim, "spec", "resources", "requests", "storage"))})`);
  }

  // TLS: files from a Secret, mounted read-only.
  if (!tlsPaths) problems.push("the sidecar has no TLS: its peer listener is beyond loopback");
  for (const file of tlsPaths ? Object.values(tlsPaths) : []) {
    const mount = mounts.find((m) => typeof m.mountPath === "string" && file.startsWith(`${m.mountPath}/`));
    const volume = list(pod.volumes).find((v) => v.name === mount?.name);
    if (!mount || !volume?.secret) problems.push(`TLS file ${file} is not in a mounted Secret`);
    else if (mount.readOnly !== true) problems.push(`TLS file ${file} is in a mount that is not read-only`);
  }

  // Every container: hardened, with resources.
  for (const container of [sidecar, ...serviceContainers(objects)]) {
    const name = String(container.name);
    const runAsUser = effectiveSecurity(pod, container, "runAsUser");
    if (effectiveSecurity(pod, container, "runAsNonRoot") !== true) problems.push(`container ${name}: runAsNonRoot is not true`);
    if (typeof runAsUser !== "number" || runAsUser === 0) problems.push(`container ${name}: runAsUser is not a numeric non-root user`);
    if (at(container, "securityContext", "readOnlyRootFilesystem") !== true) problems.push(`container ${name}: readOnlyRootFilesystem is not true`);
    if (at(container, "securityContext", "allowPrivilegeEscalation") !== false) problems.push(`container ${name}: allowPrivilegeEscalation is not false`);
    const drop = at(container, "securityContext", "capabilities", "drop");
    if (!Array.isArray(drop) || !drop.includes("ALL")) problems.push(`container ${name}: capabilities do not drop ALL`);
    if (at(effectiveSecurity(pod, container, "seccompProfile"), "type") !== "RuntimeDefault") problems.push(`container ${name}: seccompProfile is not RuntimeDefault`);
    for (const kind of ["requests", "limits"]) {
      if (at(container, "resources", kind, "memory") === undefined) problems.push(`container ${name}: no memory ${kind}`);
    }
  }

  // Stopping: the kubelet's grace covers the sidecar's own and the service's before it.
  const grace = at(pod, "terminationGracePeriodSeconds");
  if (typeof grace !== "number" || grace * 1000 < config.shutdownGraceMs + 10_000) {
    problems.push(`terminationGracePeriodSeconds ${String(grace)} leaves less than 10 s beyond the sidecar's shutdownGrace (${config.shutdownGraceMs} ms) for the service to stop first and the log to close`);
  }

  // The PodDisruptionBudget covers these pods.
  for (const pdb of objects.filter((o) => o.kind === "PodDisruptionBudget")) {
    const match = (at(pdb, "spec", "selector", "matchLabels") ?? {}) as Record<string, string>;
    if (Object.keys(match).length === 0 || Object.entries(match).some(([k, v]) => labels[k] !== v)) problems.push(`PodDisruptionBudget ${String(at(pdb, "metadata", "name"))} does not select the pods`);
  }

  // The service containers: real weft commands, reaching the sidecar where it listens.
  for (const container of serviceContainers(objects)) {
    const serviceEnv = { ...image, ...containerEnv(container, podName, problems) };
    const command = String(list(container.args)[0] ?? "");
    const known = facts.commandEnv(command);
    if (!known) {
      problems.push(`container ${String(container.name)} runs weft ${command}, which is not a weft command`);
      continue;
    }
    for (const name of Object.keys(containerEnv(container, podName))) {
      if (name.startsWith("WEFT_") && !known.has(name)) problems.push(`env ${name} of container ${String(container.name)} is read by no option of weft ${command}`);
    }
    if (serviceEnv.WEFT_ADDRESS !== config.listen) problems.push(`container ${String(container.name)} calls ${serviceEnv.WEFT_ADDRESS}, but the sidecar listens on ${config.listen}`);
  }

  return { problems, setup: { args, env, config, tls: tlsPaths } };
}
