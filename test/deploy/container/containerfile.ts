import { readFileSync } from "node:fs";

/** One instruction of a Containerfile, continuation lines joined. */
export interface Instruction {
  /** Upper case: FROM, RUN, ENV, ... */
  keyword: string;
  /** The rest of the line, trimmed. */
  args: string;
  /** The line it starts on, 1-based. */
  line: number;
}

/** What the last stage of a Containerfile declares about the image, as an image config says it. */
export interface ImageDeclaration {
  /** ENV, in order, values with $VAR and ${VAR} expanded against the base image's and earlier ENV. */
  env: Record<string, string>;
  user: string | undefined;
  volumes: string[];
  /** "7420/tcp", ... */
  exposedPorts: string[];
  workingDir: string | undefined;
  stopSignal: string | undefined;
  entrypoint: string[] | undefined;
  cmd: string[] | undefined;
  healthcheck: { test: string[]; intervalNs: number; timeoutNs: number; startPeriodNs: number; retries: number } | undefined;
}

/**
 * Splits a Containerfile into instructions: comments and blank lines dropped, lines ending
 * in a backslash joined with the next. Parser directives and heredocs are not supported
 * (the Weft Containerfile uses neither); an instruction it cannot read throws.
 */
export function parseContainerfile(text: string): Instruction[] {
  const out: Instruction[] = [];
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const start = i;
    let line = lines[i]!;
    if (/^\s*(#|$)/.test(line)) continue;
    while (/\\\s*$/.test(line)) {
      line = line.replace(/\\\s*$/, " ");
      i++;
      // A comment line inside a continuation is dropped, as docker does.
      while (i < lines.length && /^\s*#/.test(lines[i]!)) i++;
      line += lines[i] ?? "";
    }
    const m = /^\s*([A-Za-z]+)\s+(.*)$/.exec(line);
    if (!m) throw new Error(`Containerfile line ${start + 1}: not an instruction: ${line}`);
    out.push({ keyword: m[1]!.toUpperCase(), args: m[2]!.trim(), line: start + 1 });
  }
  return out;
}

/** The instructions of each stage, FROM first. Instructions before the first FROM (global ARGs) are stage -1's, left out. */
export function stages(instructions: Instruction[]): Instruction[][] {
  const out: Instruction[][] = [];
  for (const i of instructions) {
    if (i.keyword === "FROM") out.push([i]);
    else out.at(-1)?.push(i);
  }
  return out;
}

/**
 * What the last stage declares, with ENV values expanded. `baseEnv` is the base image's
 * environment (PATH, ...), which `$PATH` in an ENV refers to.
 */
export function declaration(instructions: Instruction[], baseEnv: Record<string, string>): ImageDeclaration {
  const last = stages(instructions).at(-1);
  if (!last) throw new Error("the Containerfile has no FROM");
  const env: Record<string, string> = {};
  const scope = { ...baseEnv };
  const d: ImageDeclaration = {
    env,
    user: undefined,
    volumes: [],
    exposedPorts: [],
    workingDir: undefined,
    stopSignal: undefined,
    entrypoint: undefined,
    cmd: undefined,
    healthcheck: undefined,
  };
  for (const i of last) {
    switch (i.keyword) {
      case "ENV":
        for (const [k, v] of envPairs(i)) {
          const value = expand(v, scope);
          env[k] = value;
          scope[k] = value;
        }
        break;
      case "USER":
        d.user = i.args;
        break;
      case "VOLUME":
        d.volumes.push(...(i.args.startsWith("[") ? jsonArray(i) : i.args.split(/\s+/)));
        break;
      case "EXPOSE":
        d.exposedPorts.push(...i.args.split(/\s+/).map((p) => (p.includes("/") ? p : `${p}/tcp`)));
        break;
      case "WORKDIR":
        d.workingDir = i.args;
        break;
      case "STOPSIGNAL":
        d.stopSignal = i.args;
        break;
      case "ENTRYPOINT":
        d.entrypoint = jsonArray(i);
        break;
      case "CMD":
        d.cmd = jsonArray(i);
        break;
      case "HEALTHCHECK":
        d.healthcheck = healthcheck(i);
        break;
    }
  }
  return d;
}

/** Reads a Containerfile from disk and returns its instructions. */
export function readContainerfile(path: string): Instruction[] {
  return parseContainerfile(readFileSync(path, "utf8"));
}

function envPairs(i: Instruction): [string, string][] {
  const pairs: [string, string][] = [];
  const re = /([A-Za-z_][A-Za-z0-9_]*)=("(?:[^"\\]|\\.)*"|\S*)/g;
  const rest = i.args.replace(re, (_all, k: string, v: string) => {
    pairs.push([k, v.startsWith('"') ? (JSON.parse(v) as string) : v]);
    return "";
  });
  if (rest.trim() !== "" || pairs.length === 0) throw new Error(`Containerfile line ${i.line}: ENV must be KEY=VALUE pairs: ${i.args}`);
  return pairs;
}

function expand(value: string, scope: Record<string, string>): string {
  return value.replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)/g, (_all, a?: string, b?: string) => scope[(a ?? b)!] ?? "");
}

function jsonArray(i: Instruction, text = i.args): string[] {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new Error(`Containerfile line ${i.line}: ${i.keyword} must be in exec form (a JSON array): ${text}`);
  }
  if (!Array.isArray(value) || !value.every((v) => typeof v === "string")) {
    throw new Error(`Containerfile line ${i.line}: ${i.keyword} must be a JSON array of strings: ${text}`);
  }
  return value;
}

const DURATION_NS: Record<string, number> = { ms: 1e6, s: 1e9, m: 60e9, h: 3600e9 };

function healthcheck(i: Instruction): ImageDeclaration["healthcheck"] {
  const m = /^((?:--[a-z-]+=\S+\s+)*)CMD\s+(\[.*\])$/.exec(i.args);
  if (!m) throw new Error(`Containerfile line ${i.line}: HEALTHCHECK must be [--option=value ...] CMD [exec form]: ${i.args}`);
  const options = new Map<string, string>();
  for (const o of m[1]!.trim().split(/\s+/).filter(Boolean)) {
    const [k, v] = o.slice(2).split("=") as [string, string];
    options.set(k, v);
  }
  const ns = (name: string, dflt: string): number => {
    const v = options.get(name) ?? dflt;
    const d = /^(\d+)(ms|s|m|h)$/.exec(v);
    if (!d) throw new Error(`Containerfile line ${i.line}: HEALTHCHECK --${name}=${v} is not a duration`);
    return Number(d[1]) * DURATION_NS[d[2]!]!;
  };
  return {
    test: ["CMD", ...jsonArray(i, m[2]!)],
    intervalNs: ns("interval", "30s"),
    timeoutNs: ns("timeout", "30s"),
    startPeriodNs: ns("start-period", "0s"),
    retries: Number(options.get("retries") ?? 3),
  };
}
