import * as fs from 'node:fs';
import * as path from 'node:path';
import { VggError } from '../errors';
import type { ExtractRecord } from '../tasks/extract';
import { type RowSource } from './rows';
import { elements } from '../tensor';
import { ioError, writeAtomic, writeAtomicAsync, writeDurablyAsync } from '../files';

/** Pending batches are committed at once past this size, whatever the time since the last commit. */
const FLUSH_BYTES = 64 << 20;
const JOB = 'job.json';

/** A chunk's `<first>.json`, written after its data. */
interface ChunkIndex {
  /** Position of its first image in the whole input. */
  first: number;
  /** Every image of the chunk, in input order, failed ones too. */
  ids: string[];
  /** The failed images, by position in `ids`. */
  errors: { at: number; code: string; message: string }[];
  /** Each blob's shape for one image; absent while the journal has no rows. */
  shapes?: Record<string, number[]>;
}

interface Chunk { name: string; items: number; rows: number }

export interface FailedImage { id: string; code: string; message: string }

/**
 * The progress of an extraction, kept in a folder (`FILE.partial/`) so that a killed or
 * interrupted run can resume: `job.json` holds the options that must match to resume; then come
 * chunks of whole batches, each `<first>.<blob>.f32` (its rows of that blob, raw float32) and
 * `<first>.json` (ids, failures, shapes; see ChunkIndex). The .json is written last, atomically:
 * a chunk exists if and only if its .json does, so whenever the process dies the journal is valid
 * and only the batches not yet committed are lost. Because chunks hold whole batches, a resumed
 * run's batches are the same as an uninterrupted run's, and so are its numbers.
 *
 * Once complete, the journal is the RowSource that the output writers read.
 */
export class Journal implements RowSource {
  readonly dir: string;
  readonly blobs: string[];
  shapes: Record<string, number[]> | undefined;
  /** Images committed, failed ones included, and of those, the ones with rows and the failed. */
  items = 0;
  rows = 0;
  failed = 0;
  #chunks: Chunk[] = [];
  #pending: ExtractRecord[] = [];
  #pendingBytes = 0;
  /** The commit in progress, which the next one waits for; a failed one fails those after it. */
  #flushing: Promise<void> = Promise.resolve();

  private constructor(dir: string, blobs: string[]) {
    this.dir = dir;
    this.blobs = blobs;
  }

  /**
   * Starts a journal in `dir` for `job` (the options a resumed run must share), or with `resume`
   * continues the one there. Without `resume`, a journal there that holds work is an error rather
   * than deleted: it may be hours of work.
   */
  static open(dir: string, blobs: string[], job: Record<string, unknown>, resume: boolean): Journal {
    const journal = new Journal(dir, blobs);
    const before = readJob(path.join(dir, JOB));
    if (before && resume) {
      const changed = Object.keys({ ...before, ...job }).filter((k) => JSON.stringify(before[k]) !== JSON.stringify(job[k]));
      if (changed.length) {
        const what = changed.map((k) => `${k} ${JSON.stringify(before[k])} then, ${JSON.stringify(job[k])} now`).join('; ');
        throw new VggError('E_ARG', `--resume: ${dir} is a run with other options (${what}); run with those, or delete the folder to start over`);
      }
      journal.#load();
      return journal;
    }
    if (before && fs.readdirSync(dir).some(isIndex)) {
      throw new VggError('E_ARG', `${dir} holds an interrupted run: add --resume to finish it, or delete the folder to start over`);
    }
    try {
      fs.mkdirSync(dir, { recursive: true });
    } catch (e) {
      throw ioError(e, `cannot create ${dir}`);
    }
    journal.#clean();
    writeAtomic(path.join(dir, JOB), (out) => out.write(JSON.stringify(job)));
    return journal;
  }

  /**
   * Adds whole batches (a resumed run starts at a batch boundary); they are committed by flush(),
   * or at once past FLUSH_BYTES. A row whose shape differs from the first row's is E_SHAPE here,
   * early, as the output files hold one shape per blob.
   */
  async add(records: ExtractRecord[]): Promise<void> {
    for (const { id, outputs } of records) {
      if (!outputs) continue;
      const shapes = Object.fromEntries(this.blobs.map((b) => [b, outputs[b].shape.slice(1)]));
      this.shapes ??= shapes;
      for (const b of this.blobs) {
        if (JSON.stringify(shapes[b]) !== JSON.stringify(this.shapes[b])) {
          throw new VggError('E_SHAPE', `${id}: ${b} is [${shapes[b]}] but earlier images gave [${this.shapes[b]}]; an output file holds one shape per blob, so make the images one size (--crop)`);
        }
        this.#pendingBytes += outputs[b].data.byteLength;
      }
    }
    this.#pending.push(...records);
    if (this.#pendingBytes >= FLUSH_BYTES) await this.flush();
  }

  /**
   * Commits the pending batches as one chunk: its data files, then its index, written off the
   * event loop. Commits run one at a time, in order (a timer and the extraction loop both call this).
   */
  flush(): Promise<void> {
    const records = this.#pending;
    this.#pending = [];
    this.#pendingBytes = 0;
    this.#flushing = this.#flushing.then(() => this.#commit(records));
    return this.#flushing;
  }

  async #commit(records: ExtractRecord[]): Promise<void> {
    if (!records.length) return;
    const name = String(this.items).padStart(12, '0');
    const index: ChunkIndex = { first: this.items, ids: [], errors: [], shapes: this.shapes };
    records.forEach(({ id, error }, at) => {
      index.ids.push(id);
      if (error) index.errors.push({ at, code: error.code, message: error.message });
    });
    for (const blob of this.blobs) {
      await writeDurablyAsync(this.#dataFile(name, blob), records.flatMap(({ outputs }) => (outputs ? [bytes(outputs[blob].data)] : [])));
    }
    await writeAtomicAsync(this.#indexFile(name), [Buffer.from(JSON.stringify(index))]);
    this.#committed({ name, items: records.length, rows: records.length - index.errors.length });
  }

  *ids(): Generator<string> {
    for (const { ids } of this.rowFiles(this.blobs[0])) yield* ids;
  }

  /**
   * Each committed chunk that has rows: its data file of `blob` and the ids of its rows, in input
   * order. What reads rows at random (training's batches) needs: row i of the file is at 4 * i * size.
   */
  *rowFiles(blob: string): Generator<{ file: string; ids: string[] }> {
    for (const chunk of this.#chunks) {
      if (!chunk.rows) continue;
      const { ids, errors } = this.#index(chunk);
      const failed = new Set(errors.map((e) => e.at));
      yield { file: this.#dataFile(chunk.name, blob), ids: ids.filter((_, at) => !failed.has(at)) };
    }
  }

  /** Every committed image's id, failed ones too, in input order: what a resumed input must start with. */
  *itemIds(): Generator<string> {
    for (const chunk of this.#chunks) yield* this.#index(chunk).ids;
  }

  *errors(): Generator<FailedImage> {
    for (const chunk of this.#chunks) {
      const { ids, errors } = this.#index(chunk);
      for (const { at, code, message } of errors) yield { id: ids[at], code, message };
    }
  }

  *blobData(blob: string): Generator<Uint8Array> {
    for (const chunk of this.#chunks) {
      if (chunk.rows) yield this.#read(this.#dataFile(chunk.name, blob));
    }
  }

  *rowValues(): Generator<{ id: string; values: Record<string, Float32Array> }> {
    for (const chunk of this.#chunks) {
      if (!chunk.rows) continue;
      const { ids, errors, shapes } = this.#index(chunk);
      const data = this.blobs.map((b) => floats(this.#read(this.#dataFile(chunk.name, b))));
      const sizes = this.blobs.map((b) => elements(shapes![b]));
      const failed = new Set(errors.map((e) => e.at));
      let row = 0;
      for (const [at, id] of ids.entries()) {
        if (failed.has(at)) continue;
        const values = Object.fromEntries(this.blobs.map((b, i) => [b, data[i].subarray(row * sizes[i], (row + 1) * sizes[i])]));
        yield { id, values };
        row++;
      }
    }
  }

  /** Deletes the folder: the job is done and its outputs are in place. */
  remove(): void {
    fs.rmSync(this.dir, { recursive: true, force: true });
  }

  #indexFile(chunk: string): string {
    return path.join(this.dir, `${chunk}.json`);
  }

  #dataFile(chunk: string, blob: string): string {
    return path.join(this.dir, `${chunk}.${blob}.f32`);
  }

  #committed(chunk: Chunk): void {
    this.#chunks.push(chunk);
    this.items += chunk.items;
    this.rows += chunk.rows;
    this.failed += chunk.items - chunk.rows;
  }

  #index(chunk: Chunk): ChunkIndex {
    return readIndex(this.#indexFile(chunk.name));
  }

  #read(file: string): Buffer {
    try {
      return fs.readFileSync(file);
    } catch (e) {
      throw ioError(e, `cannot read the journal's ${file}`);
    }
  }

  /**
   * Takes the chunks of an earlier run, in order, up to the first one that is not whole (its data
   * cut short, say, by a full disk): that one and any after it are redone. Anything else in the
   * folder, such as the data of a chunk whose index was never written, is deleted.
   */
  #load(): void {
    const indexes = fs.readdirSync(this.dir).filter(isIndex).sort();
    for (const file of indexes) {
      const name = file.slice(0, -'.json'.length);
      const { first, ids, errors, shapes } = readIndex(this.#indexFile(name));
      const rows = ids.length - errors.length;
      const dataBytes = (blob: string) => (rows ? 4 * rows * elements(shapes![blob]) : 0);
      const whole = first === this.items && (rows === 0 || this.blobs.every((b) => shapes?.[b] !== undefined))
        && this.blobs.every((b) => fileSize(this.#dataFile(name, b)) === dataBytes(b));
      if (!whole) break;
      this.shapes ??= shapes;
      this.#committed({ name, items: ids.length, rows });
    }
    this.#clean();
  }

  /** Deletes every file that is not job.json or part of a committed chunk. */
  #clean(): void {
    const keep = new Set([JOB, ...this.#chunks.flatMap((c) => [`${c.name}.json`, ...this.blobs.map((b) => `${c.name}.${b}.f32`)])]);
    for (const file of fs.readdirSync(this.dir)) {
      if (!keep.has(file)) fs.rmSync(path.join(this.dir, file), { force: true });
    }
  }
}

const isIndex = (file: string) => /^\d{12}\.json$/.test(file);

/** A journal file's JSON, or undefined if there is no such file; bad JSON is damaged(). */
function readJson(file: string): unknown {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw ioError(e, `cannot read ${file}`);
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw damaged(file, `not valid JSON: ${(e as Error).message}`, e);
  }
}

/**
 * A journal file that cannot be used (truncated, edited, from another program): E_IO naming it,
 * and its folder. Nothing is deleted here: the folder may hold hours of work, and a person can
 * decide (a chunk's index can be fixed or deleted, which redoes that chunk and those after it).
 */
function damaged(file: string, why: string, cause?: unknown): VggError {
  return new VggError('E_IO', `${file} is damaged (${why}): fix it, or delete ${path.dirname(file)} to start over`, { cause });
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** The job.json, or undefined if there is none. */
function readJob(file: string): Record<string, unknown> | undefined {
  const job = readJson(file);
  if (job !== undefined && !isObject(job)) throw damaged(file, 'not a JSON object');
  return job;
}

/** A chunk's index, checked for the fields the journal reads. */
function readIndex(file: string): ChunkIndex {
  const index = readJson(file);
  if (index === undefined) throw damaged(file, 'missing');
  const ok = isObject(index) && Number.isSafeInteger(index.first) && (index.first as number) >= 0
    && Array.isArray(index.ids) && index.ids.every((id) => typeof id === 'string')
    && Array.isArray(index.errors) && index.errors.every((e) => isObject(e) && Number.isSafeInteger(e.at)
      && (e.at as number) >= 0 && (e.at as number) < (index.ids as string[]).length && typeof e.code === 'string' && typeof e.message === 'string')
    && (index.shapes === undefined || (isObject(index.shapes)
      && Object.values(index.shapes).every((s) => Array.isArray(s) && s.every((d) => Number.isSafeInteger(d) && d >= 0))));
  if (!ok) throw damaged(file, 'not a chunk index: expected {first, ids, errors, shapes}');
  return index as unknown as ChunkIndex;
}

function fileSize(file: string): number {
  return fs.statSync(file, { throwIfNoEntry: false })?.size ?? 0;
}

const bytes = (data: Float32Array) => new Uint8Array(data.buffer, data.byteOffset, data.byteLength);

/** A file's bytes as float32: a view, or a copy where the bytes are not 4-byte aligned in memory. */
function floats(buf: Buffer): Float32Array {
  if (buf.byteOffset % 4 === 0) return new Float32Array(buf.buffer, buf.byteOffset, buf.length / 4);
  const out = new Float32Array(buf.length / 4);
  new Uint8Array(out.buffer).set(buf);
  return out;
}
