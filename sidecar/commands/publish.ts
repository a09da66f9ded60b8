import { open } from "node:fs/promises";
import { hostname } from "node:os";
import { createInterface } from "node:readline";
import { ClientError, type EventInput, type Published, connect } from "../../src/client/index.js";
import { CommandError, EXIT_FAILURE, usage } from "./arguments.js";
import { note, writeText } from "./output.js";
import { type ClientTlsOptions, readClientTls } from "./client-tls.js";
import { reachSidecar } from "./reach-sidecar.js";

/** The options of `weft publish`, as commander parses them. */
export interface PublishOptions extends ClientTlsOptions {
  to: string;
  data?: string;
  dataFile?: string;
  key?: string;
  type?: string;
  source?: string;
  id?: string;
  count?: number;
  json?: boolean;
  timeout: number;
}

/** One event to publish, and how to name it in a message. */
interface Input {
  label: string;
  data: string | Uint8Array;
}

type Outcome = { published: Published } | { error: unknown };

/** An event sent: its outcome once the sidecar answered, and a promise of that moment. */
interface Sent {
  label: string;
  outcome: Outcome | undefined;
  settled: Promise<void>;
}

/** Events sent but not yet reported; reading input waits beyond it, so memory stays bounded. */
const WINDOW = 1000;
/** --data-file is read whole; nothing bigger could be one event anyway. */
const MAX_DATA_FILE_BYTES = 1024 ** 3;

/**
 * `weft publish CHANNEL`: publishes --data or --data-file (--count copies), or one event per
 * non-empty stdin line, and prints one line per acked event, in input order. Stops reading
 * at the first rejected event, reports the events already sent, and exits 1.
 * @returns the exit status.
 */
export async function publishCommand(channel: string, o: PublishOptions): Promise<number> {
  if (o.data !== undefined && o.dataFile !== undefined) throw usage("use --data or --data-file, not both");
  const fromStdin = o.data === undefined && o.dataFile === undefined;
  if (fromStdin && o.count !== undefined) throw usage("--count copies --data or --data-file; with stdin, each line is one event");
  if (fromStdin && o.id !== undefined) throw usage("--id names one event: use it with --data or --data-file, not with stdin lines");

  const data = o.dataFile === undefined ? o.data : await readDataFile(o.dataFile);
  const tls = await readClientTls(o);
  await reachSidecar(o.to, o.timeout, tls);
  if (fromStdin && process.stdin.isTTY) note("weft publish: reading events from stdin, one per line (end with Ctrl-D)");

  const client = connect(o.to, { source: `//weft-cli/${hostname()}`, ...(tls ? { tls } : {}), ...(o.token ? { token: o.token } : {}) });
  const pending: Sent[] = [];
  let failed = false;
  // A broken stream fails every event in flight with one error: say it once, then count.
  let lastError: unknown;
  let repeats = 0;
  const sayRepeats = (): void => {
    if (repeats > 0) note(`error: ${repeats} more event${repeats === 1 ? " was" : "s were"} not published for the same reason`);
    repeats = 0;
  };
  /** The line of an acked event, or undefined after a rejection (said on stderr). */
  const lineOf = (label: string, outcome: Outcome): string | undefined => {
    if ("error" in outcome) {
      failed = true;
      if (outcome.error === lastError) {
        repeats++;
        return undefined;
      }
      sayRepeats();
      lastError = outcome.error;
      note(`error: ${label} was not published: ${describeError(outcome.error)}`);
      return undefined;
    }
    sayRepeats();
    const { sequence, id, duplicate } = outcome.published;
    return o.json ? JSON.stringify({ channel, sequence: Number(sequence), id, duplicate }) : `${channel} ${sequence}${duplicate ? " duplicate" : ""}`;
  };

  // Acks are printed while input is still being read, in input order, each as soon as it
  // and those before it are in. What is acked by the time stdout takes the next write goes
  // out in that one write: a fast pipe gets few large writes, a trickle of lines each ack
  // at once. (The client batches what is published in one tick: all the lines of one read.)
  let reading = true;
  let wakeReporter: (() => void) | undefined;
  let wakeReader: (() => void) | undefined;
  const reporter = (async () => {
    for (;;) {
      const head = pending[0];
      if (!head) {
        if (!reading) break;
        await new Promise<void>((r) => (wakeReporter = r));
        continue;
      }
      await head.settled;
      let text = "";
      for (let next = pending[0]; next?.outcome; next = pending[0]) {
        pending.shift();
        const line = lineOf(next.label, next.outcome);
        if (line !== undefined) text += `${line}\n`;
      }
      wakeReader?.();
      if (text === "") continue;
      try {
        await writeText(text);
      } catch {
        failed = true; // stdout is gone: stop sending what nobody would hear about
      }
    }
    sayRepeats();
  })();

  try {
    const inputs = data === undefined ? stdinLines() : copies(data, o.count ?? 1);
    for await (const input of inputs) {
      if (failed) break;
      const event: EventInput = { channel, data: input.data, key: o.key, type: o.type, source: o.source, id: o.id };
      const sent: Sent = { label: input.label, outcome: undefined, settled: Promise.resolve() };
      sent.settled = client.publish(event).then(
        (published) => void (sent.outcome = { published }),
        (error: unknown) => void (sent.outcome = { error }),
      );
      pending.push(sent);
      wakeReporter?.();
      while (pending.length >= WINDOW && !failed) await new Promise<void>((r) => (wakeReader = r));
    }
  } finally {
    reading = false;
    wakeReporter?.();
    await reporter;
    client.close();
    if (fromStdin) process.stdin.destroy();
  }
  return failed ? EXIT_FAILURE : 0;
}

function* copies(data: string | Uint8Array, count: number): Generator<Input> {
  for (let i = 1; i <= count; i++) {
    yield { label: count === 1 ? "the event" : `event ${i} of ${count}`, data };
  }
}

async function* stdinLines(): AsyncGenerator<Input> {
  const lines = createInterface({ input: process.stdin, crlfDelay: Number.POSITIVE_INFINITY });
  let n = 0;
  try {
    for await (const line of lines) {
      n++;
      if (line.trim() !== "") yield { label: `line ${n}`, data: line };
    }
  } finally {
    lines.close();
  }
}

async function readDataFile(path: string): Promise<Uint8Array> {
  const what = `--data-file ${path}`;
  let handle;
  try {
    handle = await open(path, "r");
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new CommandError(`cannot read ${what}: ${code === "ENOENT" ? "it does not exist" : (e as Error).message}`);
  }
  try {
    const stat = await handle.stat();
    if (stat.isDirectory()) throw new CommandError(`cannot read ${what}: it is a directory`);
    if (stat.size > MAX_DATA_FILE_BYTES) throw new CommandError(`cannot read ${what}: it is ${stat.size} bytes, far larger than an event may be`);
    return new Uint8Array(await handle.readFile());
  } finally {
    await handle.close();
  }
}

function describeError(error: unknown): string {
  if (error instanceof ClientError) return error.message.startsWith(error.reason) ? error.message : `${error.reason}: ${error.message}`;
  return (error as Error)?.message ?? String(error);
}
