import { type Command, InvalidArgumentError, type Option } from "commander";
import { durationArgument, integerArgument, nameArgument } from "./arguments.js";
import type { AdminOptions } from "./admin-connection.js";
import type { DlqActionOptions, DlqListOptions } from "./dlq.js";
import type { StatsOptions } from "./stats.js";

/** Reusable options of cli.ts: the sidecar address and the answer timeout. */
export interface SharedOptions {
  to: () => Option;
  timeout: () => Option;
}

/**
 * Adds the operator commands, clients of the sidecar's weft.v1.Admin: `weft channels`,
 * `weft groups`, `weft peers`, `weft dlq list|redrive|purge` and `weft stats`. Each prints
 * a table for people, or JSON with --json, and stores its exit status in `exit.code`.
 * Their modules load when they run.
 */
export function addAdminCommands(program: Command, exit: { code: number }, shared: SharedOptions): void {
  const json = "print JSON (one document) instead of a table";

  program
    .command("channels")
    .description("List the sidecar's channels: events, bytes, oldest and newest, and each group's backlog.")
    .addOption(shared.to())
    .option("--json", json)
    .addOption(shared.timeout())
    .addHelpText(
      "after",
      `
Relay copies (events published to other sidecars, forwarded here for a group) are events
of their channel: they count in its events and in their group's backlog (weft groups shows
them apart). Dead-letter channels say whose dead letters they hold.`,
    )
    .action(async (o: AdminOptions) => {
      const { channelsCommand } = await import("./channels.js");
      exit.code = await channelsCommand(o);
    });

  program
    .command("groups")
    .description("List a channel's groups: cursor, backlog, in flight, members, max attempts, dead letters.")
    .argument("<channel>", 'the channel, e.g. "orders.created"', nameArgument)
    .addOption(shared.to())
    .option("--json", json)
    .addOption(shared.timeout())
    .action(async (channel: string, o: AdminOptions) => {
      const { groupsCommand } = await import("./groups.js");
      exit.code = await groupsCommand(channel, o);
    });

  program
    .command("peers")
    .description("List the sidecar's peers: link state, address, version, events in flight to each (lag).")
    .addOption(shared.to())
    .option("--json", json)
    .addOption(shared.timeout())
    .action(async (o: AdminOptions) => {
      const { peersCommand } = await import("./peers.js");
      exit.code = await peersCommand(o);
    });

  const dlq = program
    .command("dlq")
    .description("List, redrive or purge a group's dead letters.")
    .addHelpText(
      "after",
      `
Name the group with its channel (weft dlq list orders.created billing), or name its
dead-letter channel alone (weft dlq list orders.created.dlq.billing) when it holds one
group's dead letters. Dead letters are kept by the sidecar whose members had the attempts:
use --to to ask that one. See docs/admin.md for what redrive and purge do.`,
    );
  const target = (c: Command): Command =>
    c
      .argument("<channel>", "the group's channel, or its dead-letter channel alone", nameArgument)
      .argument("[group]", "the group", nameArgument)
      .addOption(shared.to())
      .option("--json", json)
      .addOption(shared.timeout());

  target(dlq.command("list").description("List a group's pending dead letters (neither redriven nor purged), oldest first."))
    .option("--limit <n>", "the most dead letters listed, 1 to 1000 (default: 100)", integerArgument(1, 1000))
    .option("--after <sequence>", "list those after this dead-letter channel sequence (the next page)", integerArgument(0))
    .action(async (channel: string, group: string | undefined, o: DlqListOptions) => {
      const { dlqListCommand } = await import("./dlq.js");
      exit.code = await dlqListCommand(channel, group, o);
    });

  target(dlq.command("redrive").description("Send dead letters back to the group that dead-lettered them (and to no other group)."))
    .option("--sequence <n>", "only this dead letter (its dead-letter channel sequence); repeatable (default: every pending one)", sequences, undefined)
    .action(async (channel: string, group: string | undefined, o: DlqActionOptions) => {
      const { dlqRedriveCommand } = await import("./dlq.js");
      exit.code = await dlqRedriveCommand(channel, group, o);
    });

  target(dlq.command("purge").description("Drop dead letters: no longer listed, never redriven (the log keeps them until retention)."))
    .option("--sequence <n>", "only this dead letter (its dead-letter channel sequence); repeatable (default: every pending one)", sequences, undefined)
    .action(async (channel: string, group: string | undefined, o: DlqActionOptions) => {
      const { dlqPurgeCommand } = await import("./dlq.js");
      exit.code = await dlqPurgeCommand(channel, group, o);
    });

  program
    .command("stats")
    .description("Show the four rates per second: events published, stored, forwarded to peers, acked by handlers.")
    .addOption(shared.to())
    .option("--watch", "print a line every interval until Ctrl-C")
    .option("--interval <duration>", "time between readings, 100ms to 1h (default: 1s)", durationArgument(100, 3_600_000), 1000)
    .option("--json", "print a JSON document per reading (JSON lines with --watch)")
    .addOption(shared.timeout())
    .addHelpText(
      "after",
      `
Rates come from two readings of the sidecar's counters, one interval apart. The counters
count since the sidecar started.`,
    )
    .action(async (o: StatsOptions) => {
      const { statsCommand } = await import("./stats.js");
      exit.code = await statsCommand(o);
    });
}

/** Collects repeated --sequence values. */
function sequences(value: string, previous: number[] | undefined): number[] {
  const n = /^\d+$/.test(value) ? Number(value) : Number.NaN;
  if (!Number.isSafeInteger(n) || n < 1) throw new InvalidArgumentError("Use a dead-letter channel sequence: a whole number from 1.");
  return [...(previous ?? []), n];
}
