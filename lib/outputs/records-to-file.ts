import * as fs from 'node:fs';
import type { ExtractRecord } from '../tasks';
import { writeAtomic } from '../files';
import type { FailedImage, Journal } from './journal';
import type { Writer } from './rows';

/**
 * The one path from extracted records to files, shared by `vgg extract` and the job worker:
 * records go into a Journal (whole batches, committed as they come), then the journal's rows
 * go to the features file and its failures to an errors file.
 */
export interface JournalOptions {
  /** Records per batch: the journal takes whole batches, so a resumed run batches as an uninterrupted one. */
  batchSize: number;
  /** Finished batches are committed at least this often; without it, at the end (and past the journal's size bound). */
  commitMs?: number;
  /** Called for every record as it arrives (progress). */
  onRecord?: (record: ExtractRecord) => void;
  /** Awaited after each whole batch is added (a test slows a worker down with it). */
  afterBatch?: () => Promise<void>;
}

/** Adds the records to the journal in whole batches and commits them all; returns how many came. */
export async function journalRecords(records: AsyncIterable<ExtractRecord>, journal: Journal, options: JournalOptions): Promise<number> {
  const { batchSize, commitMs, onRecord, afterBatch } = options;
  let commitError: unknown;
  const timer = commitMs ? setInterval(() => journal.flush().catch((e) => { commitError ??= e; }), commitMs) : undefined;
  let count = 0;
  try {
    let batch: ExtractRecord[] = [];
    for await (const record of records) {
      if (commitError) throw commitError; // a timer cannot throw into this loop; the next record does
      onRecord?.(record);
      count++;
      batch.push(record);
      if (batch.length === batchSize) {
        await journal.add(batch);
        batch = [];
        await afterBatch?.();
      }
    }
    await journal.add(batch);
    await journal.flush();
    return count;
  } finally {
    clearInterval(timer);
  }
}

/**
 * Writes a finished journal out: its failures to `errorsFile` (one JSON line each), then its
 * rows to `file` through `write`, each atomically. With no failures the errors file is removed
 * (a stale one included) unless `keepEmptyErrors`: a job shard's empty list says it is done.
 */
export function writeJournal(journal: Journal, file: string, write: Writer, errorsFile: string, keepEmptyErrors = false): void {
  writeFailures(errorsFile, journal.errors(), keepEmptyErrors);
  write(file, journal);
}

/** Failures as JSON lines, written atomically; returns how many. With none, no file unless `keepEmpty`. */
export function writeFailures(file: string, failures: Iterable<FailedImage>, keepEmpty = false): number {
  let count = 0;
  writeAtomic(file, (out) => {
    for (const failure of failures) {
      out.write(`${JSON.stringify(failure)}\n`);
      count++;
    }
  });
  if (!count && !keepEmpty) fs.rmSync(file, { force: true });
  return count;
}
