// npm run demo: three real `weft sidecar` processes on loopback, a publisher on one, two
// consumer groups across the other two, and every event printed as it flows.
import { setTimeout as sleep } from "node:timers/promises";
import { parseArgs } from "node:util";
import { demoSecurity } from "./demo-security.js";
import { type DemoSidecar, LoopbackMesh, type MeshListener, SidecarStartError, indent } from "./loopback-mesh.js";
import { LINK, PROCESS, SIDECAR_SAYS, note, say } from "./narration.js";
import { CHANNEL, GroupMember, type MemberSpec, OrderPublisher, memberLabel } from "./services.js";
import { Tally } from "./tally.js";

const NODES = ["east", "west", "north"];
const PUBLISHER_NODE = "east";
const MEMBERS: MemberSpec[] = [
  { group: "billing", node: "west" },
  { group: "shipping", id: "w1", node: "west" },
  { group: "shipping", id: "n1", node: "north" },
];
const GROUPS = ["billing", "shipping"];
const CUSTOMERS = ["c1", "c2", "c3", "c4", "c5", "c6"];
const ORDER_INTERVAL_MS = 300;
const SUMMARY_INTERVAL_MS = 5_000;
/** How long the sidecars get to link up (each member receiving a warm-up event). */
const LINK_TIMEOUT_MS = 30_000;
/** How long the last orders get to reach every group after publishing stops. */
const DRAIN_TIMEOUT_MS = 10_000;
/** How long a peer link may be down before the demo says it was lost. */
const LINK_GRACE_MS = 1_000;
/** Signals closer together than this count as one Ctrl-C (tsx and npm pass it on too). */
const REPEAT_SIGNAL_MS = 1_000;
/** After a Ctrl-C, how long the sidecars get to say they got it too, before the demo sends SIGTERM. */
const SIGNAL_SETTLE_MS = 500;

const USAGE = `Usage: npm run demo -- [--seconds N] [--verbose]

Starts three weft sidecars on loopback (east, west, north), publishes orders on east and
consumes them in a "billing" group (on west) and a "shipping" group (one member on west,
one on north), printing every event as it flows. Stops after N seconds (default 20) or on
Ctrl-C, then prints a tally of what reached each group.

  --seconds N   how long to publish orders (default 20)
  --verbose     also show the sidecars' own log lines, prefixed with their node id
  -h, --help    show this help`;

function options(): { seconds: number; verbose: boolean } {
  let values;
  try {
    ({ values } = parseArgs({
      options: { seconds: { type: "string" }, verbose: { type: "boolean" }, help: { type: "boolean", short: "h" } },
      strict: true,
    }));
  } catch (e) {
    console.error(`demo: ${(e as Error).message}\n\n${USAGE}`);
    process.exit(2);
  }
  if (values.help) {
    console.log(USAGE);
    process.exit(0);
  }
  const seconds = values.seconds === undefined ? 20 : Number(values.seconds);
  if (!Number.isFinite(seconds) || seconds <= 0) {
    console.error(`demo: --seconds must be a positive number of seconds, not ${JSON.stringify(values.seconds)}`);
    process.exit(2);
  }
  return { seconds, verbose: values.verbose ?? false };
}

/** @returns the exit status: 0 when every order reached every group (or the run was interrupted cleanly). */
async function main(): Promise<number> {
  const { seconds, verbose } = options();
  /** Aborted to end the run early: Ctrl-C, or a sidecar that stopped. */
  const stop = new AbortController();
  let mesh: LoopbackMesh | undefined;
  let stopping = false;
  let interrupted = false;
  let crashed = false;

  let firstInterrupt: number | undefined;
  const interrupt = (): void => {
    if (firstInterrupt === undefined) {
      firstInterrupt = Date.now();
      interrupted = true;
      note("Ctrl-C: stopping early (press it again to quit at once)");
      stop.abort();
    } else if (Date.now() - firstInterrupt > REPEAT_SIGNAL_MS) {
      mesh?.killNow();
      process.exit(130);
    }
  };
  process.on("SIGINT", interrupt);
  process.on("SIGTERM", interrupt);

  // The sidecars log to stderr; the demo tells of their processes and links itself, and
  // shows the rest with --verbose. Two sidecars that dial each other at once keep one of the
  // two links, so at start a link can end and come back within moments: only a link still
  // down after LINK_GRACE_MS is told as lost.
  const links = new Set<string>();
  const lostLinks = new Map<string, NodeJS.Timeout>();
  const listener: MeshListener = {
    line(s, line) {
      if (verbose) say(s.name, SIDECAR_SAYS, line);
      if (stopping) return;
      if (line.startsWith("weft sidecar listening")) {
        say(s.name, PROCESS, `sidecar running: services connect to ${s.address}, peers to ${s.peerAddress}`);
        return;
      }
      const up = /linked with (\S+)/.exec(line);
      const lost = /link with (\S+) lost/.exec(line);
      const peer = up?.[1] ?? lost?.[1];
      if (!peer) return;
      const pair = [s.name, peer].sort().join("+");
      if (up) {
        clearTimeout(lostLinks.get(pair));
        lostLinks.delete(pair);
        if (!links.has(pair)) say(s.name, LINK, `peer link up with ${peer}`);
        links.add(pair);
      } else if (links.has(pair) && !lostLinks.has(pair)) {
        const timer = setTimeout(() => {
          lostLinks.delete(pair);
          if (stopping || !links.delete(pair)) return;
          say(s.name, LINK, `peer link with ${peer} lost (each origin keeps its events until it is back)`);
        }, LINK_GRACE_MS);
        timer.unref();
        lostLinks.set(pair, timer);
      }
    },
    stopping(s, signal) {
      // A Ctrl-C in the terminal reaches the sidecars too: they stop on their own.
      stopping = true;
      if (!stop.signal.aborted) {
        note(`${s.name} got ${signal} and is stopping; the demo stops too`);
        interrupted = true;
        stop.abort();
      }
    },
    crashed(s, how) {
      crashed = true;
      const said = s.stderrTail();
      console.error(`demo: the ${s.name} sidecar stopped unexpectedly (${how})${said ? `; it said:\n${indent(said)}` : ""}`);
      stop.abort();
    },
  };

  const security = await demoSecurity(NODES, "orders", GROUPS, CHANNEL);
  process.once("exit", () => security.remove());
  note(`Starting three weft sidecars on loopback: ${NODES.join(", ")} (each one's --peers lists all three)`);
  note(`Peer links are mutual TLS (a development CA made for this run); services show certificates, and the policy says: ${security.summary}`);
  try {
    mesh = await LoopbackMesh.start(NODES, listener, (name) => security.configFile(name));
  } catch (e) {
    security.remove();
    if (!(e instanceof SidecarStartError)) throw e;
    if (interrupted) return 130;
    console.error(`demo: cannot start the mesh: ${e.message}`);
    return 1;
  }
  const sidecars = mesh.sidecars;
  const node = (name: string): DemoSidecar => sidecars.find((s) => s.name === name)!;

  const tally = new Tally(PUBLISHER_NODE, GROUPS, MEMBERS);
  const publisher = new OrderPublisher(PUBLISHER_NODE, node(PUBLISHER_NODE).address, tally, CUSTOMERS, security.service("orders"));
  const members = MEMBERS.map((m) => new GroupMember(m, node(m.node).address, tally, security.service(m.group)));
  const groups = GROUPS.map((g) => `${g} (${MEMBERS.filter((m) => m.group === g).map((m) => `${memberLabel(m)} on ${m.node}`).join(", ")})`);
  note(`Services: an orders publisher on ${PUBLISHER_NODE}; consumer groups of ${CHANNEL}: ${groups.join("; ")}`);

  let failure: string | undefined;
  let publishedFor = 0;
  try {
    await untilAborted(Promise.all(members.map((m) => m.subscribed())), LINK_TIMEOUT_MS, "the services could not subscribe", stop.signal);
    if (!stop.signal.aborted) note(`Waiting for the mesh: warm-up events go out from ${PUBLISHER_NODE} until every member has received one...`);
    const warmStart = Date.now();
    let warmups = 0;
    while (!members.every((m) => m.warm) && !stop.signal.aborted) {
      if (Date.now() - warmStart > LINK_TIMEOUT_MS) {
        const cold = members.filter((m) => !m.warm).map((m) => `${memberLabel(m.spec)} on ${m.spec.node}`);
        throw new Error(`the sidecars did not link within ${LINK_TIMEOUT_MS / 1000} s: no warm-up event reached ${cold.join(", ")} (run with --verbose to see the sidecars' logs)`);
      }
      await publisher.warmUp(3);
      warmups += 3;
      await sleep(250, undefined, { signal: stop.signal }).catch(() => {});
    }

    if (!stop.signal.aborted) {
      note(`Mesh ready after ${((Date.now() - warmStart) / 1000).toFixed(1)} s (${warmups} warm-up events, not shown). Publishing orders for ${seconds} s; Ctrl-C stops early.`);
      note("");
      const started = Date.now();
      publisher.start(ORDER_INTERVAL_MS);
      const summaries = setInterval(() => note(tally.summary(Math.round((Date.now() - started) / 1000))), SUMMARY_INTERVAL_MS);
      await sleep(seconds * 1000, undefined, { signal: stop.signal }).catch(() => {});
      clearInterval(summaries);
      publishedFor = (Date.now() - started) / 1000;
    }
    await publisher.stop(2_000);

    // Let what is in flight arrive, unless the sidecars are already stopping (a Ctrl-C in
    // the terminal reaches them too).
    if (publishedFor > 0 && !crashed) {
      if (interrupted) await waitFor(() => sidecars.every((s) => s.stoppingOn), SIGNAL_SETTLE_MS);
      if (!sidecars.some((s) => s.stoppingOn)) {
        note("");
        note("Publishing stopped; waiting for the last orders to reach every group...");
        await waitFor(() => tally.complete() || crashed || sidecars.some((s) => s.stoppingOn), DRAIN_TIMEOUT_MS);
      }
    }
  } catch (e) {
    failure = (e as Error).message;
  } finally {
    stopping = true;
    publisher.close();
    await Promise.all(members.map((m) => m.close()));
    note("Stopping the sidecars (SIGTERM) and removing their data directories...");
    for (const r of await mesh.stop()) say(r.name, PROCESS, `sidecar stopped (${r.how})`);
    security.remove();
  }

  if (crashed && publishedFor === 0) {
    console.error("demo: a sidecar stopped unexpectedly (see above)");
    return 1;
  }
  if (failure && !interrupted && !crashed) {
    console.error(`demo: ${failure}`);
    return 1;
  }
  if (publishedFor === 0) return interrupted ? 130 : 1;
  note("");
  note(`Final tally after ${publishedFor.toFixed(1)} s of orders:`);
  const verdict = tally.verdict(interrupted || crashed);
  for (const l of verdict.lines) note(l);
  if (crashed) {
    console.error("demo: a sidecar stopped unexpectedly (see above)");
    return 1;
  }
  return verdict.ok ? 0 : 1;
}

/** Waits for `p`; rejects when it takes longer than `ms`; resolves with undefined on abort. */
async function untilAborted<T>(p: Promise<T>, ms: number, what: string, signal: AbortSignal): Promise<T | undefined> {
  let timer: NodeJS.Timeout | undefined;
  let onAbort: (() => void) | undefined;
  p.catch(() => {}); // still rejects through the race below; after an abort, nobody waits for it
  if (signal.aborted) return undefined;
  const deadline = new Promise<undefined>((resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} within ${ms / 1000} s`)), ms);
    onAbort = () => resolve(undefined);
    signal.addEventListener("abort", onAbort, { once: true });
  });
  try {
    return await Promise.race([p, deadline]);
  } finally {
    clearTimeout(timer);
    signal.removeEventListener("abort", onAbort!);
  }
}

/** Resolves when `condition` holds or after `ms`, checking every 50 ms. */
async function waitFor(condition: () => boolean, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  while (!condition() && Date.now() < deadline) await sleep(50);
}

process.exit(await main());
