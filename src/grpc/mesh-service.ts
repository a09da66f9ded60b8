import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { type ServerDuplexStream, type UntypedServiceImplementation, status } from "@grpc/grpc-js";
import { Reason, WeftError, exhausted, invalid } from "../contract/errors.js";
import { MAX_DELAY_MS } from "../contract/ranges.js";
import { type Limits, checkEvent } from "../contract/validate.js";
import type { DeliveryEngine } from "../delivery/delivery-engine.js";
import { joinSettings } from "../delivery/join-settings.js";
import { DEFAULTS, type JoinSettings, type Membership, type OutgoingDelivery, defaultDeadLetterChannel } from "../delivery/types.js";
import type { Event } from "../gen/weft/v1/event_pb.js";
import { type SubscribeOpen, SubscribeRequestSchema, SubscribeResponseSchema } from "../gen/weft/v1/mesh_pb.js";
import type { AppendEntry, EventLog } from "../log/event-log.js";
import type { Observer } from "../ops/observer.js";
import type { EventTracing, PublishedEvent } from "../ops/tracing.js";
import { OPEN_ACCESS, type Caller } from "../security/access.js";
import { type CallerCheck, callerOf } from "./caller.js";
import { widenReceiveWindow } from "../wire/receive-window.js";
import { failStream, writeSafe } from "../wire/status.js";
import { type RawPublishResult, readAckRequest, readEvent, readPublishRequest, writeDeliveries, writePublishResponse } from "../wire/messages.js";

type Call = ServerDuplexStream<Buffer, Uint8Array>;

/** Publish batches a stream may have waiting for the log before it stops reading. */
const MAX_OUTSTANDING_BATCHES = 32;
/**
 * Events a stream may have waiting for the log before it stops reading, whichever of the two
 * limits comes first: ~5 append groups of 256 B events, enough to keep the log busy. A batch
 * read sooner only waits in memory, and reading it (parsing, checking every event) takes this
 * loop from the deliveries and forwards that are also its work.
 */
const MAX_OUTSTANDING_EVENTS = 4000;
/** Channels whose publish permission one stream remembers before it starts again. */
const MAX_DECIDED_CHANNELS = 1024;
/** Most ids in one ack, nack or extend. */
const MAX_IDS = 10_000;
/** SubscribeResponse messages stay under this size, which every gRPC client accepts. */
const MAX_DELIVERY_MESSAGE_BYTES = 3 * 1024 * 1024;

export interface MeshServiceDeps {
  log: EventLog;
  engine: DeliveryEngine;
  limits: Limits;
  /** Told what publishers sent. */
  observer?: Observer;
  /** Adds spans to the traces of events published and delivered here. */
  tracing?: EventTracing | undefined;
  /** Who may call, and what they may do. Default: everyone, everything (no policy). */
  callers?: CallerCheck | undefined;
}

/**
 * The handlers of weft.v1.Mesh. Tracks its live streams so that shutdown can end them:
 * publish streams after their last batch is stored, subscribe streams at once (their
 * unacked deliveries stay in the log and are redelivered after restart).
 */
export class MeshService {
  /** Live publish streams: how to wait for their accepted batches, and how to end them. */
  private readonly publishing = new Map<Call, { settled: () => Promise<void>; fail: (e: unknown) => void }>();
  /** Live subscribe streams, and how to end them (the member leaves). */
  private readonly subscribing = new Map<Call, (e: unknown) => void>();
  private stopping = false;

  private readonly callers: CallerCheck;

  constructor(private readonly deps: MeshServiceDeps) {
    this.callers = deps.callers ?? { access: OPEN_ACCESS, socket: false };
  }

  implementation(): UntypedServiceImplementation {
    return {
      Publish: (call: Call) => this.publish(call),
      Subscribe: (call: Call) => this.subscribe(call),
    };
  }

  /** Stops reading every stream, waits for accepted batches to be stored, ends the streams. */
  async drain(): Promise<void> {
    this.stopping = true;
    const closing = new WeftError(status.UNAVAILABLE, Reason.SHUTTING_DOWN, "the sidecar is shutting down; reconnect and resume");
    for (const fail of [...this.subscribing.values()]) fail(closing);
    await Promise.all(
      [...this.publishing].map(async ([call, { settled, fail }]) => {
        call.pause();
        await settled();
        fail(closing);
      }),
    );
  }

  private publish(call: Call): void {
    const { log, limits } = this.deps;
    widenReceiveWindow(call);
    let chain: Promise<void> = Promise.resolve();
    let outstanding = 0;
    let outstandingEvents = 0;
    let failed = false;
    const fail = (e: unknown): void => {
      if (failed) return;
      failed = true;
      this.publishing.delete(call);
      failStream(call, e);
    };
    this.publishing.set(call, { settled: () => chain, fail });
    const caller = this.admit(call, fail);
    if (!caller) return;
    const access = this.callers.access;
    // A stream's caller and the policy are fixed: each channel is checked once per stream,
    // not once per event (a batch is mostly one channel).
    const decided = new Map<string, WeftError | undefined>();
    const mayPublish = (channel: string): void => {
      if (!access.enforced) return;
      if (!decided.has(channel)) {
        let refusal: WeftError | undefined;
        try {
          access.check(caller, "publish", channel);
        } catch (e) {
          if (!(e instanceof WeftError)) throw e;
          refusal = e;
        }
        if (decided.size >= MAX_DECIDED_CHANNELS) decided.clear();
        decided.set(channel, refusal);
      }
      const refusal = decided.get(channel);
      if (refusal) throw refusal;
    };
    call.on("data", (bytes: Buffer) => {
      if (failed || this.stopping) return;
      let batchId: bigint;
      let results: RawPublishResult[];
      let entries: AppendEntry[];
      let slots: number[];
      const valid: PublishedEvent[] = [];
      try {
        const request = readPublishRequest(bytes, limits.maxBatchEvents);
        if (request.tooMany) {
          throw exhausted(
            Reason.BATCH_TOO_LARGE,
            "events",
            `a batch may carry at most ${limits.maxBatchEvents} events; split it`,
          );
        }
        batchId = request.batchId;
        results = new Array(request.events.length);
        entries = [];
        slots = [];
        request.events.forEach((raw, i) => {
          let event: Event;
          try {
            event = readEvent(raw);
          } catch (e) {
            throw invalid(Reason.MALFORMED_MESSAGE, `events[${i}]`, `events[${i}] is not a valid weft.v1.Event (${(e as Error).message})`);
          }
          try {
            checkEvent(event, raw.length, limits);
            mayPublish(event.channel);
          } catch (e) {
            if (!(e instanceof WeftError)) throw e;
            results[i] = { error: { code: e.code, reason: e.reason, field: e.field, message: e.message } };
            return;
          }
          slots.push(i);
          valid.push(event);
          entries.push({ channel: event.channel, source: event.source, id: event.id, key: event.key, bytes: raw });
        });
      } catch (e) {
        fail(e);
        return;
      }
      const events = entries.length;
      if (events > 0) this.observePublished(entries);
      outstanding++;
      outstandingEvents += events;
      if (outstanding >= MAX_OUTSTANDING_BATCHES || outstandingEvents >= MAX_OUTSTANDING_EVENTS) call.pause();
      const traced = events > 0 ? this.deps.tracing?.publishing(valid) : undefined;
      const appended = events > 0 ? log.append(entries, { quota: true }) : Promise.resolve([]);
      appended.catch(() => {}); // handled in order by the chain below; not an unhandled rejection meanwhile
      if (traced) appended.then(traced, (e: unknown) => traced(e instanceof Error ? e : new Error(String(e))));
      chain = chain
        .then(() => appended)
        .then(
          (stored) => {
            stored.forEach((r, j) => {
              results[slots[j]!] = r;
            });
            writeSafe(call, writePublishResponse(batchId, results));
          },
          (e) => {
            if (!(e instanceof WeftError) || e.code !== status.RESOURCE_EXHAUSTED) return fail(e);
            // A limit of the log (its quota, a full disk): each event of the batch is refused
            // and none stored, as for a bad event; the stream goes on, and a later batch may fit.
            const error = { code: e.code, reason: e.reason, field: e.field, message: e.message };
            for (const slot of slots) results[slot] = { error };
            writeSafe(call, writePublishResponse(batchId, results));
          },
        )
        .finally(() => {
          outstanding--;
          outstandingEvents -= events;
          if (outstanding < MAX_OUTSTANDING_BATCHES / 2 && outstandingEvents < MAX_OUTSTANDING_EVENTS / 2 && !failed && !this.stopping) call.resume();
        });
    });
    call.on("end", () => {
      void chain.then(() => {
        this.publishing.delete(call);
        if (!failed) call.end();
      });
    });
    call.on("cancelled", () => this.publishing.delete(call));
    call.on("error", () => this.publishing.delete(call));
  }

  /**
   * Checks that `caller` may subscribe as the group, and what its open may do to the group's
   * stored settings: the latest open's max attempts and dead-letter channel win, but only
   * for a caller with the settings permission; without it, fields the open left unset take
   * the group's, and one it set to something else is refused. A new group is the opener's
   * to set up. A dead-letter channel other than the default is one the group's events will
   * be written to: the caller must be allowed to publish there.
   * @returns the settings to join with, and whether the join may configure an existing group.
   * @throws WeftError PERMISSION_DENIED.
   */
  private permitted(caller: Caller, open: SubscribeOpen, settings: JoinSettings): { settings: JoinSettings; configure: boolean } {
    const access = this.callers.access;
    const { channel, group } = settings;
    access.check(caller, "subscribe", channel, group);
    const configure = access.allows(caller, "settings", channel, group);
    const stored = this.deps.engine.groupSettings(channel, group);
    const kept = { ...settings };
    if (stored && !configure) {
      if (open.maxAttempts === 0) kept.maxAttempts = stored.maxAttempts;
      if (open.deadLetterChannel === "") kept.deadLetterChannel = stored.deadLetterChannel;
      if (kept.maxAttempts !== stored.maxAttempts || kept.deadLetterChannel !== stored.deadLetterChannel) access.check(caller, "settings", channel, group);
    }
    if (open.deadLetterChannel !== "" && kept.deadLetterChannel !== defaultDeadLetterChannel(channel, group)) access.check(caller, "publish", kept.deadLetterChannel);
    return { settings: kept, configure };
  }

  /**
   * The caller of a new stream, or undefined after ending it with `fail`: the sidecar is
   * stopping, or the call shows no identity it takes (UNAUTHENTICATED, with a policy).
   */
  private admit(call: Call, fail: (e: unknown) => void): Caller | undefined {
    if (this.stopping) {
      fail(new WeftError(status.UNAVAILABLE, Reason.SHUTTING_DOWN, "the sidecar is shutting down"));
      return undefined;
    }
    try {
      return callerOf(call, this.callers);
    } catch (e) {
      fail(e);
      return undefined;
    }
  }

  private observePublished(entries: AppendEntry[]): void {
    const observer = this.deps.observer;
    if (!observer) return;
    let channel = entries[0]!.channel;
    let count = 0;
    for (const e of entries) {
      if (e.channel !== channel) {
        observer.published(channel, count);
        channel = e.channel;
        count = 0;
      }
      count++;
    }
    observer.published(channel, count);
  }

  private subscribe(call: Call): void {
    let membership: Membership | undefined;
    let opening = false;
    /** Deliveries made before the `subscribed` response is written (the group may send at once): they follow it. */
    let early: OutgoingDelivery[] | undefined = [];
    let failed = false;
    let ended = false;
    const leave = (returned = false): void => {
      this.subscribing.delete(call);
      membership?.leave(returned);
    };
    const fail = (e: unknown): void => {
      if (failed) return;
      failed = true;
      leave();
      failStream(call, e);
    };
    const caller = this.admit(call, fail);
    if (!caller) return;
    const max = this.deps.limits.maxSubscriptions;
    if (this.subscribing.size >= max) {
      fail(exhausted(Reason.TOO_MANY_SUBSCRIPTIONS, "", `this sidecar already serves ${max} Subscribe streams, its limit; close some or raise maxSubscriptions`));
      return;
    }
    this.subscribing.set(call, fail);
    call.on("data", (bytes: Buffer) => {
      if (failed) return;
      try {
        // Acks, one request per delivery at a low rate, are read without fromBinary.
        const acked = membership && readAckRequest(bytes);
        if (membership && acked) {
          membership.ack(ids(acked, "ack"));
          return;
        }
        let request;
        try {
          request = fromBinary(SubscribeRequestSchema, bytes);
        } catch (e) {
          throw invalid(Reason.MALFORMED_MESSAGE, "SubscribeRequest", `the request is not a valid weft.v1.SubscribeRequest (${(e as Error).message})`);
        }
        const r = request.request;
        if (r.case === "open") {
          if (membership || opening) {
            throw new WeftError(status.FAILED_PRECONDITION, Reason.ALREADY_OPEN, "this stream already has a subscription; open another stream for another one", "open");
          }
          const { settings, configure } = this.permitted(caller, r.value, joinSettings(r.value));
          opening = true;
          call.pause();
          const send = (deliveries: OutgoingDelivery[]): void => {
            this.deps.tracing?.delivering(settings.channel, settings.group, deliveries);
            for (const m of writeDeliveries(deliveries, MAX_DELIVERY_MESSAGE_BYTES)) writeSafe(call, m);
          };
          this.deps.engine
            .join(settings, { send: (deliveries) => (early ? early.push(...deliveries) : send(deliveries)) }, { configure })
            .then(
              (m) => {
                opening = false;
                if (failed || ended || call.cancelled) {
                  m.leave(ended && !failed);
                  return;
                }
                membership = m;
                const j = m.joined;
                writeSafe(
                  call,
                  toBinary(
                    SubscribeResponseSchema,
                    create(SubscribeResponseSchema, {
                      response: {
                        case: "subscribed",
                        value: {
                          channel: settings.channel,
                          group: settings.group,
                          created: j.created,
                          ackedThrough: BigInt(j.ackedThrough),
                          maxInFlight: j.maxInFlight,
                          ackDeadlineMs: j.ackDeadlineMs,
                          maxAttempts: j.maxAttempts,
                          deadLetterChannel: j.deadLetterChannel,
                        },
                      },
                    }),
                  ),
                );
                const held = early!;
                early = undefined;
                if (held.length > 0) send(held);
                call.resume();
              },
              (e) => fail(e),
            );
          return;
        }
        if (r.case === undefined) {
          throw invalid(Reason.MALFORMED_MESSAGE, "request", "the request sets none of open, ack, nack, extend or credit");
        }
        if (!membership) {
          throw new WeftError(status.FAILED_PRECONDITION, Reason.NOT_OPEN, `${r.case} before open: the first request of a Subscribe stream must be open`, r.case);
        }
        switch (r.case) {
          case "ack":
            membership.ack(ids(r.value.deliveryIds, "ack"));
            break;
          case "nack":
            if (r.value.delayMs > MAX_DELAY_MS) {
              throw invalid(Reason.INVALID_SETTING, "nack.delay_ms", `delay_ms is ${r.value.delayMs}; use 0 to ${MAX_DELAY_MS}`);
            }
            membership.nack(ids(r.value.deliveryIds, "nack"), r.value.delayMs);
            break;
          case "extend":
            if (r.value.extensionMs < 1 || r.value.extensionMs > MAX_DELAY_MS) {
              throw invalid(Reason.INVALID_SETTING, "extend.extension_ms", `extension_ms is ${r.value.extensionMs}; use 1 to ${MAX_DELAY_MS}`);
            }
            membership.extend(ids(r.value.deliveryIds, "extend"), r.value.extensionMs);
            break;
          case "credit":
            if (r.value.credits < 1) {
              throw invalid(Reason.INVALID_SETTING, "credit.credits", `credits is 0; use 1 to ${DEFAULTS.maxCredits} (the member's max in flight stays at most ${DEFAULTS.maxCredits})`);
            }
            membership.credit(r.value.credits);
            break;
        }
      } catch (e) {
        fail(e);
      }
    });
    // A client that half-closes hands its unacked deliveries back; a broken stream loses them.
    call.on("end", () => {
      ended = true;
      // A cancel also ends the readable side; it is told apart once grpc-js has flagged it.
      setImmediate(() => {
        leave(!failed && !call.cancelled);
        if (!failed && !call.cancelled) call.end();
      });
    });
    call.on("cancelled", () => leave());
    call.on("error", () => leave());
  }
}

function ids(values: bigint[], what: string): number[] {
  if (values.length > MAX_IDS) {
    throw exhausted(Reason.BATCH_TOO_LARGE, `${what}.delivery_ids`, `at most ${MAX_IDS} delivery ids per ${what}`);
  }
  return values.map((v) => (v > BigInt(Number.MAX_SAFE_INTEGER) ? -1 : Number(v)));
}
