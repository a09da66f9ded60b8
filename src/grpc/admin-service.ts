import { type DescMessage, type MessageInitShape, type MessageShape, create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { type ServerUnaryCall, type UntypedServiceImplementation, type sendUnaryData } from "@grpc/grpc-js";
import type { LogRange, SidecarAdmin } from "../admin/sidecar-admin.js";
import { Reason, invalid } from "../contract/errors.js";
import { MAX_TIME_MS, clamp } from "../contract/ranges.js";
import { OPEN_ACCESS, type AccessControl, type Caller } from "../security/access.js";
import { type CallerCheck, callerOf } from "./caller.js";
import { serviceError } from "../wire/status.js";
import {
  ListChannelsRequestSchema,
  ListChannelsResponseSchema,
  ListDeadLettersRequestSchema,
  ListDeadLettersResponseSchema,
  ListGroupsRequestSchema,
  ListGroupsResponseSchema,
  ListPeersRequestSchema,
  ListPeersResponseSchema,
  LogRangeSchema,
  PurgeRequestSchema,
  PurgeResponseSchema,
  RedriveRequestSchema,
  RedriveResponseSchema,
  StatsRequestSchema,
  StatsResponseSchema,
} from "../gen/weft/v1/admin_pb.js";

/**
 * The handlers of weft.v1.Admin: each decodes its request, calls the SidecarAdmin (where
 * the logic and the input checks are), and encodes the answer. A request that is not the
 * message it should be is INVALID_ARGUMENT (MALFORMED_MESSAGE); a WeftError keeps its code,
 * with its reason in the trailing metadata "weft-reason" (and its field in "weft-field").
 *
 * With a policy, a call is authenticated before its request is read (UNAUTHENTICATED), and
 * needs the admin permission: on the channel for dead letters, redrive and purge, on any
 * channel for the lists and stats (PERMISSION_DENIED); nothing is read or changed otherwise.
 */
export class AdminService {
  private readonly callers: CallerCheck;

  constructor(
    private readonly admin: SidecarAdmin,
    callers?: CallerCheck,
  ) {
    this.callers = callers ?? { access: OPEN_ACCESS, socket: false };
  }

  implementation(): UntypedServiceImplementation {
    const admin = this.admin;
    const access = this.callers.access;
    const unary = <I extends DescMessage, O extends DescMessage>(
      input: I,
      output: O,
      permit: (caller: Caller, request: MessageShape<I>, access: AccessControl) => void,
      handle: (request: MessageShape<I>) => Promise<MessageInitShape<O>>,
    ): Handler => guarded(this.callers, input, output, (caller, request) => permit(caller, request, access), handle);
    const anyAdmin = (caller: Caller): void => access.checkAdmin(caller);
    const ofChannel = (caller: Caller, request: { channel: string }): void => access.check(caller, "admin", request.channel);
    return {
      ListChannels: unary(ListChannelsRequestSchema, ListChannelsResponseSchema, anyAdmin, async () => ({
        nodeId: admin.nodeId,
        channels: (await admin.channels()).map((c) => ({
          channel: c.channel,
          log: logRange(c.log),
          groups: c.groups.map((g) => ({ group: g.group, backlog: BigInt(g.backlog), inFlight: g.inflight, members: g.members })),
          deadLettersOf: c.deadLettersOf,
        })),
      })),

      ListGroups: unary(ListGroupsRequestSchema, ListGroupsResponseSchema, anyAdmin, async (request) => ({
        nodeId: admin.nodeId,
        channel: request.channel,
        groups: (await admin.groups(request.channel)).map((g) => ({
          group: g.group,
          ackedThrough: BigInt(g.ackedThrough),
          backlog: BigInt(g.backlog),
          inFlight: g.inflight,
          localMembers: g.localMembers,
          remoteMembers: g.remoteMembers,
          maxAttempts: g.maxAttempts,
          deadLetterChannel: g.deadLetterChannel,
          expired: BigInt(g.expired),
          // Unset when unknown, or out of range (a group stored by an older release).
          createdTime: clamp(g.createdAt, 0, MAX_TIME_MS) === g.createdAt ? timestampFromMs(g.createdAt!) : undefined,
          relayBacklog: BigInt(g.relayBacklog ?? 0),
          relayInFlight: g.relayInflight,
          deadLetters: BigInt(g.deadLetters),
          deadLettersMore: g.deadLettersMore,
        })),
      })),

      ListPeers: unary(ListPeersRequestSchema, ListPeersResponseSchema, anyAdmin, async () => ({
        nodeId: admin.nodeId,
        peers: admin.peers().map((p) => ({
          nodeId: p.nodeId,
          connected: p.connected,
          address: p.address,
          softwareVersion: p.softwareVersion,
          since: p.since > 0 ? timestampFromMs(p.since) : undefined,
          inFlight: BigInt(p.inflight),
          groups: p.groups.map((g) => ({ channel: g.channel, group: g.group, inFlight: g.inflight })),
        })),
      })),

      ListDeadLetters: unary(ListDeadLettersRequestSchema, ListDeadLettersResponseSchema, ofChannel, async (request) => {
        const page = await admin.listDeadLetters(request.channel, request.group, {
          after: sequence(request.afterSequence, "after_sequence"),
          limit: request.limit,
        });
        return {
          deadLetterChannel: page.deadLetterChannel,
          deadLetters: page.deadLetters.map((d) => ({ sequence: BigInt(d.sequence), time: timestampFromMs(d.time), event: d.event })),
          nextAfterSequence: BigInt(page.nextAfter),
        };
      }),

      Redrive: unary(RedriveRequestSchema, RedriveResponseSchema, ofChannel, async (request) => {
        const result = await admin.redrive(request.channel, request.group, {
          sequences: request.sequences.map((s, i) => sequence(s, `sequences[${i}]`)),
          limit: request.limit,
        });
        return {
          redriven: result.redriven.map((r) => ({ deadLetterSequence: BigInt(r.deadLetterSequence), sequence: BigInt(r.sequence), duplicate: r.duplicate })),
          more: result.more,
        };
      }),

      Purge: unary(PurgeRequestSchema, PurgeResponseSchema, ofChannel, async (request) => ({
        purged: BigInt(await admin.purge(request.channel, request.group, { sequences: request.sequences.map((s, i) => sequence(s, `sequences[${i}]`)) })),
      })),

      Stats: unary(StatsRequestSchema, StatsResponseSchema, anyAdmin, async () => {
        const s = admin.stats();
        return {
          nodeId: s.nodeId,
          time: timestampFromMs(s.time),
          startTime: timestampFromMs(s.startTime),
          published: BigInt(s.published),
          stored: BigInt(s.stored),
          forwarded: BigInt(s.forwarded),
          acked: BigInt(s.acked),
        };
      }),
    };
  }
}

type Handler = (call: ServerUnaryCall<Buffer, Uint8Array>, callback: sendUnaryData<Uint8Array>) => void;

/**
 * A unary handler over raw bytes: authenticate, decode, check the caller's permission,
 * handle, encode; failures become a status.
 */
function guarded<I extends DescMessage, O extends DescMessage>(
  callers: CallerCheck,
  input: I,
  output: O,
  permit: (caller: Caller, request: MessageShape<I>) => void,
  handle: (request: MessageShape<I>) => Promise<MessageInitShape<O>>,
): Handler {
  return (call, callback) => {
    let request: MessageShape<I>;
    try {
      const caller = callerOf(call, callers);
      try {
        request = fromBinary(input, call.request);
      } catch (e) {
        throw invalid(Reason.MALFORMED_MESSAGE, "", `the request is not a ${input.typeName}: ${(e as Error).message}`);
      }
      permit(caller, request);
    } catch (e) {
      callback(serviceError(e));
      return;
    }
    handle(request).then(
      (response) => callback(null, toBinary(output, create(output, response))),
      (e: unknown) => callback(serviceError(e)),
    );
  };
}

/** A uint64 sequence as a number; beyond 2^53 - 1 it cannot name anything stored. */
function sequence(value: bigint, field: string): number {
  if (value > BigInt(Number.MAX_SAFE_INTEGER)) throw invalid(Reason.INVALID_SEQUENCE, field, `${field} is ${value}; sequences stored here are at most 2^53 - 1`);
  return Number(value);
}

function logRange(r: LogRange): MessageInitShape<typeof LogRangeSchema> {
  return {
    events: BigInt(r.events),
    bytes: BigInt(r.bytes),
    oldestSequence: BigInt(r.oldestSequence),
    newestSequence: BigInt(r.newestSequence),
    oldestTime: r.oldestTime === undefined ? undefined : timestampFromMs(r.oldestTime),
    newestTime: r.newestTime === undefined ? undefined : timestampFromMs(r.newestTime),
    expired: BigInt(r.expired),
  };
}
