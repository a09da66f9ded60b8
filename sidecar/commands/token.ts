import { randomBytes } from "node:crypto";
import { isNodeId } from "../../src/contract/validate.js";
import { tokenHash } from "../../src/security/access.js";
import { usage } from "./arguments.js";
import { note, writeLine } from "./output.js";

/**
 * `weft token NAME`: a new random bearer token (256 bits, base64url) on stdout, and the
 * config line with its SHA-256 on stderr.
 * @returns the exit status.
 */
export async function tokenCommand(name: string): Promise<number> {
  if (!isNodeId(name)) throw usage(`${JSON.stringify(name.slice(0, 80))} is not an identity name: 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit`);
  const token = randomBytes(32).toString("base64url");
  await writeLine(token);
  note(`the config file's tokens section (the sidecar stores only the hash):\ntokens:\n  ${name}: "${tokenHash(token)}"`);
  return 0;
}
