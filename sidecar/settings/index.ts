// The sidecar's settings: one schema (schema.ts) from which the config file's keys, the
// environment variables, the `weft sidecar` flags and the docs' tables are derived, and
// resolveConfig, which merges them into a SidecarConfig.
export { ConfigError, type ConfigSource } from "./config-error.js";
export { MAX_CONFIG_FILE_BYTES } from "./config-file.js";
export { CONFIG_ENV_VARS, type ConfigFlags, type ConfigInput, defaultConfig, resolveConfig } from "./resolve.js";
export { CONFIG_ENV, FILE_ONLY, SETTINGS } from "./schema.js";
export { MAX_PEER_ENTRIES } from "./value-types.js";
