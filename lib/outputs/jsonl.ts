import type { RowSource } from './rows';
import { writeAtomic } from '../files';

/** One JSON object per line, `{"id": ..., "fc7": [...], ...}`, every blob flattened in row-major order. */
export function writeJsonl(file: string, rows: RowSource): void {
  writeAtomic(file, (out) => {
    for (const { id, values } of rows.rowValues()) {
      const fields = Object.entries(values).map(([blob, v]) => `,${JSON.stringify(blob)}:[${Array.from(v, float32Text).join(',')}]`);
      out.write(`{"id":${JSON.stringify(id)}${fields.join('')}}\n`);
    }
  });
}

/**
 * The fewest of 6 to 9 significant digits that read back as the same float32 (JSON.stringify of
 * the widened double would print up to 17 digits of noise); null for NaN and infinities, as JSON
 * has none.
 */
export function float32Text(v: number): string {
  if (!Number.isFinite(v)) return 'null';
  for (let digits = 6; digits < 9; digits++) {
    const shorter = Number(v.toPrecision(digits));
    if (Math.fround(shorter) === v) return String(shorter);
  }
  return String(Number(v.toPrecision(9)));
}
