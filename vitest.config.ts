import { configDefaults, defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    // Clients in other languages need their toolchains: `npm run test:e2e` runs those.
    // Hosts in network namespaces need root: `npm run test:netns` runs those.
    // The container image and the systemd unit need root and their tools: `npm run test:deploy`.
    exclude: [...configDefaults.exclude, "test/e2e-lang/**", "test/netns/**", "test/deploy/container/**", "test/deploy/systemd/**"],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: "forks",
    // Two cores: run test files two at a time.
    maxWorkers: 2,
    reporters: ["default", "./test/support/summary-reporter.ts"],
  },
});
