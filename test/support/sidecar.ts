import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { defaultConfig } from "../../sidecar/settings/index.js";
import { Sidecar, type SidecarConfig, type SidecarStartOptions } from "../../sidecar/sidecar.js";
import { type ConnectOptions, type WeftClient, connect } from "../../src/client/index.js";

/** A fresh data directory under the system temp dir. */
export async function tempDir(prefix = "weft-test-"): Promise<string> {
  return mkdtemp(join(tmpdir(), prefix));
}

/**
 * Temp dirs for one test file: `make()` gives a fresh one, `removeAll()` (in afterAll)
 * removes every one made.
 */
export function scratchDirs(): { make(): Promise<string>; removeAll(): Promise<void> } {
  const dirs: string[] = [];
  return {
    async make() {
      const dir = await tempDir();
      dirs.push(dir);
      return dir;
    },
    async removeAll() {
      for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
    },
  };
}

/** A real sidecar on a free loopback port, and clients connected to it over a real socket. */
export interface TestSidecar {
  sidecar: Sidecar;
  address: string;
  /** The peer API address. */
  peerAddress: string;
  dataDir: string;
  /** A new client; closed by `stop()`. */
  client(options?: ConnectOptions): WeftClient;
  /** Stops the sidecar gracefully (keeps the data directory). */
  stop(): Promise<void>;
  /** Starts it again after `stop()`, on the same data directory and the same ports. */
  start(): Promise<void>;
  /** Stops and starts again on the same data directory and the same port. */
  restart(): Promise<void>;
  /** Stops, closes clients and removes the data directory. */
  dispose(): Promise<void>;
}

export async function startSidecar(overrides: Partial<SidecarConfig> = {}, options: SidecarStartOptions = {}): Promise<TestSidecar> {
  const dataDir = overrides.dataDir ?? (await tempDir());
  const config: SidecarConfig = { ...defaultConfig(), listen: "127.0.0.1:0", peerListen: "127.0.0.1:0", http: "127.0.0.1:0", shutdownGraceMs: 1000, ...overrides, dataDir };
  const clients: WeftClient[] = [];
  const t: TestSidecar = {
    sidecar: await Sidecar.start(config, options),
    address: "",
    peerAddress: "",
    dataDir,
    client(options) {
      const c = connect(t.address, options);
      clients.push(c);
      return c;
    },
    async stop() {
      await t.sidecar.stop();
    },
    async start() {
      const http = t.sidecar.httpAddress ?? config.http;
      t.sidecar = await Sidecar.start({ ...config, listen: t.address, peerListen: t.peerAddress, http }, options);
    },
    async restart() {
      await t.stop();
      await t.start();
    },
    async dispose() {
      for (const c of clients) c.close();
      await t.sidecar.stop();
      await rm(dataDir, { recursive: true, force: true });
    },
  };
  t.address = t.sidecar.address;
  t.peerAddress = t.sidecar.peerAddress;
  return t;
}
