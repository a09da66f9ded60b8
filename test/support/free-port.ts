import { createServer } from "node:net";

/** Ports under the kernel's ephemeral range (Linux's default starts at 32768), 1000 per vitest worker. */
const SLICE = 1000;
const WORKER = Number.parseInt(process.env.VITEST_POOL_ID ?? "1", 10) || 1;
const SLICE_START = 20_000 + ((WORKER - 1) % 12) * SLICE;
// A random start, so files run one after another in a worker do not retry the same ports.
let nextInSlice = Math.floor(Math.random() * SLICE);

/**
 * A loopback port for a sidecar to listen on, free a moment ago.
 *
 * Not one the kernel hands out itself: a port-0 listener or an outgoing connection elsewhere
 * could take such a port between this check and the sidecar's bind (CI failed that way once).
 * Each vitest worker draws from its own slice below the ephemeral range, and never twice.
 */
export async function freePort(): Promise<number> {
  for (let tries = 0; tries < SLICE; tries++) {
    const port = SLICE_START + (nextInSlice++ % SLICE);
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
