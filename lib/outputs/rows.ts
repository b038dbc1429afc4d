/**
 * The rows of a finished extraction, re-readable, so that a writer can make several passes (a
 * header first, then data) while holding one piece at a time: memory stays flat however many rows.
 */
export interface RowSource {
  /** Blob names, in the order they were asked for. */
  readonly blobs: string[];
  /** Images that have features (failed ones have none). */
  readonly rows: number;
  /** Each blob's shape for one image, without the batch dimension; undefined when there are no rows. */
  readonly shapes: Record<string, number[]> | undefined;
  /** The id of every row, in order. */
  ids(): Iterable<string>;
  /** One blob's data, row after row, as float32 (little-endian) bytes in pieces. */
  blobData(blob: string): Iterable<Uint8Array>;
  /** Row after row with every blob, for line-oriented formats. */
  rowValues(): Iterable<{ id: string; values: Record<string, Float32Array> }>;
}

/** Writes a RowSource to a features file, atomically. */
export type Writer = (file: string, rows: RowSource) => void;
