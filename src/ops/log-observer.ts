import type { Logger } from "./logger.js";
import { NO_OBSERVER, type Observer } from "./observer.js";

/**
 * An observer that logs what happens to events: at `error` a full disk (once, when the first
 * write fails) and at `info` its end, at `warn` what an operator must look at (an
 * event dead-lettered, events retention removed before a group finished them), at `debug`
 * retention of channels, and at `trace` every batch published, stored, forwarded, delivered
 * and every ack. Hooks of levels the logger does not write are no-ops, chosen once here, so
 * that at the default level the path of an event pays nothing for them.
 */
export function logObserver(logger: Logger): Observer {
  const trace = logger.enabled("trace");
  const debug = logger.enabled("debug");
  const warn = logger.enabled("warn");
  if (!logger.enabled("error")) return NO_OBSERVER;
  const disk: Observer = {
    ...NO_OBSERVER,
    diskFull(dataDir, full, detail) {
      if (full) {
        logger.error(
          { dataDir, reason: "DISK_FULL" },
          `the disk of ${dataDir} is full: publishes are refused (DISK_FULL) and /readyz answers 503 until a write works again (tried every second): ${detail}`,
        );
      } else {
        logger.info({ dataDir }, `the disk of ${dataDir} has room again: ${detail}`);
      }
    },
  };
  if (!warn) return disk;
  const o: Observer = {
    ...disk,
    deadLettered(channel, group) {
      logger.warn({ channel, group }, `an event of ${channel} went to the dead letters of ${group} after its last attempt`);
    },
    expired(channel, group, count) {
      if (group !== undefined) logger.warn({ channel, group, count }, `retention removed ${count} event(s) of ${channel} before ${group} finished them`);
      else if (debug) logger.debug({ channel, count }, `retention removed ${count} event(s) of ${channel}`);
    },
  };
  if (!trace) return o;
  return {
    ...o,
    published(channel, count) {
      logger.trace({ channel, count }, `published ${count} event(s) to ${channel}`);
    },
    stored(channel, count, bytes) {
      logger.trace({ channel, count, bytes }, `stored ${count} event(s) in ${channel}`);
    },
    deduplicated(channel) {
      logger.trace({ channel }, `a duplicate publish to ${channel}, acked with its first sequence`);
    },
    forwarded(peer, channel, group, count, bytes) {
      logger.trace({ peer, channel, group, count, bytes }, `forwarded ${count} event(s) of ${channel} to ${peer} for ${group}`);
    },
    delivered(channel, group, deliveries) {
      const redeliveries = deliveries.filter((d) => d.attempt > 1).length;
      logger.trace({ channel, group, count: deliveries.length, redeliveries }, `delivered ${deliveries.length} event(s) of ${channel} to a member of ${group}`);
    },
    acked(channel, group, event) {
      logger.trace({ channel, group, sequence: event.sequence }, `${group} acked ${channel}#${event.sequence}`);
    },
  };
}
