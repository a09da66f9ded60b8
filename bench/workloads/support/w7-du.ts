import { readdir, stat } from "node:fs/promises";
import { join } from "node:path";

/** Bytes of the files under a directory (recursive). */
export async function du(dir: string): Promise<number> {
  let sum = 0;
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) sum += await du(path);
    else if (entry.isFile()) sum += (await stat(path).catch(() => ({ size: 0 }))).size;
  }
  return sum;
}
