import { execFileSync } from "node:child_process";
import { mkdtempSync, rmdirSync } from "node:fs";
import { open, rm, statfs } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { status } from "@grpc/grpc-js";
import { afterEach, describe, expect, it } from "vitest";
import { ClientError, type WeftClient, connect } from "../src/client/index.js";
import { collect, eventually } from "./support/collect.js";
import { type SidecarProcess, freePort, spawnSidecar } from "./support/process.js";

/**
 * A real full disk: `weft sidecar` runs with its data directory on a small tmpfs, a filler
 * file takes the rest of it, and the sidecar must refuse publishes with DISK_FULL, log it
 * once, answer 503 on /readyz, and recover by itself once the filler is gone, with every
 * event acked before, during and after delivered (also after a restart).
 *
 * Mounting needs root (CAP_SYS_ADMIN). Without it the suite is skipped with a warning, and
 * in CI (CI set) it fails instead, so that a runner without the capability cannot pass.
 */
const TMPFS_SIZE = "32m";

/** Why a tmpfs cannot be mounted here, or undefined when it can. */
function mountProblem(): string | undefined {
  if (process.platform !== "linux") return `mounting a tmpfs needs Linux, this is ${process.platform}`;
  if (process.getuid?.() !== 0) return "mounting a tmpfs needs root (run the tests as root, or in a container with CAP_SYS_ADMIN)";
  const dir = mkdtempSync(join(tmpdir(), "weft-mount-check-"));
  try {
    execFileSync("mount", ["-t", "tmpfs", "-o", "size=1m", "tmpfs", dir], { stdio: "pipe" });
    execFileSync("umount", [dir], { stdio: "pipe" });
    return undefined;
  } catch (e) {
    return `mount -t tmpfs failed: ${String((e as { stderr?: Buffer }).stderr ?? (e as Error).message).trim()}`;
  } finally {
    rmdirSync(dir);
  }
}

function describeWithMount(name: string, body: () => void): void {
  const problem = mountProblem();
  if (problem === undefined) {
    describe(name, body);
  } else if (process.env.CI) {
    describe(name, () => {
      it("needs to mount a tmpfs (root, or CAP_SYS_ADMIN)", () => {
        throw new Error(problem);
      });
    });
  } else {
    console.warn(`Skipping "${name}": ${problem}.`);
    describe.skip(name, body);
  }
}

/** Fills the file system of `path` to the last block with the file `path`. */
async function fill(path: string): Promise<void> {
  const file = await open(path, "w");
  try {
    for (const chunk of [1024 * 1024, 4096, 512]) {
      const bytes = Buffer.alloc(chunk, 0x5a);
      for (;;) {
        try {
          const { bytesWritten } = await file.write(bytes);
          if (bytesWritten < chunk) break;
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code !== "ENOSPC") throw e;
          break;
        }
      }
    }
  } finally {
    await file.close();
  }
}

async function readyz(http: string): Promise<{ status: number; body: string }> {
  const r = await fetch(`http://${http}/readyz`);
  return { status: r.status, body: await r.text() };
}

describeWithMount("a full disk (tmpfs)", () => {
  const cleanup: (() => Promise<void> | void)[] = [];
  afterEach(async () => {
    for (const c of cleanup.splice(0).reverse()) await c();
  });

  function client(address: string): WeftClient {
    const c = connect(address, { source: "//disk-full-test" });
    cleanup.push(() => c.close());
    return c;
  }

  /** Every event of the channel, read by a new group from the start, by id. */
  async function readAll(address: string, channel: string, expected: number): Promise<string[]> {
    const sub = client(address).subscribe({ channel, group: `audit-${Date.now()}`, from: "earliest", maxInFlight: 1000 });
    const got = await collect(sub, (seen) => seen.length >= expected);
    sub.close();
    return got.map((d) => d.event.id);
  }

  it("refuses publishes with DISK_FULL, logs it once, is not ready, and recovers by itself with nothing acked lost", async () => {
    const mount = mkdtempSync(join(tmpdir(), "weft-disk-full-"));
    execFileSync("mount", ["-t", "tmpfs", "-o", `size=${TMPFS_SIZE}`, "tmpfs", mount]);
    cleanup.push(() => {
      execFileSync("umount", ["-l", mount]);
      rmdirSync(mount);
    });
    const dataDir = join(mount, "data");
    const filler = join(mount, "filler");
    const [port, httpPort] = [await freePort(), await freePort()];
    const http = `127.0.0.1:${httpPort}`;
    const start = async (): Promise<SidecarProcess> => {
      const p = await spawnSidecar(dataDir, port, ["--http", http]);
      cleanup.push(() => p.kill9());
      return p;
    };
    let sidecar = await start();
    const channel = "disk.orders";
    const pub = client(sidecar.address);
    const acked = new Set<string>();
    const publish = async (id: string): Promise<void> => {
      await pub.publish({ channel, id, data: `event ${id} `.repeat(20) });
      acked.add(id);
    };

    // A group that acks everything as it comes: its acks and attempts are written through it all.
    const handled = new Set<string>();
    const workers = client(sidecar.address).subscribe({ channel, group: "workers", from: "earliest", maxInFlight: 50 });
    const working = (async () => {
      for await (const d of workers) {
        handled.add(d.event.id);
        d.ack();
      }
    })();
    await workers.subscribed();

    for (let i = 0; i < 200; i++) await publish(`before-${i}`);
    expect((await readyz(http)).status).toBe(200);

    // Full to the last block. A few publishes may still fit in the log file's last page.
    await fill(filler);
    let refused: ClientError | undefined;
    for (let i = 0; i < 5000 && !refused; i++) {
      try {
        await publish(`during-${i}`);
      } catch (e) {
        if (!(e instanceof ClientError)) throw e;
        refused = e;
      }
    }
    expect(refused, "a publish refused once the disk is full").toBeDefined();
    expect({ code: status[refused!.code], reason: refused!.reason }).toEqual({ code: "RESOURCE_EXHAUSTED", reason: "DISK_FULL" });
    expect(refused!.message).toContain(dataDir);
    // Refused at once while full, on the same stream, nothing stored.
    await expect(publish("refused-again")).rejects.toMatchObject({ reason: "DISK_FULL" });

    const ready = await readyz(http);
    expect(ready.status).toBe(503);
    expect(ready.body).toContain("DISK_FULL");
    expect(ready.body).toContain(dataDir);
    const errors = (): Record<string, unknown>[] =>
      sidecar
        .stderr()
        .split("\n")
        .filter((l) => l.startsWith("{"))
        .map((l) => JSON.parse(l) as Record<string, unknown>)
        .filter((r) => r.reason === "DISK_FULL");
    await eventually(() => errors().length > 0, 10_000, "the full disk logged");
    expect(errors()).toMatchObject([{ level: "error", dataDir }]);
    expect((await statfs(mount)).bavail).toBe(0);

    // Room again: the sidecar finds out by itself.
    await rm(filler);
    await eventually(async () => (await readyz(http)).status === 200, 20_000, "/readyz 200 again");
    expect(errors()).toHaveLength(1);
    expect(sidecar.stderr()).toContain("has room again");
    for (let i = 0; i < 100; i++) await publish(`after-${i}`);

    // Every acked event reaches the group that was there all along, and a new one.
    await eventually(() => [...acked].every((id) => handled.has(id)), 20_000, "every acked event handled by workers");
    expect(new Set(await readAll(sidecar.address, channel, acked.size))).toEqual(acked);
    expect(handled.has("refused-again")).toBe(false);
    workers.close();
    await working;

    // And all of it is on disk: after a kill -9, a restart has every acked event once.
    await sidecar.kill9();
    sidecar = await start();
    const after = await readAll(sidecar.address, channel, acked.size);
    expect(after).toHaveLength(acked.size);
    expect(new Set(after)).toEqual(acked);
  });
});
