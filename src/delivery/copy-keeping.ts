import type { StoredEvent } from "../log/record.js";
import type { GroupCursor } from "./group-cursor.js";
import type { GroupBatch } from "./group-state.js";

/**
 * Whether a group keeps the relay copies held for it here. It stops keeping them when this
 * sidecar withdraws the group (no local member here, and the mesh no longer keeps its
 * copies): their origins take them back, so delivering one here would only duplicate it,
 * and waiting would hold the group's cursor, and this sidecar's own events behind it, until
 * a member came back. The copies held until then are given up, and the group's copy epoch
 * moves on: it is part of a copy's dedup identity (see relayIdentity), so a later forward
 * of the same event is stored as a new copy, never found done.
 */
export class CopyKeeping {
  constructor(
    private readonly cursor: GroupCursor,
    /** True while the group has a local member. */
    private readonly hasLocal: () => boolean,
    /** True while the mesh keeps the group's copies (OriginRoute.keeps). */
    private readonly meshKeeps: () => boolean,
    /** Tells a copy's origin the attempts it had here when it was given up (OriginRoute.returned). */
    private readonly returned?: (event: StoredEvent, attempts: number) => void,
  ) {}

  /** True while the group keeps its copies. */
  get keeping(): boolean {
    return this.hasLocal() || this.meshKeeps();
  }

  /** True for a copy the group no longer keeps: one of an earlier copy epoch, or any while it keeps none. */
  stale(event: StoredEvent): boolean {
    return (event.copyEpoch ?? 0) < this.cursor.copyEpoch || !this.keeping;
  }

  /**
   * A copy was given up with `attempts` in all: one of the current epoch moves the epoch on.
   * Its origin took it back; it is told the attempts only if members here had it.
   */
  givenUp(event: StoredEvent, batch: GroupBatch, attempts = 0): void {
    if ((event.copyEpoch ?? 0) >= this.cursor.copyEpoch) this.cursor.nextEpoch(batch);
    this.tell(event, attempts);
  }

  /** Tells a copy's origin its `attempts`, if members here made any of them. */
  tell(event: StoredEvent, attempts: number): void {
    if (attempts > (event.priorAttempts ?? 0)) this.returned?.(event, attempts);
  }
}
