import { execFile, spawnSync } from "node:child_process";
import { promisify } from "node:util";
import { describe, it } from "vitest";

const run = promisify(execFile);

/**
 * Hosts in Linux network namespaces on one private LAN, for tests where the network is the
 * point: each host is a namespace of its own (its own loopback, its own address), joined by
 * a veth pair to a bridge in a "switch" namespace. The test process stays in the root
 * namespace and reaches the hosts through one more veth pair into the switch, with an
 * address on the same LAN. Nothing is routed beyond the LAN: its only addresses are
 * 10.77.N.0/24 ones, and it has no link to any interface of the machine.
 *
 * ```
 *  root namespace (the test)     switch namespace          host namespaces
 *  weftnsPID-r 10.77.N.254 ─────── root ┐
 *                                       ├─ br0 ─┬─ a ─────── eth0 10.77.N.1  (weftnsPID-a)
 *                                       │       ├─ b ─────── eth0 10.77.N.2  (weftnsPID-b)
 *                                       │       └─ …
 * ```
 *
 * Every name starts with `weftns<PID>` (the test process's pid), so a run finds and removes
 * what a run that died left behind (`removeStaleLans`) and never touches another's.
 */

/** The prefix of every namespace and root link a run makes. */
const PREFIX = "weftns";
/** A name of ours and the pid of the run that made it: `weftns<PID>-<what>`. */
const OURS = new RegExp(`^${PREFIX}(\\d+)-(\\S+)$`);

/** One host of a LAN: a network namespace with one address. */
export interface NetnsHost {
  /** The name the test gave it ("a"). */
  name: string;
  /** Its network namespace (an `ip netns` name). */
  netns: string;
  /** Its IPv4 address on the LAN. */
  ip: string;
}

/** Hosts in network namespaces on one LAN; see the module comment. */
export interface NetnsLan {
  /** The hosts, in the order named. */
  hosts: NetnsHost[];
  /** The root namespace's address on the LAN (the test process's). */
  rootIp: string;
  /** The LAN, e.g. "10.77.31.0/24". */
  subnet: string;
  /** The host named `name`; throws for a name the LAN does not have. */
  host(name: string): NetnsHost;
  /** The argv prefix that runs a command inside `host`: `["ip", "netns", "exec", NETNS]`. */
  via(host: NetnsHost): string[];
  /** Runs `argv` inside `host` and resolves with its stdout; rejects on a non-zero exit. */
  exec(host: NetnsHost, argv: string[]): Promise<string>;
  /**
   * Deletes every namespace and link of the LAN (a veth goes with its namespace). Idempotent;
   * kill the processes in the hosts first (deleting a namespace does not end them).
   */
  dispose(): Promise<void>;
}

/**
 * Why this process cannot make a LAN (not root, no `ip`, `ip netns add` refused), or
 * undefined when it can. Tries for real: adds a namespace and deletes it.
 */
export function netnsProblem(): string | undefined {
  if (process.platform !== "linux") return `network namespaces are Linux only (this is ${process.platform})`;
  if (process.getuid?.() !== 0) return "making network namespaces needs root";
  const probe = `${PREFIX}${process.pid}-probe`;
  const add = spawnSync("ip", ["netns", "add", probe], { encoding: "utf8" });
  if (add.error) return `\`ip\` cannot be run (${add.error.message}): install iproute2`;
  if (add.status !== 0) return `\`ip netns add\` failed: ${add.stderr.trim()}`;
  spawnSync("ip", ["netns", "del", probe]);
  return undefined;
}

/**
 * `describe` for a suite that needs a LAN of network namespaces. Where this process cannot
 * make one, the suite is skipped with a warning saying why; in CI (CI=true) it fails
 * instead, so that a missing privilege or package cannot pass.
 */
export function describeWithNetns(name: string, body: () => void): void {
  const problem = netnsProblem();
  if (problem === undefined) {
    describe(name, body);
  } else if (process.env["CI"] === "true") {
    describe(name, () => {
      it("needs root and iproute2 to make network namespaces (.ci/run runs it as root)", () => {
        throw new Error(problem);
      });
    });
  } else {
    console.warn(`Skipping "${name}": ${problem}; run it as root, with iproute2 installed: sudo npm run test:netns.`);
    describe.skip(name, body);
  }
}

async function ip(...args: string[]): Promise<string> {
  try {
    return (await run("ip", args, { timeout: 30_000 })).stdout;
  } catch (e) {
    const error = e as Error & { stderr?: string };
    throw new Error(`ip ${args.join(" ")} failed: ${(error.stderr ?? error.message).trim()}`);
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
}

/**
 * Removes the namespaces and root links that runs no longer alive left behind (a run killed
 * before its cleanup), with the processes still running in those namespaces.
 */
export async function removeStaleLans(): Promise<void> {
  const stale = (name: string): boolean => {
    const m = OURS.exec(name);
    return m !== null && Number(m[1]) !== process.pid && !alive(Number(m[1]));
  };
  const namespaces = (await ip("netns", "list")).split("\n").map((l) => l.split(" ")[0] ?? "");
  for (const ns of namespaces.filter(stale)) {
    const pids = (await ip("netns", "pids", ns).catch(() => "")).split(/\s+/).filter(Boolean);
    for (const pid of pids) {
      try {
        process.kill(Number(pid), "SIGKILL");
      } catch {
        // gone already
      }
    }
    await ip("netns", "del", ns).catch(() => {});
  }
  const links = (await ip("-o", "link", "show")).split("\n").map((l) => /^\d+: ([^:@]+)/.exec(l)?.[1] ?? "");
  for (const link of links.filter(stale)) await ip("link", "del", "dev", link).catch(() => {});
}

/** A 10.77.N.0/24 that no address of the root namespace is in (another run's LAN, say). */
async function freeSubnet(): Promise<number> {
  const used = await ip("-4", "-o", "addr", "show");
  for (let i = 0; i < 250; i++) {
    const n = ((process.pid + i) % 250) + 1;
    if (!used.includes(` 10.77.${n}.`)) return n;
  }
  throw new Error("every 10.77.N.0/24 is in use in the root namespace");
}

/**
 * Makes a LAN with one host per name (at most 250; names of 1 to 3 lowercase letters or
 * digits, as they name bridge ports). Everything made so far is removed when a step fails.
 */
export async function startLan(names: string[]): Promise<NetnsLan> {
  for (const n of names) if (!/^[a-z0-9]{1,3}$/.test(n)) throw new Error(`host name ${JSON.stringify(n)}: 1 to 3 lowercase letters or digits`);
  await removeStaleLans();
  const base = `${PREFIX}${process.pid}`;
  const n = await freeSubnet();
  const switchNs = `${base}-sw`;
  const rootLink = `${base}-r`;
  const hosts = names.map((name, i): NetnsHost => ({ name, netns: `${base}-${name}`, ip: `10.77.${n}.${i + 1}` }));
  const made: string[] = [];
  let disposed = false;
  const dispose = async (): Promise<void> => {
    if (disposed) return;
    disposed = true;
    for (const ns of made.splice(0).reverse()) await ip("netns", "del", ns).catch(() => {});
    await ip("link", "del", "dev", rootLink).catch(() => {});
    process.off("exit", onExit);
  };
  // A worker that exits without running afterAll still leaves nothing behind.
  const onExit = (): void => {
    for (const ns of made) spawnSync("ip", ["netns", "del", ns]);
    spawnSync("ip", ["link", "del", "dev", rootLink]);
  };
  process.on("exit", onExit);
  try {
    await ip("netns", "add", switchNs);
    made.push(switchNs);
    await ip("-n", switchNs, "link", "add", "br0", "type", "bridge", "forward_delay", "0");
    await ip("-n", switchNs, "link", "set", "dev", "br0", "up");
    for (const h of hosts) {
      await ip("netns", "add", h.netns);
      made.push(h.netns);
      await ip("-n", h.netns, "link", "set", "dev", "lo", "up");
      await ip("link", "add", "eth0", "netns", h.netns, "type", "veth", "peer", "name", h.name, "netns", switchNs);
      await ip("-n", switchNs, "link", "set", "dev", h.name, "master", "br0", "up");
      await ip("-n", h.netns, "addr", "add", `${h.ip}/24`, "dev", "eth0");
      await ip("-n", h.netns, "link", "set", "dev", "eth0", "up");
    }
    await ip("link", "add", rootLink, "type", "veth", "peer", "name", "root", "netns", switchNs);
    await ip("-n", switchNs, "link", "set", "dev", "root", "master", "br0", "up");
    await ip("addr", "add", `10.77.${n}.254/24`, "dev", rootLink);
    await ip("link", "set", "dev", rootLink, "up");
  } catch (e) {
    await dispose();
    throw e;
  }
  const via = (h: NetnsHost): string[] => ["ip", "netns", "exec", h.netns];
  return {
    hosts,
    rootIp: `10.77.${n}.254`,
    subnet: `10.77.${n}.0/24`,
    host(name) {
      const h = hosts.find((x) => x.name === name);
      if (!h) throw new Error(`the LAN has no host ${name}`);
      return h;
    },
    via,
    async exec(h, argv) {
      const [file, ...args] = [...via(h), ...argv];
      return (await run(file!, args, { timeout: 30_000 })).stdout;
    },
    dispose,
  };
}
