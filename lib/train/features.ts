import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { VggError } from '../errors';
import { ioError } from '../files';
import type { Runner } from '../engine';
import type { PreprocessOptions } from '../images/preprocess';
import { extract, type ImageView } from '../tasks/extract';
import { Journal, journalRecords, type FailedImage } from '../outputs';
import { mulberry32 } from '../weights/random';
import type { Augment } from './options';
import type { Example } from './dataset';

/** Images per run of the convolutional layers while caching (not part of the cache's key: rows do not depend on it). */
const CACHE_BATCH = 32;
/** Cached batches are committed at least this often: a killed run loses at most this much. */
const COMMIT_MS = 1000;
/** Scale jittering's range of S, the shorter side before the 224 crop (the paper's). */
const S_MIN = 256;
const S_MAX = 512;

/** View v of an image: v = 0 is the plain center crop (what validation and `vgg eval` see); the others are augmented. */
export const viewId = (id: string, view: number) => (view === 0 ? id : `${id}#view${view}`);

/**
 * Every image's views as extract's sources, in order: the plain crop, then `views - 1` augmented
 * ones, each with S in [256, 512] and a random crop ('scale') and mirrored at random ('flip'),
 * drawn from one seeded stream; 'flip' alone gives the plain crop and its mirror.
 */
export function imageViews(examples: Example[], augment: Augment[], views: number, seed: number): ImageView[] {
  const random = mulberry32(seed ^ 0xa06e);
  const uniform = () => random() / 4294967296;
  const scale = augment.includes('scale');
  const flip = augment.includes('flip');
  return examples.flatMap(({ id, image }) => Array.from({ length: views }, (_, v): ImageView => {
    let preprocess: PreprocessOptions = {};
    if (v > 0 && scale) preprocess = { size: S_MIN + Math.floor(uniform() * (S_MAX - S_MIN + 1)), cropAt: [uniform(), uniform()], ...(flip ? { flip: uniform() < 0.5 } : {}) };
    else if (v > 0) preprocess = { flip: true };
    return { id: viewId(id, v), image, preprocess };
  }));
}

export interface CacheKey {
  weights: string;
  blob: string;
  preset: string;
  /** How the network ran (precision, Winograd): features differ a little between them. */
  engine: Record<string, unknown>;
  views: ImageView[];
}

/**
 * The journal of a set of views' features, in a folder of `cache` named by what the features
 * depend on (the weights file, as it is now, the blob, the preprocessing and every view), so
 * that another set of options caches beside it and the same options find their features again.
 */
export async function openCache(cache: string, key: CacheKey): Promise<Journal> {
  const { size, mtimeMs } = await fs.promises.stat(key.weights);
  const digest = createHash('sha256');
  for (const v of key.views) digest.update(`${v.id}\n${JSON.stringify(v.preprocess)}\n`);
  const job = {
    weights: path.resolve(key.weights), weightsBytes: size, weightsModified: mtimeMs, blob: key.blob, preset: key.preset,
    engine: key.engine, views: key.views.length, viewsDigest: digest.digest('hex'),
  };
  const name = `${key.blob}-${createHash('sha256').update(JSON.stringify(job)).digest('hex').slice(0, 16)}`;
  try {
    fs.mkdirSync(cache, { recursive: true });
  } catch (e) {
    throw ioError(e, `cannot create the feature cache ${cache}`);
  }
  return Journal.open(path.join(cache, name), [key.blob], job, true);
}

/**
 * Computes the features of the views the journal does not hold yet, through `model`, and
 * commits them as they come (every COMMIT_MS), so that a killed run resumes where it stopped.
 * Returns how many it computed.
 */
export async function fillCache(journal: Journal, model: Runner, views: ImageView[], blob: string,
  options: { concurrency?: number; onCache?: (done: number, total: number) => void }): Promise<number> {
  const done = [...journal.itemIds()];
  done.forEach((id, i) => {
    if (views[i]?.id !== id) throw new VggError('E_IO', `the feature cache ${journal.dir} holds ${id} where ${views[i]?.id} belongs: delete the folder to start over`);
  });
  const rest = views.slice(done.length);
  options.onCache?.(done.length, views.length);
  if (!rest.length) return 0;
  let count = done.length;
  const records = extract(model, rest, { outputs: [blob], batchSize: CACHE_BATCH, ...(options.concurrency ? { concurrency: options.concurrency } : {}) });
  return journalRecords(records, journal, { batchSize: CACHE_BATCH, commitMs: COMMIT_MS, onRecord: () => options.onCache?.(++count, views.length) });
}

/** Where a cached row is: which data file, and its row in that file. */
export interface RowRef { file: number; row: number }

/**
 * The cached rows of a journal, read at random without blocking the event loop: a batch is
 * gathered with positioned reads of its rows, so memory holds batches, not the cache.
 */
export class FeatureStore {
  readonly size: number;
  readonly failed: FailedImage[];
  #files: string[] = [];
  #handles: (Promise<fs.promises.FileHandle> | undefined)[] = [];
  #rows = new Map<string, RowRef>();

  constructor(journal: Journal, blob: string) {
    this.size = journal.shapes ? journal.shapes[blob].reduce((a, b) => a * b, 1) : 0;
    this.failed = [...journal.errors()];
    for (const { file, ids } of journal.rowFiles(blob)) {
      const at = this.#files.push(file) - 1;
      ids.forEach((id, row) => this.#rows.set(id, { file: at, row }));
    }
  }

  /** The row of a view; undefined where its image failed. */
  find(id: string): RowRef | undefined {
    return this.#rows.get(id);
  }

  /** The rows, one after another, as one array [rows.length, size]. */
  async gather(rows: RowRef[]): Promise<Float32Array> {
    const out = new Float32Array(rows.length * this.size);
    const bytes = new Uint8Array(out.buffer);
    const rowBytes = 4 * this.size;
    await Promise.all(rows.map(async ({ file, row }, i) => {
      const handle = await this.#open(file);
      const { bytesRead } = await handle.read(bytes, i * rowBytes, rowBytes, row * rowBytes);
      if (bytesRead !== rowBytes) throw new VggError('E_IO', `the feature cache's ${this.#files[file]} is shorter than it was: delete its folder to start over`);
    }));
    return out;
  }

  async close(): Promise<void> {
    const handles = this.#handles;
    this.#handles = [];
    await Promise.all(handles.map(async (h) => (await h?.catch(() => undefined))?.close()));
  }

  #open(file: number): Promise<fs.promises.FileHandle> {
    this.#handles[file] ??= fs.promises.open(this.#files[file], 'r').catch((e: unknown) => {
      throw ioError(e, `cannot read the feature cache's ${this.#files[file]}`);
    });
    return this.#handles[file]!;
  }
}
