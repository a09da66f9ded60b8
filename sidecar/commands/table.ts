/**
 * Plain-text tables for people: one header row, columns padded with two spaces between
 * them, numbers aligned right. Scripts use --json instead.
 */

/** A column: its header, and whether its cells align right (numbers). */
export interface Column {
  header: string;
  right?: boolean;
}

/** Formats `rows` under `columns` as lines (no trailing spaces). */
export function formatTable(columns: readonly Column[], rows: readonly (readonly string[])[]): string[] {
  const widths = columns.map((c, i) => Math.max(c.header.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: readonly string[]): string =>
    columns
      .map((c, i) => {
        const cell = cells[i] ?? "";
        return c.right ? cell.padStart(widths[i]!) : cell.padEnd(widths[i]!);
      })
      .join("  ")
      .trimEnd();
  return [line(columns.map((c) => c.header)), ...rows.map(line)];
}

/** A byte count for people: "512B", "1.5KiB", "12.0MiB". */
export function humanBytes(bytes: number): string {
  if (bytes < 1024) return `${bytes}B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let value = bytes / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${value.toFixed(1)}${units[unit]}`;
}

/** A time for people: ISO 8601 in UTC, to the second ("2026-01-31T12:00:00Z"); "-" for none. */
export function humanTime(ms: number | undefined): string {
  if (ms === undefined) return "-";
  return `${new Date(ms).toISOString().slice(0, 19)}Z`;
}
