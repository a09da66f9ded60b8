import { seqHex } from "../log/keys.js";

/**
 * The keys of group state in the log's main database (see StateStore). Channel and group
 * names cannot contain '!', so '!' separates the parts; sequences are 16 hex digits so keys
 * sort in sequence order.
 *
 *   g!CHANNEL!GROUP          a group's cursor and settings
 *   a!CHANNEL!GROUP!SEQ      acked above the cursor (out-of-order acks)
 *   f!CHANNEL!GROUP!SEQ      a delivery in flight: its attempt (written for attempts after the
 *                            first, and "0" for one given back); it wins over a p! record
 *   p!CHANNEL!GROUP!SEQ      first attempts sent in one pump: the sequences (float64 LE each),
 *                            keyed by the first; deleted once all of them are done
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
export const pumpKey = (channel: string, group: string, firstSeq: number): string =>
  `p!${channel}!${group}!${seqHex(firstSeq)}`;
export const pumpPrefix = (channel: string, group: string): string => `p!${channel}!${group}!`;
export const deadLetterMarksKey = (deadLetterChannel: string, channel: string, group: string): string =>
  `q!${deadLetterChannel}!${channel}!${group}`;
