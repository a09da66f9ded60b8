import { InvalidArgumentError } from "commander";
import type { From } from "../../src/client/index.js";
import { isName } from "../../src/contract/validate.js";
import { addressProblem, addressRule } from "../address.js";
import { DURATION_RULE, formatDuration, parseDuration } from "../units.js";

/** Exit status of a command that was used wrongly: unknown flag, bad value, missing argument. */
export const EXIT_USAGE = 2;
/** Exit status of a command that was used rightly but failed: unreachable, refused, cannot start. */
export const EXIT_FAILURE = 1;

/** The sidecar address clients use when neither --to nor WEFT_ADDRESS says otherwise. */
export const DEFAULT_ADDRESS = "127.0.0.1:7420";

/** A failure that ends the command with `exitCode` and a one-line message on stderr. */
export class CommandError extends Error {
  constructor(
    message: string,
    readonly exitCode: number = EXIT_FAILURE,
  ) {
    super(message);
    this.name = "CommandError";
  }
}

/** A usage error found after commander parsed the command line (exit 2). */
export function usage(message: string): CommandError {
  return new CommandError(message, EXIT_USAGE);
}

const NAME_RULE = "dot-separated lowercase segments, each starting with a letter, then letters, digits, '_' or '-' (e.g. \"orders.created\")";

/** Parses a channel or group argument with the sidecar's grammar. */
export function nameArgument(value: string): string {
  if (!isName(value)) throw new InvalidArgumentError(`Use ${NAME_RULE}, at most 200 characters.`);
  return value;
}

/** Returns a parser of whole numbers from `min` to `max` (at most 2^53 - 1). */
export function integerArgument(min: number, max = Number.MAX_SAFE_INTEGER): (value: string) => number {
  const range = max === Number.MAX_SAFE_INTEGER ? `${min} or more` : `from ${min} to ${max}`;
  return (value) => {
    const n = /^\d+$/.test(value) ? Number(value) : Number.NaN;
    if (!Number.isSafeInteger(n) || n < min || n > max) {
      throw new InvalidArgumentError(`Use a whole number, ${range}.`);
    }
    return n;
  };
}

/** Returns a parser of durations ("5s", "500ms", or ms) from `min` to `max`. */
export function durationArgument(min: number, max: number): (value: string) => number {
  return (value) => {
    const ms = parseDuration(value);
    if (ms === undefined) throw new InvalidArgumentError(`Use ${DURATION_RULE}.`);
    if (ms < min || ms > max) throw new InvalidArgumentError(`Use ${formatDuration(min)} to ${formatDuration(max)}.`);
    return ms;
  };
}

/** Parses a sidecar address to connect to. */
export function addressArgument(value: string): string {
  const problem = addressProblem(value, true);
  if (problem) throw new InvalidArgumentError(`The address is not usable (${problem}); use ${addressRule(true)}.`);
  return value;
}

const MAX_SEQUENCE = 2n ** 64n - 1n;
// Calendar date, optionally a time of day, optionally an offset (local time without one).
const ISO_8601 = /^\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(?:Z|[+-]\d{2}:?\d{2})?)?$/i;

/** Parses --from: latest, earliest, a sequence (>= 1) or an ISO 8601 time. */
export function fromArgument(value: string): From {
  if (value === "latest" || value === "earliest") return value;
  if (/^\d+$/.test(value)) {
    const sequence = BigInt(value);
    if (sequence < 1n || sequence > MAX_SEQUENCE) throw new InvalidArgumentError("A sequence must be from 1 to 2^64 - 1.");
    return { sequence };
  }
  if (ISO_8601.test(value) && isCalendarDate(value)) {
    const time = new Date(value.includes(" ") ? value.replace(" ", "T") : value);
    if (!Number.isNaN(time.getTime()) && time.getTime() >= 0) return { time };
  }
  throw new InvalidArgumentError(
    'Use latest, earliest, a sequence (a whole number from 1), or an ISO 8601 time after 1970 (e.g. "2026-01-31T12:00:00Z"; local time without an offset).',
  );
}

/** True when the date part names a real day (Date would roll "02-30" over into March). */
function isCalendarDate(value: string): boolean {
  const [year, month, day] = value.slice(0, 10).split("-").map(Number) as [number, number, number];
  return month >= 1 && month <= 12 && day >= 1 && day <= new Date(Date.UTC(year, month, 0)).getUTCDate();
}
