import { status } from "@grpc/grpc-js";

/**
 * Every refusal Weft makes carries a gRPC status code and a stable reason. Reasons are
 * never reused for another meaning; clients may match on them.
 */
export const Reason = {
  MALFORMED_MESSAGE: "MALFORMED_MESSAGE",
  INVALID_CHANNEL: "INVALID_CHANNEL",
  INVALID_GROUP: "INVALID_GROUP",
  INVALID_EVENT: "INVALID_EVENT",
  EVENT_TOO_LARGE: "EVENT_TOO_LARGE",
  BATCH_TOO_LARGE: "BATCH_TOO_LARGE",
  INVALID_START: "INVALID_START",
  INVALID_SETTING: "INVALID_SETTING",
  TOO_MANY_CREDITS: "TOO_MANY_CREDITS",
  TOO_MANY_SUBSCRIPTIONS: "TOO_MANY_SUBSCRIPTIONS",
  UNKNOWN_DELIVERY: "UNKNOWN_DELIVERY",
  NOT_OPEN: "NOT_OPEN",
  ALREADY_OPEN: "ALREADY_OPEN",
  SHUTTING_DOWN: "SHUTTING_DOWN",
  LOG_CLOSED: "LOG_CLOSED",
  STORAGE_QUOTA: "STORAGE_QUOTA",
  DISK_FULL: "DISK_FULL",
  TOO_MANY_CHANNELS: "TOO_MANY_CHANNELS",
  TOO_MANY_GROUPS: "TOO_MANY_GROUPS",
  TOO_MANY_PEERS: "TOO_MANY_PEERS",
  RECEIVE_BUDGET: "RECEIVE_BUDGET",
  // Peer links (weft.v1.Peer)
  UNSUPPORTED_PROTOCOL: "UNSUPPORTED_PROTOCOL",
  DUPLICATE_NODE_ID: "DUPLICATE_NODE_ID",
  SELF_LINK: "SELF_LINK",
  LINK_EXISTS: "LINK_EXISTS",
  NOT_ADVERTISED: "NOT_ADVERTISED",
  PROTOCOL_VIOLATION: "PROTOCOL_VIOLATION",
  PEER_SILENT: "PEER_SILENT",
  NOT_A_PEER: "NOT_A_PEER",
  NODE_ID_MISMATCH: "NODE_ID_MISMATCH",
  // Who may call (docs/security.md)
  UNAUTHENTICATED: "UNAUTHENTICATED",
  INVALID_TOKEN: "INVALID_TOKEN",
  NOT_PERMITTED: "NOT_PERMITTED",
  // The operator API (weft.v1.Admin)
  CHANNEL_NOT_FOUND: "CHANNEL_NOT_FOUND",
  GROUP_NOT_FOUND: "GROUP_NOT_FOUND",
  DEAD_LETTER_NOT_FOUND: "DEAD_LETTER_NOT_FOUND",
  INVALID_LIMIT: "INVALID_LIMIT",
  INVALID_SEQUENCE: "INVALID_SEQUENCE",
} as const;
export type Reason = (typeof Reason)[keyof typeof Reason];

/** A refusal with a gRPC status code, a stable reason and, where it applies, the field. */
export class WeftError extends Error {
  constructor(
    readonly code: status,
    readonly reason: Reason,
    message: string,
    readonly field = "",
  ) {
    super(`${reason}: ${message}`);
    this.name = "WeftError";
  }
}

export function invalid(reason: Reason, field: string, message: string): WeftError {
  return new WeftError(status.INVALID_ARGUMENT, reason, message, field);
}

export function notFound(reason: Reason, field: string, message: string): WeftError {
  return new WeftError(status.NOT_FOUND, reason, message, field);
}

export function exhausted(reason: Reason, field: string, message: string): WeftError {
  return new WeftError(status.RESOURCE_EXHAUSTED, reason, message, field);
}
