import { BinaryReader, WireType } from "@bufbuild/protobuf/wire";

/** A field of a decoded message: varints as numbers, length-delimited fields as bytes. */
export type WireField = [number, number | Uint8Array];

/**
 * The fields of an encoded message as [field number, value] pairs, in wire order (varints as
 * numbers, length-delimited fields as bytes, other wire types skipped): for tests that read a
 * message with no generated code, as a client of another language would.
 */
export function wireFields(bytes: Uint8Array): WireField[] {
  const r = new BinaryReader(bytes);
  const out: WireField[] = [];
  while (r.pos < r.len) {
    const [no, wt] = r.tag();
    if (wt === WireType.Varint) out.push([no, r.int32()]);
    else if (wt === WireType.LengthDelimited) out.push([no, r.bytes()]);
    else r.skip(wt, no);
  }
  return out;
}
