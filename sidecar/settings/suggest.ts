/**
 * The known name closest to `name`, if one is close enough to be a likely misspelling: the
 * same but for case, separators and a trailing "ms", or at most two edits from it.
 */
export function suggest(name: string, known: readonly string[]): string | undefined {
  const normal = (s: string): string => s.toLowerCase().replace(/[-_\s]/g, "").replace(/ms$/, "");
  const exact = known.find((k) => normal(k) === normal(name));
  if (exact) return exact;
  let best: string | undefined;
  let bestDistance = 3;
  for (const k of known) {
    const d = distance(normal(k), normal(name));
    if (d < bestDistance) {
      best = k;
      bestDistance = d;
    }
  }
  return best;
}

/** Levenshtein distance: the fewest insertions, deletions and substitutions that turn `a` into `b`. */
function distance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) {
      row[j] = Math.min(previous[j]! + 1, row[j - 1]! + 1, previous[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    previous = row;
  }
  return previous[b.length]!;
}
