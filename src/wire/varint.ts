/**
 * Protobuf varints for the hand-written codecs (messages.ts, peer-frames.ts). Numbers here go beyond 32 bits
 * (sequences, deadlines), so no bitwise operators on them.
 */

/** Bytes of the varint of a non-negative safe integer. */
export function varintSize(n: number): number {
  let size = 1;
  while (n >= 128) {
    n = Math.floor(n / 128);
    size++;
  }
  return size;
}

/** Writes the varint of a non-negative safe integer at `pos`; returns the position after it. */
export function putVarint(buf: Uint8Array, pos: number, n: number): number {
  while (n >= 128) {
    buf[pos++] = (n % 128) | 128;
    n = Math.floor(n / 128);
  }
  buf[pos++] = n;
  return pos;
}

/** Bytes of the varint of a non-negative uint64. */
export function varint64Size(n: bigint): number {
  let size = 1;
  while (n >= 128n) {
    n >>= 7n;
    size++;
  }
  return size;
}

/** Writes the varint of a non-negative uint64; returns the position after it. */
export function putVarint64(buf: Uint8Array, pos: number, n: bigint): number {
  while (n >= 128n) {
    buf[pos++] = Number(n & 127n) | 128;
    n >>= 7n;
  }
  buf[pos++] = Number(n);
  return pos;
}

/** Writes an int64 varint: a negative value is its 64-bit two's complement, 10 bytes. */
export function putInt64(buf: Uint8Array, pos: number, n: number): number {
  if (n >= 0) return putVarint(buf, pos, n);
  return putVarint64(buf, pos, BigInt.asUintN(64, BigInt(n)));
}
