/**
 * A strict reader of the Prometheus text exposition format (version 0.0.4), for tests: it
 * parses every line and throws, naming the line, at the first one that breaks the format —
 * comment syntax, metric and label names, label value escaping, sample values, a TYPE after
 * its samples, a family split in two, a duplicate series, a histogram's buckets.
 */

export type MetricType = "counter" | "gauge" | "histogram" | "summary" | "untyped";

export interface Sample {
  /** The sample's own name (for a histogram: NAME_bucket, NAME_sum or NAME_count). */
  name: string;
  labels: Record<string, string>;
  value: number;
}

export interface Family {
  name: string;
  type: MetricType;
  help: string | undefined;
  samples: Sample[];
}

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
const TYPES: readonly string[] = ["counter", "gauge", "histogram", "summary", "untyped"];

/** Parses an exposition; throws an Error naming the first bad line. */
export function parseExposition(text: string): Map<string, Family> {
  const families = new Map<string, Family>();
  const seenSeries = new Set<string>();
  const closed = new Set<string>();
  const typed = new Set<string>();
  let current: string | undefined;
  if (text.length > 0 && !text.endsWith("\n")) throw new Error("the exposition does not end with a newline");
  const lines = text.split("\n");
  lines.pop();
  lines.forEach((line, i) => {
    const fail = (problem: string): never => {
      throw new Error(`line ${i + 1}: ${problem}: ${JSON.stringify(line)}`);
    };
    const family = (name: string): Family => {
      let f = families.get(name);
      if (!f) families.set(name, (f = { name, type: "untyped", help: undefined, samples: [] }));
      return f;
    };
    /** Samples of one family must be together: entering another family closes the last. */
    const enter = (name: string): void => {
      if (current === name) return;
      if (closed.has(name)) fail(`${name} appears again after another family`);
      if (current !== undefined) closed.add(current);
      current = name;
    };

    if (line === "") return;
    if (line.startsWith("#")) {
      const m = /^# (HELP|TYPE) (\S+) ?(.*)$/.exec(line);
      if (!m) {
        if (/^#\s*(HELP|TYPE)\b/.test(line)) fail("a malformed HELP or TYPE line");
        return; // any other comment
      }
      const [, kind, name, rest] = m as unknown as [string, string, string, string];
      if (!METRIC_NAME.test(name)) fail(`${JSON.stringify(name)} is not a metric name`);
      enter(name);
      const f = family(name);
      if (kind === "HELP") {
        if (f.help !== undefined) fail(`a second HELP for ${name}`);
        f.help = unescape(rest, false, fail);
      } else {
        if (!TYPES.includes(rest)) fail(`${JSON.stringify(rest)} is not a metric type`);
        if (f.samples.length > 0) fail(`TYPE of ${name} after its samples`);
        if (typed.has(name)) fail(`a second TYPE for ${name}`);
        typed.add(name);
        f.type = rest as MetricType;
      }
      return;
    }

    const sample = parseSample(line, fail);
    const owner = familyOf(sample.name, families);
    enter(owner);
    const f = family(owner);
    if (f.type === "histogram" && !/_(bucket|sum|count)$/.test(sample.name)) fail(`${sample.name} is not a histogram sample name`);
    if (f.type === "histogram" && sample.name.endsWith("_bucket") && sample.labels.le === undefined) fail("a bucket without an le label");
    if (f.type === "counter" && sample.value < 0) fail("a negative counter");
    const series = `${sample.name}${JSON.stringify(Object.entries(sample.labels).sort())}`;
    if (seenSeries.has(series)) fail("a duplicate series");
    seenSeries.add(series);
    f.samples.push(sample);
  });
  for (const f of families.values()) if (f.type === "histogram") checkHistogram(f);
  return families;
}

/** The family a sample belongs to: its own name, or a histogram's or summary's base name. */
function familyOf(name: string, families: Map<string, Family>): string {
  if (families.has(name)) return name;
  const base = name.replace(/_(bucket|sum|count)$/, "");
  const f = families.get(base);
  return f && (f.type === "histogram" || f.type === "summary") ? base : name;
}

function parseSample(line: string, fail: (problem: string) => never): Sample {
  const nameMatch = /^[a-zA-Z_:][a-zA-Z0-9_:]*/.exec(line);
  if (!nameMatch) return fail("a sample line without a metric name");
  const name = nameMatch[0];
  let pos = name.length;
  const labels: Record<string, string> = {};
  if (line[pos] === "{") {
    pos++;
    while (line[pos] !== "}") {
      const labelMatch = /^[^=]*/.exec(line.slice(pos))!;
      const label = labelMatch[0];
      if (!LABEL_NAME.test(label)) fail(`${JSON.stringify(label)} is not a label name`);
      if (label in labels) fail(`the label ${label} twice`);
      pos += label.length;
      if (line[pos] !== "=" || line[pos + 1] !== '"') fail(`label ${label} without ="value"`);
      pos += 2;
      let raw = "";
      for (;;) {
        const c = line[pos];
        if (c === undefined) fail(`the value of label ${label} is not closed`);
        if (c === '"') break;
        if (c === "\\") {
          raw += c + (line[pos + 1] ?? "");
          pos += 2;
        } else {
          raw += c;
          pos++;
        }
      }
      labels[label] = unescape(raw, true, fail);
      pos++; // the closing quote
      if (line[pos] === ",") pos++;
      else if (line[pos] !== "}") fail(`a label pair not followed by "," or "}"`);
    }
    pos++;
  }
  const rest = line.slice(pos);
  const m = /^ (\S+)(?: (-?\d+))?$/.exec(rest);
  if (!m) return fail("a sample without a single space before its value (and optional timestamp)");
  const value = parseValue(m[1]!);
  if (value === undefined) fail(`${JSON.stringify(m[1])} is not a sample value`);
  return { name, labels, value: value! };
}

function parseValue(text: string): number | undefined {
  // As Prometheus reads them (Go's ParseFloat): special values in any case.
  const special = text.toLowerCase();
  if (special === "+inf" || special === "inf") return Infinity;
  if (special === "-inf") return -Infinity;
  if (special === "nan") return NaN;
  if (!/^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(text)) return undefined;
  return Number(text);
}

/** Undoes the escapes of HELP text (\\ and \n) or of a label value (also \"); others are errors. */
function unescape(raw: string, quoted: boolean, fail: (problem: string) => never): string {
  return raw.replace(/\\(.?)/g, (_, c: string) => {
    if (c === "\\") return "\\";
    if (c === "n") return "\n";
    if (c === '"' && quoted) return '"';
    return fail(`an invalid escape \\${c}`);
  });
}

/** Buckets per series rise with le, end at +Inf, and +Inf equals the count. */
function checkHistogram(f: Family): void {
  const bySeries = new Map<string, { buckets: [number, number][]; count?: number }>();
  for (const s of f.samples) {
    const { le, ...rest } = s.labels;
    const key = JSON.stringify(Object.entries(rest).sort());
    let entry = bySeries.get(key);
    if (!entry) bySeries.set(key, (entry = { buckets: [] }));
    if (s.name.endsWith("_bucket")) entry.buckets.push([parseValue(le!)!, s.value]);
    if (s.name.endsWith("_count")) entry.count = s.value;
  }
  for (const [key, { buckets, count }] of bySeries) {
    const where = `histogram ${f.name} ${key}`;
    if (buckets.length === 0 || buckets.at(-1)![0] !== Infinity) throw new Error(`${where}: no +Inf bucket last`);
    for (let i = 1; i < buckets.length; i++) {
      if (!(buckets[i]![0] > buckets[i - 1]![0])) throw new Error(`${where}: le values do not rise`);
      if (buckets[i]![1] < buckets[i - 1]![1]) throw new Error(`${where}: bucket counts are not cumulative`);
    }
    if (buckets.at(-1)![1] !== count) throw new Error(`${where}: the +Inf bucket is not the count`);
  }
}

/**
 * The sum of the samples named `name` whose labels include `labels` (0 when none match: a
 * counter not yet moved has no sample).
 */
export function sampleValue(families: Map<string, Family>, name: string, labels: Record<string, string> = {}): number {
  let sum = 0;
  for (const f of families.values()) {
    for (const s of f.samples) {
      if (s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v)) sum += s.value;
    }
  }
  return sum;
}

/** Fetches and parses `http://ADDRESS/metrics`. */
export async function scrape(httpAddress: string): Promise<Map<string, Family>> {
  const response = await fetch(`http://${httpAddress}/metrics`);
  if (response.status !== 200) throw new Error(`/metrics answered ${response.status}`);
  return parseExposition(await response.text());
}
