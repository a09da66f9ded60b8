import { fileURLToPath } from "node:url";
import { defineConfig } from "vitest/config";

/**
 * The tests on hosts in network namespaces (`npm run test:netns`): real sidecars, each in a
 * namespace of its own, on a private LAN made with `ip netns` and veth pairs
 * (test/support/netns.ts). Kept out of `npm test` (see vitest.config.ts) because they need
 * root and iproute2; `.ci/run` runs them as root.
 */
export default defineConfig({
  root: fileURLToPath(new URL("../..", import.meta.url)),
  test: {
    include: ["test/netns/**/*.test.ts"],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: "forks",
    // Two cores: run test files two at a time.
    maxWorkers: 2,
    reporters: ["default", "./test/support/summary-reporter.ts"],
  },
});
