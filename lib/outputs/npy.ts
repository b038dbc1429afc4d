import type { RowSource } from './rows';
import { writeAtomic } from '../files';

/** NPY format 1.0 (numpy.lib.format): magic, version, then a header padded to this alignment. */
const MAGIC = Buffer.from([0x93, ...Buffer.from('NUMPY'), 1, 0]);
const ALIGN = 64;

/**
 * The header of a C-order little-endian float32 array: the magic string, version 1.0, the header
 * length as a little-endian uint16, then the dict as numpy writes it, padded with spaces and ended
 * by a newline so that the data starts at a multiple of 64 bytes.
 */
export function npyHeader(shape: number[]): Buffer {
  const tuple = shape.length === 1 ? `(${shape[0]},)` : `(${shape.join(', ')})`;
  const dict = `{'descr': '<f4', 'fortran_order': False, 'shape': ${tuple}, }`;
  const unpadded = MAGIC.length + 2 + dict.length + 1;
  const text = `${dict}${' '.repeat((ALIGN - (unpadded % ALIGN)) % ALIGN)}\n`;
  const length = Buffer.alloc(2);
  length.writeUInt16LE(text.length);
  return Buffer.concat([MAGIC, length, Buffer.from(text, 'latin1')]);
}

/**
 * One blob as an [N, ...] array, and `FILE.ids.txt` beside it with the id of each row, one per
 * line. The ids go first, so that an .npy file in place always has its ids.
 */
export function writeNpy(file: string, rows: RowSource): void {
  const [blob] = rows.blobs;
  writeAtomic(`${file}.ids.txt`, (out) => {
    for (const id of rows.ids()) out.write(`${id}\n`);
  });
  writeAtomic(file, (out) => {
    out.write(npyHeader([rows.rows, ...(rows.shapes?.[blob] ?? [])]));
    for (const piece of rows.blobData(blob)) out.write(piece);
  });
}
