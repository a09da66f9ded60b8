import { seqHex } from "../log/keys.js";

/**
 * The keys of group state in the log's main database (see StateStore). Channel and group
 * names cannot contain '!', so '!' separates the parts; sequences are 16 hex digits so keys
 * sort in sequence order.
 *
 *   g!CHANNEL!GROUP          a group's cursor and settings
 *   a!CHANNEL!GROUP!SEQ      acked above the cursor (out-of-order acks)
 *   f!CHANNEL!GROUP!SEQ      an event's attempts, recorded on their own: written for attempts
 *                            after the first, for every attempt of an event given back or
 *                            restored ("0" for one given back); it wins over the mark
 *   t!CHANNEL!GROUP          the group's attempt mark M (see AttemptRecords), decimal: an event
 *                            of the group above it without an f! record has never been
 *                            delivered; one at or below it that is not done and has no f!
 *                            record has had at most one attempt. Absent: the cursor. A key of
 *                            its own, not a field of g!: only the mark's writes put it, one at
 *                            a time, so that it never goes back
 *   p!CHANNEL!GROUP!SEQ      first attempts sent together, written by earlier releases: the
 *                            sequences (float64 LE each), keyed by the first. Read when the
 *                            groups load, each still open becoming an f! record at attempt 1
 *   q!DLQ!CHANNEL!GROUP      the dead letters of GROUP in DLQ an operator handled (redriven or
 *                            purged): {"through","handled"} (see DeadLetterMarks)
 */
export const groupKey = (channel: string, group: string): string => `g!${channel}!${group}`;
export const ackedKey = (channel: string, group: string, seq: number): string =>
  `a!${channel}!${group}!${seqHex(seq)}`;
export const ackedPrefix = (channel: string, group: string): string => `a!${channel}!${group}!`;
export const inflightKey = (channel: string, group: string, seq: number): string =>
  `f!${channel}!${group}!${seqHex(seq)}`;
export const inflightPrefix = (channel: string, group: string): string => `f!${channel}!${group}!`;
export const markKey = (channel: string, group: string): string => `t!${channel}!${group}`;
export const pumpPrefix = (channel: string, group: string): string => `p!${channel}!${group}!`;
export const deadLetterMarksKey = (deadLetterChannel: string, channel: string, group: string): string =>
  `q!${deadLetterChannel}!${channel}!${group}`;
