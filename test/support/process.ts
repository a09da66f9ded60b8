import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { fileURLToPath } from "node:url";

export { freePort, freePorts } from "./free-port.js";

export const WEFT_BIN = fileURLToPath(new URL("../../sidecar/bin/weft.js", import.meta.url));

/** A `weft sidecar` child process. */
export interface SidecarProcess {
  child: ChildProcess;
  address: string;
  /** Everything it wrote to stderr so far. */
  stderr(): string;
  /** SIGKILL, and wait for the exit. */
  kill9(): Promise<void>;
  /** SIGTERM, and wait for the exit code. */
  terminate(): Promise<number | null>;
}

/** Where a `weft sidecar` child process runs. */
export interface SpawnOptions {
  /** The host its listeners bind (the service API on `port`, the others on free ports unless given). Default 127.0.0.1. */
  host?: string;
  /** A command that runs it (argv before `node`), e.g. `["ip", "netns", "exec", NETNS]`. Default: none. */
  via?: string[];
}

/** Starts `weft sidecar` and resolves once it says it is listening. */
export async function spawnSidecar(dataDir: string, port: number, extra: string[] = [], options: SpawnOptions = {}): Promise<SidecarProcess> {
  const host = options.host ?? "127.0.0.1";
  const address = `${host}:${port}`;
  // Free peer and HTTP ports unless the caller chose them: parallel tests must not share the defaults.
  const peer = extra.includes("--peer-listen") ? [] : ["--peer-listen", `${host}:0`];
  const http = extra.includes("--http") ? [] : ["--http", `${host}:0`];
  const argv = [...(options.via ?? []), process.execPath, WEFT_BIN, "sidecar", "--data-dir", dataDir, "--listen", address, ...peer, ...http, ...extra];
  const child = spawn(argv[0]!, argv.slice(1), { stdio: ["ignore", "pipe", "pipe"] });
  let err = "";
  child.stderr!.on("data", (b: Buffer) => (err += b.toString()));
  child.stdout!.resume();
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`sidecar did not start within 30 s: ${err}`)), 30_000);
    const check = (): void => {
      if (/listening/.test(err)) {
        clearTimeout(timer);
        resolve();
      }
    };
    child.stderr!.on("data", check);
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`sidecar exited with ${code} before listening: ${err}`));
    });
  });
  const exited = once(child, "exit");
  return {
    child,
    address,
    stderr: () => err,
    async kill9() {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
      await exited;
    },
    async terminate() {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
      const [code] = await exited;
      return code as number | null;
    },
  };
}
