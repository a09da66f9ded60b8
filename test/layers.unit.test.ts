import { existsSync, readFileSync, readdirSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";

// Imports point one way: contract → log → delivery → mesh → admin → grpc → sidecar. A reader
// who follows an event down the folder names never meets an import that leads back up, and
// a part can be read, tested and changed knowing only what lies below it.

const ROOT = fileURLToPath(new URL("../", import.meta.url));
const SRC = join(ROOT, "src");

/**
 * Where each entry of src/ stands. A part may import its own files and the parts of a lower
 * rank; parts of one rank do not import each other. A part with `only` imports those parts
 * and no other. The leaves (rank 0) are there for every part above them.
 */
const PARTS: Record<string, { rank: number; only?: readonly string[] }> = {
  // Generated from proto/ by buf.
  gen: { rank: 0, only: [] },
  // Names, limits, ranges, error reasons.
  contract: { rank: 0, only: ["gen"] },
  // What the client and the servers share on the wire: codecs, service definitions, statuses.
  wire: { rank: 0, only: ["gen", "contract"] },
  // Metrics, logs, spans: knows only its own types, and callers pass theirs as they are.
  ops: { rank: 0, only: ["gen"] },
  // TLS files, identities and policy, under the mesh's peer links and the servers; apart from the log.
  security: { rank: 1 },
  log: { rank: 1 },
  delivery: { rank: 2 },
  mesh: { rank: 3 },
  // The operator's views and actions over the log, delivery and the mesh.
  admin: { rank: 4 },
  grpc: { rank: 5 },
  // The HTTP face of admin, beside its gRPC face.
  dashboard: { rank: 5 },
  // Ships alone as the package weft-mesh: no server code.
  client: { rank: 5, only: ["wire", "gen"] },
  // The library's entry: the client and the parts a sidecar is made of.
  "index.ts": { rank: 6 },
};

/** Imports that run against the order, allowed until they go: "FILE -> FILE", paths from the repository's root. */
const EXCEPTIONS = new Set<string>([]);

interface Import {
  /** The importing file, from the repository's root. */
  file: string;
  /** The imported file (.ts for a .js specifier that names a TypeScript file), from the root. */
  target: string;
}

/** Every relative import (static, dynamic, type-only, re-export) of the .ts files under `dirs`. */
function importsUnder(...dirs: string[]): Import[] {
  const found: Import[] = [];
  for (const dir of dirs) {
    for (const name of readdirSync(join(ROOT, dir), { recursive: true }).map(String)) {
      if (!name.endsWith(".ts")) continue;
      const file = join(ROOT, dir, name);
      for (const m of readFileSync(file, "utf8").matchAll(/(?:from|import)\s*\(?\s*["'](\.[^"']+)["']/g)) {
        let target = join(dirname(file), m[1]!);
        if (target.endsWith(".js") && existsSync(target.replace(/\.js$/, ".ts"))) target = target.replace(/\.js$/, ".ts");
        found.push({ file: relative(ROOT, file), target: relative(ROOT, target) });
      }
    }
  }
  return found;
}

/** The entry of src/ that a path belongs to ("mesh", "index.ts"), or the path itself when it is outside src/. */
function partOf(path: string): string {
  return path.startsWith("src/") ? path.split("/")[1]! : path;
}

function allowed(from: string, to: string): boolean {
  if (from === to) return true;
  const part = PARTS[from];
  const target = PARTS[to];
  if (!part || !target) return false;
  return part.only ? part.only.includes(to) : target.rank < part.rank;
}

/** The imports of src/ files that the order does not allow, as "FILE imports FILE", exceptions aside. */
function againstTheOrder(imports: Import[]): string[] {
  return imports
    .filter((i) => !allowed(partOf(i.file), partOf(i.target)) && !EXCEPTIONS.has(`${i.file} -> ${i.target}`))
    .map((i) => `${i.file} imports ${i.target}`);
}

/** The circles of a directed graph: each set of nodes that reach one another, of two nodes or more (Tarjan). */
function circles(edges: Iterable<[string, string]>): string[][] {
  const next = new Map<string, Set<string>>();
  for (const [a, b] of edges) {
    if (!next.has(a)) next.set(a, new Set());
    if (!next.has(b)) next.set(b, new Set());
    next.get(a)!.add(b);
  }
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const found: string[][] = [];
  const visit = (v: string): void => {
    index.set(v, index.size);
    low.set(v, index.get(v)!);
    stack.push(v);
    onStack.add(v);
    for (const w of next.get(v)!) {
      if (!index.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) {
        low.set(v, Math.min(low.get(v)!, index.get(w)!));
      }
    }
    if (low.get(v) !== index.get(v)) return;
    const circle: string[] = [];
    let w: string;
    do {
      w = stack.pop()!;
      onStack.delete(w);
      circle.push(w);
    } while (w !== v);
    if (circle.length > 1) found.push(circle.sort());
  };
  for (const v of next.keys()) if (!index.has(v)) visit(v);
  return found;
}

describe("src/ layers", () => {
  const src = importsUnder("src");

  it("every entry of src/ has a place in the order", () => {
    expect(Object.keys(PARTS).sort()).toEqual(readdirSync(SRC).sort());
  });

  it("reads the imports it judges", () => {
    for (const part of ["client", "wire", "log", "delivery", "mesh", "grpc", "dashboard"]) {
      expect(src.filter((i) => partOf(i.file) === part).length, part).toBeGreaterThan(0);
    }
  });

  it("every import of src/ points down the order", () => {
    expect(againstTheOrder(src)).toEqual([]);
  });

  it("the rule refuses an import that points up", () => {
    const up = (file: string, target: string): string[] => againstTheOrder([{ file, target }]);
    expect(up("src/ops/metrics.ts", "src/delivery/types.ts")).toHaveLength(1);
    expect(up("src/client/client.ts", "src/contract/errors.ts")).toHaveLength(1);
    expect(up("src/log/tail-cache.ts", "src/security/access.ts")).toHaveLength(1);
    expect(up("src/mesh/mesh-node.ts", "src/grpc/mesh-service.ts")).toHaveLength(1);
    expect(up("src/grpc/server.ts", "sidecar/sidecar.ts")).toHaveLength(1);
    expect(up("src/grpc/server.ts", "src/mesh/mesh-node.ts")).toEqual([]);
  });

  it("no circle between the parts of src/", () => {
    const edges = src
      .filter((i) => partOf(i.file) !== partOf(i.target) && !EXCEPTIONS.has(`${i.file} -> ${i.target}`))
      .map((i): [string, string] => [partOf(i.file), partOf(i.target)]);
    expect(circles(edges)).toEqual([]);
  });

  it("no circle between the files of src/ and sidecar/", () => {
    const edges = importsUnder("src", "sidecar").map((i): [string, string] => [i.file, i.target]);
    expect(edges.length).toBeGreaterThan(100);
    expect(circles(edges)).toEqual([]);
  });
});
