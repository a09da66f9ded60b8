import { ClientError, type Delivery, type From, type SubscriptionStatus, connect } from "../../src/client/index.js";
import { EXIT_FAILURE } from "./arguments.js";
import { note, writeLine } from "./output.js";
import { type ClientTlsOptions, readClientTls } from "./client-tls.js";
import { reachSidecar } from "./reach-sidecar.js";

/** The options of `weft subscribe`, as commander parses them. */
export interface SubscribeOptions extends ClientTlsOptions {
  group: string;
  to: string;
  from?: From;
  count?: number;
  /** JSON lines are the only output format; the flag is accepted for explicitness. */
  json?: boolean;
  maxInFlight?: number;
  timeout: number;
}

/** The sidecar's default, used when --count is not smaller. */
const DEFAULT_MAX_IN_FLIGHT = 100;

/** One delivery as printed: a JSON line. */
export interface DeliveryLine {
  id: string;
  /** A number, or a decimal string beyond 2^53 (which a JSON number cannot hold exactly). */
  sequence: number | string;
  attempt: number;
  channel: string;
  key: string;
  type: string;
  source: string;
  /** The payload when it is valid UTF-8... */
  data?: string;
  /** ...else the payload in base64. */
  dataBase64?: string;
}

/**
 * `weft subscribe CHANNEL --group G`: prints one JSON line per delivery and acks it once
 * the line is written (so a closed stdout never loses an event: it is redelivered). With
 * --count, exits after that many; otherwise runs until SIGINT/SIGTERM.
 * @returns the exit status.
 */
export async function subscribeCommand(channel: string, o: SubscribeOptions): Promise<number> {
  const tls = await readClientTls(o);
  await reachSidecar(o.to, o.timeout, tls);
  const client = connect(o.to, { ...(tls ? { tls } : {}), ...(o.token ? { token: o.token } : {}) });
  // With --count, ask for no more than will be printed: the rest would only come back later.
  const maxInFlight = o.maxInFlight ?? (o.count !== undefined ? Math.min(o.count, DEFAULT_MAX_IN_FLIGHT) : undefined);
  const stop = new AbortController();
  const onSignal = (): void => stop.abort();
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  // Said on stderr, so that someone watching knows why nothing comes, and when it can again.
  const onStatus = (s: SubscriptionStatus): void => {
    if (s.type === "disconnected") {
      const why = s.error ? ` (${s.error.message.startsWith(s.error.reason) ? s.error.message : `${s.error.reason}: ${s.error.message}`})` : "";
      note(`weft subscribe: lost the sidecar at ${o.to}${why}; reconnecting until it is back`);
    } else {
      note(`weft subscribe: the sidecar at ${o.to} is back: subscribed again to ${channel} as group ${o.group}, resuming after sequence ${s.subscribed.ackedThrough}`);
    }
  };
  const subscription = client.subscribe({ channel, group: o.group, from: o.from, maxInFlight, signal: stop.signal, onStatus });
  void subscription.subscribed().then((s) => {
    const at = s.created
      ? `a new group, starting ${describeFrom(o.from)}`
      : `the group exists and resumes after sequence ${s.ackedThrough}${o.from ? " (--from only applies to a new group)" : ""}`;
    note(`weft subscribe: subscribed to ${channel} as group ${o.group}: ${at}`);
  });

  let received = 0;
  try {
    for await (const delivery of subscription) {
      try {
        await writeLine(JSON.stringify(deliveryLine(delivery)));
      } catch {
        note("error: stdout is closed; stopping (the unprinted event will be redelivered)");
        return EXIT_FAILURE;
      }
      // Ack in the same tick as a break: closing sends the acks of this tick before it ends the stream.
      delivery.ack();
      received++;
      if (o.count !== undefined && received >= o.count) break;
    }
    return 0;
  } catch (e) {
    const message = e instanceof ClientError && !e.message.startsWith(e.reason) ? `${e.reason}: ${e.message}` : (e as Error).message;
    note(`error: the sidecar ended the subscription: ${message}`);
    return EXIT_FAILURE;
  } finally {
    subscription.close(); // sends the acks of this tick, then ends the stream
    client.close();
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
  }
}

/** The printed form of a delivery. */
export function deliveryLine(d: Delivery): DeliveryLine {
  const e = d.event;
  const line: DeliveryLine = {
    id: e.id,
    sequence: d.sequence <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(d.sequence) : d.sequence.toString(),
    attempt: d.attempt,
    channel: e.channel,
    key: e.key,
    type: e.type,
    source: e.source,
  };
  const text = utf8(d.data);
  if (text === undefined) line.dataBase64 = Buffer.from(d.data).toString("base64");
  else line.data = text;
  return line;
}

const decoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

function utf8(bytes: Uint8Array): string | undefined {
  try {
    return decoder.decode(bytes);
  } catch {
    return undefined;
  }
}

function describeFrom(from: From | undefined): string {
  if (from === undefined || from === "latest") return "after the latest event (new events only)";
  if (from === "earliest") return "at the earliest retained event";
  if ("sequence" in from) return `at sequence ${from.sequence}`;
  return `at ${from.time.toISOString()}`;
}
