import { fromBinary, toBinary } from "@bufbuild/protobuf";
import { Reason, WeftError } from "../contract/errors.js";
import { EventSchema } from "../gen/weft/v1/event_pb.js";
import type { AppendEntry, EventLog } from "../log/event-log.js";
import type { StoredEvent } from "../log/record.js";

/** What a dead letter says of its group and of why the event ended there. */
export interface DeadLetterCause {
  group: string;
  deadLetterChannel: string;
  attempts: number;
  maxAttempts: number;
  /** What happened to the last attempt ("was nacked", "passed its ack deadline", ...). */
  why: string;
}

/**
 * The dead letter of `event`: the event itself, in the group's dead-letter channel, with
 * `weft.dead_letter.*` attributes naming the reason, the attempts, and where the event was:
 * its channel and, for a relay copy, its sequence and node at its origin.
 *
 * Deduplicated per group, so groups sharing a dead-letter channel each keep theirs, and a
 * dead-lettering repeated after a crash is stored once; a redriven event that fails again
 * is a new dead letter, not a duplicate of the first.
 * @throws when the stored bytes are not an event (they were validated when published).
 */
export function deadLetterOf(event: StoredEvent, cause: DeadLetterCause): AppendEntry {
  const e = fromBinary(EventSchema, event.bytes);
  const channel = e.channel;
  const origin = event.origin;
  const redriven = e.attributes["weft.redrive.from"];
  e.channel = cause.deadLetterChannel;
  e.attributes["weft.dead_letter.reason"] = "max_attempts";
  e.attributes["weft.dead_letter.detail"] = `${cause.attempts} of ${cause.maxAttempts} attempts made; the last ${cause.why}`;
  e.attributes["weft.dead_letter.attempts"] = String(cause.attempts);
  e.attributes["weft.dead_letter.channel"] = channel;
  e.attributes["weft.dead_letter.group"] = cause.group;
  e.attributes["weft.dead_letter.sequence"] = String(origin?.sequence ?? event.sequence);
  if (origin) e.attributes["weft.dead_letter.origin"] = origin.node;
  const source = `weft-dlq:${cause.group}:${redriven === undefined ? "" : `${redriven}:`}${e.source}`;
  return { channel: e.channel, source, id: e.id, key: e.key, bytes: toBinary(EventSchema, e) };
}

/**
 * Dead-letters `event` (see deadLetterOf, storeDeadLetter): `done(true)` once its dead letter
 * is stored; `done(false)` at once for stored bytes that are not an event (validated on
 * publish, so never expected): it is finished, not looped on.
 */
export function deadLetterEvent(
  log: EventLog,
  event: StoredEvent,
  cause: DeadLetterCause,
  on: { done(stored: boolean): void; stop(): boolean; refused(error: WeftError): void },
): void {
  let letter: AppendEntry;
  try {
    letter = deadLetterOf(event, cause);
  } catch {
    on.done(false);
    return;
  }
  storeDeadLetter(log, letter, { stored: () => on.done(true), stop: on.stop, refused: on.refused });
}

/** A dead letter that could not be stored (a full disk) is tried again after this, ms. */
const RETRY_MS = 1000;

/**
 * Appends a dead letter, and again every second until it is stored: a full disk, or a
 * dead-letter channel that would pass maxChannels (`refused` is told), refuses it for now,
 * and a repeat is stored once. `stored` is called once it is. Nothing more happens once
 * `stop()` is true: the log is closing (the event's in-flight record stays, and a restart
 * dead-letters it again), or the event is no longer to be dead-lettered.
 */
export function storeDeadLetter(log: EventLog, letter: AppendEntry, on: { stored(): void; stop(): boolean; refused(error: WeftError): void }): void {
  log
    .append([letter])
    .then(() => on.stored())
    .catch((e: unknown) => {
      if (on.stop()) return;
      if (e instanceof WeftError && e.reason === Reason.TOO_MANY_CHANNELS) on.refused(e);
      setTimeout(() => {
        if (!on.stop()) storeDeadLetter(log, letter, on);
      }, RETRY_MS).unref();
    });
}
