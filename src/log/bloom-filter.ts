/** Bits per key at capacity: with 7 probes, about 1% of absent keys answer "maybe". */
const BITS_PER_KEY = 10;
const PROBES = 7;
const MIN_BITS = 1 << 20; // 128 KiB
const MAX_BITS = 1 << 27; // 16 MiB: past ~13M keys the filter answers "maybe" more often, never wrongly "no"

/**
 * A Bloom filter of strings: `has` is false only for a key never added; for a key never
 * added it is true for about 1% of keys while no more than `capacity` were added, more
 * after. Sized at construction (10 bits per key, a power of two between 128 KiB and 16 MiB).
 */
export class BloomFilter {
  private readonly bits: Uint32Array;
  private readonly mask: number;
  /** Keys added so far (a key added twice counts twice). */
  added = 0;

  constructor(readonly capacity: number) {
    let size = MIN_BITS;
    while (size < capacity * BITS_PER_KEY && size < MAX_BITS) size *= 2;
    this.bits = new Uint32Array(size / 32);
    this.mask = size - 1;
  }

  /** Bytes of memory the bits take. */
  get bytes(): number {
    return this.bits.byteLength;
  }

  add(key: string): void {
    const h = hash(key);
    const step = fmix(h ^ 0x9e3779b9) | 1; // odd: the probes are distinct positions of a power-of-two table
    for (let i = 0, at = fmix(h); i < PROBES; i++, at = (at + step) | 0) {
      const bit = at & this.mask;
      this.bits[bit >>> 5]! |= 1 << (bit & 31);
    }
    this.added++;
  }

  has(key: string): boolean {
    const h = hash(key);
    const step = fmix(h ^ 0x9e3779b9) | 1;
    for (let i = 0, at = fmix(h); i < PROBES; i++, at = (at + step) | 0) {
      const bit = at & this.mask;
      if ((this.bits[bit >>> 5]! & (1 << (bit & 31))) === 0) return false;
    }
    return true;
  }
}

/** FNV-1a over the string's UTF-16 code units (a key's distinct part is often at its end). */
function hash(key: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < key.length; i++) h = Math.imul(h ^ key.charCodeAt(i), 0x01000193);
  return h;
}

/** MurmurHash3's finalizer: every input bit moves every output bit. */
function fmix(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  return h ^ (h >>> 16);
}
