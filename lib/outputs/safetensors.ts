import { type RowSource } from './rows';
import { elements } from '../tensor';
import { writeAtomic } from '../files';

/**
 * One F32 tensor [N, ...] per blob, and `__metadata__.ids`, the JSON list of the rows' ids. The
 * header is written first and holds every id, so it is written in two passes over the ids (its
 * length, then its text) rather than built in memory; the data follows, blob after blob.
 */
export function writeSafetensorsRows(file: string, rows: RowSource): void {
  const before = '{"__metadata__":{"ids":"[';
  let offset = 0;
  const entries = rows.blobs.map((blob) => {
    const shape = [rows.rows, ...(rows.shapes?.[blob] ?? [])];
    const bytes = 4 * elements(shape);
    const entry = `,${JSON.stringify(blob)}:${JSON.stringify({ dtype: 'F32', shape, data_offsets: [offset, offset + bytes] })}`;
    offset += bytes;
    return entry;
  });
  const after = `]"}${entries.join('')}}`;

  let length = Buffer.byteLength(before) + Buffer.byteLength(after);
  for (const piece of escapedIds(rows.ids())) length += Buffer.byteLength(piece);
  const padding = (8 - (length % 8)) % 8; // spaces that keep the data 8-byte aligned, as other writers do
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(BigInt(length + padding));

  writeAtomic(file, (out) => {
    out.write(prefix);
    out.write(before);
    for (const piece of escapedIds(rows.ids())) out.write(piece);
    out.write(after + ' '.repeat(padding));
    for (const blob of rows.blobs) {
      for (const piece of rows.blobData(blob)) out.write(piece);
    }
  });
}

/**
 * The text of the JSON list `["a","b",...]` escaped as a JSON string (a metadata value is a
 * string), a piece per id: escaping works code unit by code unit, so whole ids escape apart.
 */
function* escapedIds(ids: Iterable<string>): Generator<string> {
  let first = true;
  for (const id of ids) {
    yield `${first ? '' : ','}${JSON.stringify(JSON.stringify(id)).slice(1, -1)}`;
    first = false;
  }
}
