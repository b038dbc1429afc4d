import * as path from 'node:path';
import { VggError } from '../errors';
import { writeJsonl } from './jsonl';
import { writeNpy } from './npy';
import type { Writer } from './rows';
import { writeSafetensorsRows } from './safetensors';


const WRITERS: Record<string, Writer> = { '.safetensors': writeSafetensorsRows, '.npy': writeNpy, '.jsonl': writeJsonl };

/** The writer for an output file name, or E_ARG before any work is done when the name or the blobs cannot be written. */
export function writerFor(file: string, blobs: string[]): Writer {
  const ext = path.extname(file).toLowerCase();
  const writer = WRITERS[ext];
  if (!writer) throw new VggError('E_ARG', `cannot write ${file}: expected an output name ending in ${Object.keys(WRITERS).join(', ')}`);
  if (ext === '.npy' && blobs.length !== 1) {
    throw new VggError('E_ARG', `cannot write ${blobs.join(', ')} to ${file}: a .npy file holds one blob; use .safetensors for several`);
  }
  return writer;
}
export { Journal, type FailedImage } from './journal';
export { journalRecords, writeFailures, writeJournal, type JournalOptions } from './records-to-file';
export type { RowSource, Writer } from './rows';
export { writeSafetensorsRows } from './safetensors';
