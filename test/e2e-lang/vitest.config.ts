import { fileURLToPath } from "node:url";
import { defineConfig } from "vitest/config";

/**
 * The language end-to-end tests (`npm run test:e2e`): real sidecars driven by clients in
 * other languages, and the dashboard in a real browser. Kept out of `npm test` (see
 * vitest.config.ts) because they need Python with grpcio, protobuf and grpc_tools, and
 * Debian's chromium; `.ci/run` installs those and runs this suite.
 */
export default defineConfig({
  root: fileURLToPath(new URL("../..", import.meta.url)),
  test: {
    include: ["test/e2e-lang/**/*.test.ts"],
    // Generates the Python stubs once for the run (when Python can).
    globalSetup: ["test/e2e-lang/support/global-setup.ts"],
    testTimeout: 120_000,
    hookTimeout: 120_000,
    pool: "forks",
    // Two cores: run test files two at a time.
    maxWorkers: 2,
    reporters: ["default", "./test/support/summary-reporter.ts"],
  },
});
