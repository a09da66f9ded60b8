import { Reason, exhausted, invalid } from "../contract/errors.js";
import { MAX_ATTEMPTS, MAX_DELAY_MS, MAX_SEQUENCE, SEQUENCE_RULE, TIME_RULE, isStartTime } from "../contract/ranges.js";
import { checkChannel, checkGroup } from "../contract/validate.js";
import { StartPosition_Kind, type SubscribeOpen } from "../gen/weft/v1/mesh_pb.js";
import { DEFAULTS, type JoinSettings, type StartAt, defaultDeadLetterChannel } from "./types.js";

/**
 * Checks an open request and fills in defaults. One rule for every group a member joins:
 * a Subscribe stream's open, and a group a peer announces (the mesh builds an open for it).
 * @throws WeftError naming the bad field.
 */
export function joinSettings(open: SubscribeOpen): JoinSettings {
  checkChannel(open.channel, "open.channel");
  checkGroup(open.group, "open.group");
  const start = startAt(open);
  if (open.maxInFlight > DEFAULTS.maxCredits) {
    throw exhausted(Reason.TOO_MANY_CREDITS, "open.max_in_flight", `max_in_flight is ${open.maxInFlight}; use 1 to ${DEFAULTS.maxCredits}, or 0 for the default`);
  }
  const ackDeadlineMs = open.ackDeadlineMs || DEFAULTS.ackDeadlineMs;
  if (ackDeadlineMs < 100 || ackDeadlineMs > MAX_DELAY_MS) {
    throw invalid(Reason.INVALID_SETTING, "open.ack_deadline_ms", `ack_deadline_ms is ${ackDeadlineMs}; use 100 to ${MAX_DELAY_MS}, or 0 for the default`);
  }
  const maxAttempts = open.maxAttempts || DEFAULTS.maxAttempts;
  if (maxAttempts > MAX_ATTEMPTS) {
    throw invalid(Reason.INVALID_SETTING, "open.max_attempts", `max_attempts is ${maxAttempts}; use 1 to ${MAX_ATTEMPTS}, or 0 for the default`);
  }
  const deadLetterChannel = open.deadLetterChannel || defaultDeadLetterChannel(open.channel, open.group);
  checkChannel(deadLetterChannel, "open.dead_letter_channel");
  if (deadLetterChannel === open.channel) {
    throw invalid(Reason.INVALID_SETTING, "open.dead_letter_channel", "the dead-letter channel must differ from the channel");
  }
  return {
    channel: open.channel,
    group: open.group,
    start,
    maxInFlight: open.maxInFlight || DEFAULTS.maxInFlight,
    ackDeadlineMs,
    maxAttempts,
    deadLetterChannel,
  };
}

function startAt(open: SubscribeOpen): StartAt {
  const start = open.start;
  const rule = "set start.kind to KIND_LATEST, KIND_EARLIEST, KIND_SEQUENCE (with start.sequence >= 1) or KIND_TIME (with start.time)";
  if (!start) throw invalid(Reason.INVALID_START, "open.start", `start is required: ${rule}`);
  switch (start.kind) {
    case StartPosition_Kind.LATEST:
      return { kind: "latest" };
    case StartPosition_Kind.EARLIEST:
      return { kind: "earliest" };
    case StartPosition_Kind.SEQUENCE:
      if (start.sequence < 1n || start.sequence > BigInt(MAX_SEQUENCE)) {
        throw invalid(Reason.INVALID_START, "open.start.sequence", `start.sequence is ${start.sequence}; use ${SEQUENCE_RULE}`);
      }
      return { kind: "sequence", sequence: Number(start.sequence) };
    case StartPosition_Kind.TIME: {
      const time = start.time;
      if (!time) throw invalid(Reason.INVALID_START, "open.start.time", `start.time is required for KIND_TIME: ${rule}`);
      // Checked before it is stored: a group's start goes into every interest snapshot, and
      // one that cannot be encoded there would break every link of this sidecar.
      if (!isStartTime(time.seconds, time.nanos)) {
        throw invalid(Reason.INVALID_START, "open.start.time", `start.time is ${time.seconds} s ${time.nanos} ns; use ${TIME_RULE}`);
      }
      return { kind: "time", time: Number(time.seconds) * 1000 + Math.floor(time.nanos / 1e6) };
    }
    default:
      throw invalid(Reason.INVALID_START, "open.start.kind", `start.kind ${start.kind} is not a start position: ${rule}`);
  }
}
