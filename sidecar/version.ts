import { readFileSync } from "node:fs";

/**
 * This release's version, from package.json: `weft --version`, the hello sent to peers, the
 * weft_info metric, tracing and the dashboard. The build copies package.json into dist/, so
 * the same relative path holds for the sources and the compiled JavaScript.
 */
export const SOFTWARE_VERSION = (JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")) as { version: string }).version;
