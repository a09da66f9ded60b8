/** FNV-1a, 32 bits: a stable, fast hash for key affinity and derived names. */
export function fnv1a(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/**
 * FNV-1a with murmur3's final mix, for choosing among n members. FNV-1a alone is poor
 * modulo small n: its lowest bit is the parity of the input's bytes, so keys an origin
 * hashed to one of two sidecars would all hash to one of two members there again.
 */
export function spreadHash(text: string): number {
  let h = fnv1a(text);
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}
