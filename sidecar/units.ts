/**
 * Durations and sizes as people write them in configuration: `"10m"`, `"512KiB"`, or a
 * plain number (milliseconds, bytes).
 */

const DURATION_UNITS: Record<string, number> = {
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000,
};

const SIZE_UNITS: Record<string, number> = {
  b: 1,
  kib: 1024,
  mib: 1024 ** 2,
  gib: 1024 ** 3,
  tib: 1024 ** 4,
  kb: 1000,
  mb: 1000 ** 2,
  gb: 1000 ** 3,
  tb: 1000 ** 4,
};

/** What a duration may look like, for error messages. */
export const DURATION_RULE =
  'a number of milliseconds or a number with a unit ms, s, m, h or d (e.g. 500, "500ms", "30s", "10m", "7d")';

/** What a size may look like, for error messages. */
export const SIZE_RULE =
  'a number of bytes or a number with a unit B, KiB, MiB, GiB, TiB (or KB, MB, GB, TB for powers of 1000) (e.g. 1048576, "512KiB", "1MiB")';

const AMOUNT = /^(\d+(?:\.\d+)?)\s*([a-z]*)$/i;

/**
 * Parses a duration: a non-negative number of ms, or a string such as "30s".
 * @returns whole milliseconds, or undefined when `value` is not a duration.
 */
export function parseDuration(value: unknown): number | undefined {
  return parseAmount(value, DURATION_UNITS, "ms");
}

/**
 * Parses a size: a non-negative number of bytes, or a string such as "512KiB".
 * Units are case-insensitive.
 * @returns whole bytes, or undefined when `value` is not a size.
 */
export function parseSize(value: unknown): number | undefined {
  return parseAmount(value, SIZE_UNITS, "b");
}

function parseAmount(value: unknown, units: Record<string, number>, bare: string): number | undefined {
  let amount: number;
  let unit: string;
  if (typeof value === "number") {
    amount = value;
    unit = bare;
  } else if (typeof value === "string") {
    const m = AMOUNT.exec(value.trim());
    if (!m) return undefined;
    amount = Number(m[1]);
    unit = (m[2] ?? "").toLowerCase() || bare;
  } else {
    return undefined;
  }
  const scale = units[unit];
  if (scale === undefined || !Number.isFinite(amount) || amount < 0) return undefined;
  const result = amount * scale;
  // Fractions are fine ("1.5s") as long as they come out whole ("0.5ms" does not).
  if (!Number.isSafeInteger(Math.round(result)) || Math.abs(result - Math.round(result)) > 1e-6) return undefined;
  return Math.round(result);
}

/** Formats milliseconds the way a person would write them ("10m", "7d", "1500ms"). */
export function formatDuration(ms: number): string {
  for (const unit of ["d", "h", "m", "s"]) {
    const scale = DURATION_UNITS[unit]!;
    if (ms >= scale && ms % scale === 0) return `${ms / scale}${unit}`;
  }
  return `${ms}ms`;
}

/** Formats bytes the way a person would write them ("1MiB", "512KiB", "1000B"). */
export function formatSize(bytes: number): string {
  for (const [unit, scale] of [
    ["TiB", 1024 ** 4],
    ["GiB", 1024 ** 3],
    ["MiB", 1024 ** 2],
    ["KiB", 1024],
  ] as const) {
    if (bytes >= scale && bytes % scale === 0) return `${bytes / scale}${unit}`;
  }
  return `${bytes}B`;
}
