import type { AdminClient } from "../../src/client/index.js";
import type { DeadLetter } from "../../src/gen/weft/v1/admin_pb.js";
import { type AdminOptions, jsonNumber, jsonTime, timestampMs, withAdmin } from "./admin-connection.js";
import { usage } from "./arguments.js";
import { note, writeLine } from "./output.js";
import { formatTable, humanTime } from "./table.js";

/** The options of `weft dlq list`. */
export interface DlqListOptions extends AdminOptions {
  limit?: number;
  after?: number;
}

/** The options of `weft dlq redrive` and `weft dlq purge`. */
export interface DlqActionOptions extends AdminOptions {
  /** Dead-letter channel sequences; none means every pending dead letter. */
  sequence?: number[];
}

/**
 * `weft dlq list CHANNEL GROUP` (or `weft dlq list DEAD_LETTER_CHANNEL`): a page of the
 * group's pending dead letters, oldest first. A table, or one JSON document with --json.
 * @returns the exit status.
 */
export async function dlqListCommand(first: string, second: string | undefined, o: DlqListOptions): Promise<number> {
  const { target, page } = await withAdmin(o, async (admin) => {
    const target = await resolveGroup(admin, first, second);
    return { target, page: await admin.listDeadLetters({ ...target, limit: o.limit ?? 0, afterSequence: BigInt(o.after ?? 0) }) };
  });
  if (o.json) {
    await writeLine(
      JSON.stringify({
        channel: target.channel,
        group: target.group,
        deadLetterChannel: page.deadLetterChannel,
        deadLetters: page.deadLetters.map(deadLetterJson),
        nextAfter: jsonNumber(page.nextAfterSequence),
      }),
    );
    return 0;
  }
  if (page.deadLetters.length === 0) {
    await writeLine(`no dead letters of ${target.channel}/${target.group} in ${page.deadLetterChannel}${o.after ? ` after #${o.after}` : ""}`);
  } else {
    const rows = page.deadLetters.map((d) => {
      const a = d.event?.attributes ?? {};
      const origin = a["weft.dead_letter.origin"];
      return [
        String(d.sequence),
        humanTime(timestampMs(d.time)),
        a["weft.dead_letter.attempts"] ?? "-",
        `${a["weft.dead_letter.channel"] ?? "?"}#${a["weft.dead_letter.sequence"] ?? "?"}${origin ? ` @${origin}` : ""}`,
        d.event?.id ?? "",
        d.event?.key || "-",
        a["weft.dead_letter.detail"] ?? a["weft.dead_letter.reason"] ?? "",
      ];
    });
    const lines = formatTable(
      [{ header: "SEQ", right: true }, { header: "DEAD-LETTERED" }, { header: "ATTEMPTS", right: true }, { header: "ORIGINAL" }, { header: "ID" }, { header: "KEY" }, { header: "WHY" }],
      rows,
    );
    for (const line of lines) await writeLine(line);
  }
  if (page.nextAfterSequence > 0n) note(`weft dlq list: there may be more: add --after ${page.nextAfterSequence}`);
  return 0;
}

/**
 * `weft dlq redrive CHANNEL GROUP`: sends the group's pending dead letters (or those named
 * with --sequence) back to that group only, as new events of the channel.
 * @returns the exit status.
 */
export async function dlqRedriveCommand(first: string, second: string | undefined, o: DlqActionOptions): Promise<number> {
  const named = (o.sequence ?? []).map(BigInt);
  const { target, redriven } = await withAdmin(o, async (admin) => {
    const target = await resolveGroup(admin, first, second);
    const redriven = [];
    for (;;) {
      const r = await admin.redrive({ ...target, sequences: named });
      redriven.push(...r.redriven);
      if (!r.more || r.redriven.length === 0) break;
    }
    return { target, redriven };
  });
  if (o.json) {
    await writeLine(
      JSON.stringify({
        channel: target.channel,
        group: target.group,
        redriven: redriven.map((r) => ({ deadLetterSequence: jsonNumber(r.deadLetterSequence), sequence: jsonNumber(r.sequence), duplicate: r.duplicate })),
      }),
    );
    return 0;
  }
  for (const r of redriven) {
    await writeLine(`dead letter #${r.deadLetterSequence} -> ${target.channel} #${r.sequence}${r.duplicate ? " (already redriven: stored once)" : ""}`);
  }
  await writeLine(`redrove ${plural(redriven.length, "dead letter")} to ${target.channel}/${target.group}`);
  return 0;
}

/**
 * `weft dlq purge CHANNEL GROUP`: marks the group's pending dead letters (or those named
 * with --sequence) purged: no longer listed, never redriven.
 * @returns the exit status.
 */
export async function dlqPurgeCommand(first: string, second: string | undefined, o: DlqActionOptions): Promise<number> {
  const { target, purged } = await withAdmin(o, async (admin) => {
    const target = await resolveGroup(admin, first, second);
    const r = await admin.purge({ ...target, sequences: (o.sequence ?? []).map(BigInt) });
    return { target, purged: r.purged };
  });
  if (o.json) {
    await writeLine(JSON.stringify({ channel: target.channel, group: target.group, purged: jsonNumber(purged) }));
    return 0;
  }
  await writeLine(`purged ${plural(Number(purged), "dead letter")} of ${target.channel}/${target.group}`);
  return 0;
}

/**
 * The group meant: CHANNEL GROUP as given, or, with one name, the one group whose
 * dead-letter channel it is at this sidecar.
 */
async function resolveGroup(admin: AdminClient, first: string, second: string | undefined): Promise<{ channel: string; group: string }> {
  if (second !== undefined) return { channel: first, group: second };
  const { channels } = await admin.listChannels();
  const of = channels.find((c) => c.channel === first)?.deadLettersOf ?? [];
  if (of.length === 1) return { channel: of[0]!.channel, group: of[0]!.group };
  if (of.length === 0) throw usage(`${first} is not a dead-letter channel at this sidecar: name the group's channel and the group (weft dlq ... CHANNEL GROUP)`);
  throw usage(`${first} holds the dead letters of ${of.map((g) => `${g.channel}/${g.group}`).join(", ")}: name one (weft dlq ... CHANNEL GROUP)`);
}

function deadLetterJson(d: DeadLetter): Record<string, unknown> {
  const e = d.event;
  const out: Record<string, unknown> = {
    sequence: jsonNumber(d.sequence),
    time: jsonTime(d.time),
    id: e?.id ?? "",
    source: e?.source ?? "",
    type: e?.type ?? "",
    subject: e?.subject ?? "",
    key: e?.key ?? "",
    datacontenttype: e?.datacontenttype ?? "",
    attributes: { ...(e?.attributes ?? {}) },
  };
  const data = e?.data ?? new Uint8Array();
  const text = utf8(data);
  if (text === undefined) out.dataBase64 = Buffer.from(data).toString("base64");
  else out.data = text;
  return out;
}

const decoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

function utf8(bytes: Uint8Array): string | undefined {
  try {
    return decoder.decode(bytes);
  } catch {
    return undefined;
  }
}

function plural(n: number, what: string): string {
  return `${n} ${what}${n === 1 ? "" : "s"}`;
}
