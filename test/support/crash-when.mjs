// Preloaded into a `weft` process by tests (node --import THIS weft.js ...): once the file
// named by CRASH_WHEN_FILE exists, throws an error that nothing in the process catches, as
// a sidecar that dies would. Plain JavaScript: it loads before weft.js registers tsx.
import { existsSync } from "node:fs";

const file = process.env.CRASH_WHEN_FILE;
if (file) {
  const poll = setInterval(() => {
    if (!existsSync(file)) return;
    clearInterval(poll);
    throw new Error(`simulated failure (${file} exists)`);
  }, 50);
  poll.unref();
}
