/**
 * The ranges of numbers from outside that Weft stores, and the one rule for each. Every
 * number is checked against its range before it is stored, so that whatever is stored can
 * be encoded again later (in an interest snapshot, a Subscribed answer, an Admin answer);
 * where a stored value is encoded, `clamp` keeps one that is out of range anyway (a data
 * directory written by an older release) encodable.
 */

/** The largest sequence: every sequence is a JavaScript number, exact up to 2^53 - 1. */
export const MAX_SEQUENCE = Number.MAX_SAFE_INTEGER;
/** The sequence rule, for error messages. */
export const SEQUENCE_RULE = "1 to 9007199254740991 (2^53 - 1)";

/** The most deliveries of one event a group makes before dead-lettering it. */
export const MAX_ATTEMPTS = 1000;

/** The longest ack deadline, nack delay or deadline extension, ms (one hour). */
export const MAX_DELAY_MS = 3_600_000;

/**
 * The latest time a start position (and a group's creation time) may name: 9999-12-31T23:59:59Z,
 * the end of google.protobuf.Timestamp's range, in seconds. Times before the Unix epoch are
 * refused too: no event is stored before 1970, and a start at 0 (1970-01-01T00:00:00Z)
 * already covers every retained event.
 */
export const MAX_TIME_SECONDS = 253_402_300_799;
/** The same bound in Unix milliseconds (its last millisecond). */
export const MAX_TIME_MS = MAX_TIME_SECONDS * 1000 + 999;
/** The time rule, for error messages. */
export const TIME_RULE = `seconds 0 to ${MAX_TIME_SECONDS} (1970-01-01T00:00:00Z to 9999-12-31T23:59:59Z) and nanos 0 to 999999999`;
/** The rule for a time in Unix milliseconds, for error messages. */
export const TIME_MS_RULE = `0 to ${MAX_TIME_MS} (1970-01-01T00:00:00Z to 9999-12-31T23:59:59.999Z)`;

/** True when `seconds` and `nanos` name a time within the start-time range. */
export function isStartTime(seconds: bigint, nanos: number): boolean {
  return seconds >= 0n && seconds <= BigInt(MAX_TIME_SECONDS) && Number.isInteger(nanos) && nanos >= 0 && nanos <= 999_999_999;
}

/**
 * `value` within `min..max` (whole numbers; Infinity clamps to a bound). Undefined for
 * something that is not a number at all (NaN, a string, null), which has no nearest value.
 */
export function clamp(value: unknown, min: number, max: number): number | undefined {
  if (typeof value !== "number" || Number.isNaN(value)) return undefined;
  return Math.min(max, Math.max(min, Math.trunc(value)));
}
