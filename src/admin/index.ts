export { DEAD_LETTER_LIMITS, DeadLetters, type DeadLetter, type DeadLetterPage, type Redriven } from "./dead-letters.js";
export { EventCounters, type EventCounts } from "./event-counters.js";
export { SidecarAdmin, type ChannelView, type GroupView, type LogRange, type PeerView, type SidecarAdminDeps, type StatsView } from "./sidecar-admin.js";
