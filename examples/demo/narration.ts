/** Marks at the start of a line: what happened, where. */
export const PUBLISHED = "▸";
export const RECEIVED = "◂";
export const LINK = "═";
export const PROCESS = "●";
export const SIDECAR_SAYS = "│";

/** Width of the node column: the longest node id of the demo ("north"). */
const NODE_WIDTH = 5;

/** Prints one line about one node: `west  ◂ billing        got #17 (customer c3), acked`. */
export function say(node: string, mark: string, text: string): void {
  console.log(`${node.padEnd(NODE_WIDTH)} ${mark} ${text}`);
}

/** Prints a line of the demo itself (not about one node). */
export function note(text: string): void {
  console.log(text);
}
