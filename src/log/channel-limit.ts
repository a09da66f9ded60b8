import { status } from "@grpc/grpc-js";
import { Reason, WeftError } from "../contract/errors.js";
import type { Observer } from "../ops/observer.js";

/**
 * The channels the log holds, bounded by maxChannels: every channel with a head, and every
 * channel a group reads (hold). Never shrinks while the log is open: retention keeps a head
 * for an emptied channel, and groups are not removed.
 */
export class ChannelLimit {
  private readonly held = new Set<string>();
  /** New channels of the append group being written, held once it is stored (see settle). */
  private preparing = new Set<string>();

  constructor(
    private readonly max: number,
    private readonly observer: Observer,
  ) {}

  get count(): number {
    return this.held.size;
  }

  /** Holds a channel the log already has (a head or a stored group), whatever the limit. */
  add(channel: string): void {
    this.held.add(channel);
  }

  /**
   * Holds `channels` for groups that read them, counting them against the limit whether or
   * not they have events yet. All of them or none.
   * @throws WeftError TOO_MANY_CHANNELS (RESOURCE_EXHAUSTED) when they would pass the limit.
   */
  hold(channels: readonly string[]): void {
    const fresh = new Set(channels.filter((c) => !this.held.has(c)));
    const counted = [...fresh].filter((c) => !this.preparing.has(c));
    const refusal = counted.length > 0 ? this.refusal(counted.length, counted[0]!) : undefined;
    if (refusal) throw refusal;
    for (const c of fresh) this.held.add(c);
  }

  /** Starts a new append group: none of its channels is counted yet. */
  startGroup(): void {
    this.preparing = new Set();
  }

  /**
   * The refusal of an append whose new channels would pass the limit, counting those of the
   * group being prepared so far; otherwise they count from now on (see startGroup).
   */
  admit(entries: readonly { channel: string }[]): WeftError | undefined {
    let mine: Set<string> | undefined;
    for (const { channel: c } of entries) {
      if (this.held.has(c) || this.preparing.has(c)) continue;
      (mine ??= new Set()).add(c);
    }
    if (!mine) return undefined;
    const refusal = this.refusal(mine.size, [...mine][0]!);
    if (!refusal) for (const c of mine) this.preparing.add(c);
    return refusal;
  }

  /** The append group's write ended: its new channels are held if it was stored. */
  settle(stored: Iterable<string> | undefined): void {
    if (stored) for (const c of stored) this.held.add(c);
    this.preparing = new Set();
  }

  /** The refusal of `fresh` more channels (the first named), or undefined when they fit. */
  private refusal(fresh: number, channel: string): WeftError | undefined {
    let count = this.held.size;
    for (const c of this.preparing) if (!this.held.has(c)) count++;
    if (count + fresh <= this.max) return undefined;
    this.observer.refused(Reason.TOO_MANY_CHANNELS);
    return new WeftError(
      status.RESOURCE_EXHAUSTED,
      Reason.TOO_MANY_CHANNELS,
      `this sidecar holds ${count} channels and its limit (maxChannels) is ${this.max}; ${JSON.stringify(channel.slice(0, 200))} would be a new one: use an existing channel, or raise maxChannels`,
      "channel",
    );
  }
}
