import { isName } from "../contract/validate.js";

/** What a policy grants on channels and groups. */
export type Permission = "publish" | "subscribe" | "settings" | "admin";

export const PERMISSIONS: readonly Permission[] = ["publish", "subscribe", "settings", "admin"];

/**
 * A channel pattern, NATS style: dot-separated segments, where `*` stands for exactly one
 * segment and a last `>` for one or more. `orders.*` matches `orders.created` but not
 * `orders.eu.created`; `orders.>` matches both; `>` matches every channel.
 */
export class NamePattern {
  private readonly segments: string[];

  private constructor(readonly text: string) {
    this.segments = text.split(".");
  }

  /** Reads a pattern; the answer is a sentence saying what is wrong when it is not one. */
  static parse(text: string): NamePattern | string {
    if (typeof text !== "string" || text.length === 0) return "a pattern is dot-separated segments: names, * or a last >";
    if (text.length > 249) return "a pattern is at most 249 characters";
    const segments = text.split(".");
    for (const [i, s] of segments.entries()) {
      if (s === ">" && i === segments.length - 1) continue;
      if (s === ">") return "> stands for the rest of a name and must be the last segment";
      if (s === "*") continue;
      if (!isName(s)) return `segment ${JSON.stringify(s.slice(0, 40))} is not a name, * or >`;
    }
    return new NamePattern(text);
  }

  matches(name: string): boolean {
    const parts = name.split(".");
    for (const [i, s] of this.segments.entries()) {
      if (s === ">") return parts.length > i;
      if (i >= parts.length) return false;
      if (s !== "*" && s !== parts[i]) return false;
    }
    return parts.length === this.segments.length;
  }
}

/** A channel pattern and a group pattern: `CHANNEL/GROUP`, or `CHANNEL` for any group. */
export class GroupPattern {
  private constructor(
    readonly text: string,
    private readonly channel: NamePattern,
    private readonly group: NamePattern,
  ) {}

  static parse(text: string): GroupPattern | string {
    if (typeof text !== "string") return "a pattern is text: CHANNEL-PATTERN/GROUP-PATTERN";
    const slash = text.indexOf("/");
    const channel = NamePattern.parse(slash < 0 ? text : text.slice(0, slash));
    if (typeof channel === "string") return `the channel pattern: ${channel}`;
    const group = NamePattern.parse(slash < 0 ? ">" : text.slice(slash + 1));
    if (typeof group === "string") return `the group pattern: ${group}`;
    return new GroupPattern(text, channel, group);
  }

  matches(channel: string, group: string): boolean {
    return this.channel.matches(channel) && this.group.matches(group);
  }
}

/** What one identity may do. */
export interface Grant {
  /** Channels it may publish to. */
  publish: NamePattern[];
  /** Channel/group pairs it may subscribe as (creating the group if it is new). */
  subscribe: GroupPattern[];
  /** Channel/group pairs whose stored settings (max attempts, dead-letter channel) its opens may change. */
  settings: GroupPattern[];
  /** Channels it may administer: list, redrive and purge dead letters. Listing the sidecar needs any. */
  admin: NamePattern[];
}

/** The identity a policy entry for every authenticated caller is filed under. */
export const ANY_IDENTITY = "*";

/**
 * Who may do what: grants by identity name (the service a client certificate names, a
 * token's name, `local` for the unix socket's user) and `*` for every authenticated caller.
 * A caller has what its own entry and `*` grant together; nothing is granted otherwise.
 */
export class Policy {
  constructor(private readonly grants: ReadonlyMap<string, Grant>) {}

  /** The identities named (for messages and tests). */
  get identities(): string[] {
    return [...this.grants.keys()];
  }

  /** True when `identity` may do `permission` on `channel` (and `group`, for subscribe and settings). */
  allows(identity: string, permission: Permission, channel: string, group = ""): boolean {
    return this.grantsOf(identity).some((g) => {
      if (permission === "publish") return g.publish.some((p) => p.matches(channel));
      if (permission === "admin") return g.admin.some((p) => p.matches(channel));
      return g[permission].some((p) => p.matches(channel, group));
    });
  }

  /** True when `identity` has any admin grant: enough to list the sidecar's channels, groups, peers and stats. */
  administers(identity: string): boolean {
    return this.grantsOf(identity).some((g) => g.admin.length > 0);
  }

  /** The patterns `identity` holds for `permission`, for a refusal's message. */
  describe(identity: string, permission: Permission): string {
    const texts = this.grantsOf(identity).flatMap((g) => g[permission].map((p) => p.text));
    return texts.length === 0 ? `no ${permission} grant` : `${permission}: ${texts.join(", ")}`;
  }

  private grantsOf(identity: string): Grant[] {
    const out: Grant[] = [];
    const own = this.grants.get(identity);
    if (own) out.push(own);
    const any = this.grants.get(ANY_IDENTITY);
    if (any && identity !== ANY_IDENTITY) out.push(any);
    return out;
  }
}
