/**
 * Writes one line to stdout. Resolves once the line is handed to the operating system, so
 * a caller may act on "printed" (a subscriber acks after this); rejects when stdout is gone
 * (a closed pipe), so a caller never acts on a line nobody received.
 */
export function writeLine(line: string): Promise<void> {
  return writeText(`${line}\n`);
}

/** Writes text (whole lines) to stdout, resolving and rejecting as `writeLine` does. */
export function writeText(text: string): Promise<void> {
  return new Promise((resolve, reject) => {
    process.stdout.write(text, (error) => (error ? reject(error) : resolve()));
  });
}

/** Writes one diagnostic line to stderr (never to stdout, which carries the data). */
export function note(line: string): void {
  process.stderr.write(`${line}\n`);
}
