import type { Event } from "../gen/weft/v1/event_pb.js";
import { Reason, WeftError, exhausted, invalid } from "./errors.js";

/** Limits that bound every request; the sidecar's configuration may lower or raise some. */
export interface Limits {
  /** Largest encoded event, in bytes. */
  maxEventBytes: number;
  /** Most events in one publish batch. */
  maxBatchEvents: number;
  /** Most Subscribe streams open at once on one sidecar. */
  maxSubscriptions: number;
}

export const DEFAULT_LIMITS: Limits = { maxEventBytes: 1024 * 1024, maxBatchEvents: 1000, maxSubscriptions: 10_000 };

export const MAX_NAME_LENGTH = 200;
const NAME = /^[a-z][a-z0-9_-]*(\.[a-z][a-z0-9_-]*)*$/;
const ATTRIBUTE_NAME = /^[a-z0-9][a-z0-9._-]{0,127}$/;
// C0 and C1 control characters, and DEL.
// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/;
const MAX_ATTRIBUTES = 64;

const NODE_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
/** The node id rule, for error messages. */
export const NODE_ID_RULE = "1 to 64 characters: letters, digits, '.', '_' or '-', starting with a letter or digit";

/** True for a valid node id (a sidecar's name in the mesh). */
export function isNodeId(id: string): boolean {
  return NODE_ID.test(id);
}

/** True for a valid channel or group name: dot-separated lowercase segments. */
export function isName(name: string): boolean {
  return name.length > 0 && name.length <= MAX_NAME_LENGTH && NAME.test(name);
}

const NAME_RULE =
  "dot-separated lowercase segments, each starting with a letter, then letters, digits, '_' or '-', at most 200 characters (e.g. \"orders.created\")";

/** Throws INVALID_ARGUMENT (INVALID_CHANNEL) unless `channel` follows the grammar. */
export function checkChannel(channel: string, field = "channel"): void {
  if (!isName(channel)) {
    throw invalid(Reason.INVALID_CHANNEL, field, `${field} ${quote(channel)} is not valid: use ${NAME_RULE}`);
  }
}

/** Throws INVALID_ARGUMENT (INVALID_GROUP) unless `group` follows the grammar. */
export function checkGroup(group: string, field = "group"): void {
  if (!isName(group)) {
    throw invalid(Reason.INVALID_GROUP, field, `${field} ${quote(group)} is not valid: use ${NAME_RULE}`);
  }
}

function checkText(value: string, field: string, max: number, required: boolean): void {
  if (required && value.length === 0) {
    throw invalid(Reason.INVALID_EVENT, field, `${field} is required`);
  }
  // Characters are code points (what other languages count), not UTF-16 units: the cheap
  // length is an upper bound, so most values are never counted.
  if (value.length > max) {
    const characters = [...value].length;
    if (characters > max) throw invalid(Reason.INVALID_EVENT, field, `${field} is ${characters} characters; at most ${max} are allowed`);
  }
  if (CONTROL.test(value)) {
    throw invalid(Reason.INVALID_EVENT, field, `${field} contains control characters, which are not allowed`);
  }
}

/**
 * Checks one published event against the contract in proto/weft/v1/event.proto.
 * `encodedBytes` is the size of the event as received. `allowReserved` lets "weft."
 * attributes through: a sidecar sets them (dead letters, redrives) on events it forwards to
 * peers; a publisher never may.
 * @throws WeftError describing the first rule the event breaks.
 */
export function checkEvent(event: Event, encodedBytes: number, limits: Limits, options: { allowReserved?: boolean } = {}): void {
  if (encodedBytes > limits.maxEventBytes) {
    throw exhausted(
      Reason.EVENT_TOO_LARGE,
      "event",
      `the event is ${encodedBytes} bytes encoded; at most ${limits.maxEventBytes} are allowed`,
    );
  }
  checkChannel(event.channel);
  checkText(event.id, "id", 256, true);
  checkText(event.source, "source", 1024, true);
  checkText(event.type, "type", 256, true);
  checkText(event.subject, "subject", 1024, false);
  checkText(event.datacontenttype, "datacontenttype", 256, false);
  if (event.key.length > 256) {
    throw invalid(Reason.INVALID_EVENT, "key", `key is ${event.key.length} characters; at most 256 are allowed`);
  }
  const names = Object.keys(event.attributes);
  if (names.length > MAX_ATTRIBUTES) {
    throw invalid(
      Reason.INVALID_EVENT,
      "attributes",
      `the event has ${names.length} attributes; at most ${MAX_ATTRIBUTES} are allowed`,
    );
  }
  for (const name of names) {
    const field = `attributes[${name}]`;
    if (!ATTRIBUTE_NAME.test(name)) {
      throw invalid(
        Reason.INVALID_EVENT,
        field,
        `attribute name ${quote(name)} is not valid: use 1 to 128 lowercase letters, digits, '.', '_' or '-', starting with a letter or digit`,
      );
    }
    if (name.startsWith("weft.") && !options.allowReserved) {
      throw invalid(Reason.INVALID_EVENT, field, `attribute names starting with "weft." are reserved for the sidecar`);
    }
  }
  if (event.time) {
    const { seconds, nanos } = event.time;
    if (nanos < 0 || nanos > 999_999_999) {
      throw invalid(Reason.INVALID_EVENT, "time", "time.nanos must be between 0 and 999999999");
    }
    // google.protobuf.Timestamp is defined from 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z.
    if (seconds < -62_135_596_800n || seconds > 253_402_300_799n) {
      throw invalid(Reason.INVALID_EVENT, "time", "time must be between 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z");
    }
  }
}

/** Quotes a value for an error message, cut short so that hostile input stays readable. */
export function quote(value: string): string {
  const cut = value.length > 64 ? `${value.slice(0, 64)}…` : value;
  return JSON.stringify(cut);
}

export function isWeftError(e: unknown): e is WeftError {
  return e instanceof WeftError;
}
