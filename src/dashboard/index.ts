export { type Dashboard, type DashboardOptions, MAX_BODY_BYTES, serveDashboard } from "./dashboard-routes.js";
export { type ChannelRow, DEAD_LETTERS_SHOWN, type DeadLetterGroup, type GroupRow, type Overview, buildOverview, groupCountsFromMetrics } from "./overview.js";
export { type GroupCounts, type GroupRates, RateHistory, type RateSample, drainSeconds } from "./rate-history.js";
