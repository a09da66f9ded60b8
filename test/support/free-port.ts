import { readFileSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

/**
 * Ports under the kernel's ephemeral range (Linux's default starts at 32768): 20000-31999,
 * 3000 for each of up to four vitest workers.
 */
const SLICE = 3000;
const WORKER = Number.parseInt(process.env.VITEST_POOL_ID ?? "1", 10) || 1;
const SLICE_START = 20_000 + ((WORKER - 1) % 4) * SLICE;
/**
 * Where the next pick starts, kept in a file per worker slot: vitest runs each test file in a
 * fresh process, one after another in a slot, and a file going on where the one before
 * stopped (rather than at a random place in the slice) does not hand a new sidecar an
 * address an earlier file's sidecar may still be dialing. Reads and writes are synchronous
 * and the files of a slot never run at once.
 */
const POSITION = join(tmpdir(), `weft-test-ports-${SLICE_START}`);

function nextPosition(): number {
  let next: number;
  try {
    next = Number.parseInt(readFileSync(POSITION, "utf8"), 10);
  } catch {
    next = Number.NaN;
  }
  if (!Number.isInteger(next) || next < 0) next = Math.floor(Math.random() * SLICE);
  writeFileSync(POSITION, String((next + 1) % SLICE));
  return next;
}

/**
 * A loopback port for a sidecar to listen on, free a moment ago.
 *
 * Not one the kernel hands out itself: a port-0 listener or an outgoing connection elsewhere
 * could take such a port between this check and the sidecar's bind (CI failed that way once).
 * Each vitest worker draws from its own slice below the ephemeral range, in turn, and
 * hands out a port again only after the 3000 others.
 */
export async function freePort(): Promise<number> {
  for (let tries = 0; tries < SLICE; tries++) {
    const port = SLICE_START + (nextPosition() % SLICE);
    if (await canListen(port)) return port;
  }
  throw new Error(`no free loopback port in ${SLICE_START}-${SLICE_START + SLICE - 1}`);
}

/** `n` distinct loopback ports for sidecars, each free a moment ago. */
export async function freePorts(n: number): Promise<number[]> {
  const ports: number[] = [];
  while (ports.length < n) ports.push(await freePort());
  return ports;
}

function canListen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once("error", () => resolve(false));
    server.listen(port, "127.0.0.1", () => server.close(() => resolve(true)));
  });
}
