import { fileURLToPath } from "node:url";
import { defineConfig } from "vitest/config";

/**
 * The deployment recipes (`npm run test:deploy`): the container image built with buildah and
 * run, and the systemd unit checked with systemd-analyze and run as its ExecStart says.
 * Kept out of `npm test` (see vitest.config.ts) because they need root, buildah and systemd's
 * tools, and take minutes; `.ci/run` installs those and runs them.
 */
export default defineConfig({
  root: fileURLToPath(new URL("../..", import.meta.url)),
  test: {
    include: ["test/deploy/container/**/*.test.ts", "test/deploy/systemd/**/*.test.ts"],
    testTimeout: 120_000,
    hookTimeout: 600_000,
    pool: "forks",
    // One at a time: the image build copies whole file trees (vfs) and wants the disk to itself.
    maxWorkers: 1,
    reporters: ["default", "./test/support/summary-reporter.ts"],
  },
});
