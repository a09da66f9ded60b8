import { type ChildProcess, spawn } from "node:child_process";
import { WEFT_BIN } from "./process.js";

/** A `weft …` child process and what it has printed so far. */
export interface WeftRun {
  child: ChildProcess;
  stdout: () => string;
  stderr: () => string;
  /** Resolves with the exit code, or the signal's name, once the process has exited. */
  exited: Promise<number | string>;
}

export interface WeftRunOptions {
  /** Added to the environment, which is ours without WEFT_ settings. */
  env?: Record<string, string>;
  /** Arguments for node before the bin, e.g. `["--import", FILE]`. */
  node?: string[];
  cwd?: string;
  /** Leader of its own process group, as a shell's job is. Default false. */
  group?: boolean;
}

/** The environment of a child: ours without WEFT_ settings (nor GRPC_VERBOSITY), plus `extra`. */
export function childEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith("WEFT_") && k !== "GRPC_VERBOSITY") env[k] = v;
  return { ...env, ...extra };
}

/** Starts `weft ARGS` through sidecar/bin/weft.js, as a user runs it; stdin is a pipe. */
export function startWeft(args: string[], options: WeftRunOptions = {}): WeftRun {
  const child = spawn(process.execPath, [...(options.node ?? []), WEFT_BIN, ...args], {
    env: childEnv(options.env),
    stdio: ["pipe", "pipe", "pipe"],
    cwd: options.cwd,
    detached: options.group ?? false,
  });
  let stdout = "";
  let stderr = "";
  child.stdout!.setEncoding("utf8").on("data", (s: string) => (stdout += s));
  child.stderr!.setEncoding("utf8").on("data", (s: string) => (stderr += s));
  const exited = new Promise<number | string>((resolve) => child.on("close", (code, signal) => resolve(code ?? signal ?? "unknown")));
  return { child, stdout: () => stdout, stderr: () => stderr, exited };
}

/** Waits until `text()` (the run's stdout or stderr) matches `pattern`; fails if the process exits first. */
export async function waitForOutput(run: WeftRun, text: () => string, pattern: RegExp): Promise<RegExpMatchArray> {
  for (;;) {
    const match = text().match(pattern);
    if (match) return match;
    const exited = await Promise.race([run.exited, new Promise<undefined>((r) => setTimeout(() => r(undefined), 50))]);
    if (exited !== undefined && !text().match(pattern)) {
      throw new Error(`weft exited (${exited}) before printing ${pattern}; stdout:\n${run.stdout()}\nstderr:\n${run.stderr()}`);
    }
  }
}
