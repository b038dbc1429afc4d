import * as os from 'node:os';
import { VggError, argError, checkInt, checkOneOf, checkOptions } from '../errors';
import type { Outputs, Runner } from '../engine';
import { normalizeInto, preprocessPixels, type Pixels, type PreprocessOptions } from '../images/preprocess';
import type { Tensor } from '../tensor';
import { batches, mapAhead } from './pipeline';

/** An image: a file path, or the bytes of an encoded image (JPEG, PNG, WebP, ...). */
export type ImageInput = string | Buffer;
/** An image with preprocessing of its own over the extraction's (a training view: scale, crop, flip), under its own id. */
export interface ImageView { id: string; image: ImageInput; preprocess: PreprocessOptions }
export type ExtractSource = ImageInput | Iterable<ImageInput | ImageView> | AsyncIterable<ImageInput | ImageView>;

export interface ExtractOptions {
  /** Blobs to return for every image; ['fc7'] by default. */
  outputs?: string[];
  /** Images per model.run; 32 by default. */
  batchSize?: number;
  /** How images become tensors (preprocess()'s options): resize 256, crop 224, torchvision by default. */
  preprocess?: PreprocessOptions;
  /**
   * 'record' (the default): an unreadable image, or a source item that is not a path or a Buffer,
   * gives a record with `error`; 'throw': the stream throws it (after the records before it).
   */
  onError?: 'record' | 'throw';
  /** Images decoded at once; the number of cores by default. */
  concurrency?: number;
}

export interface ExtractRecord {
  /**
   * The image's path, or `buffer:<index>` for a Buffer (its position in the source), or
   * `item:<index>` for a source item that is neither (its record is an E_ARG error).
   */
  id: string;
  /** Each requested blob of this image alone, shape [1, ...]. Absent when `error` is set. */
  outputs?: Outputs;
  error?: VggError;
}

const ON_ERROR = ['record', 'throw'] as const;

/**
 * Features of a stream of images, one record per image in input order. Decoding runs ahead of
 * inference (the next batch is decoded while the model runs this one), but only so far ahead:
 * every stage holds a bounded number of images, and nothing is pulled from `source` until there
 * is room, so memory stays flat however long the source is and however slowly the records are
 * consumed. An image that cannot be read or decoded (E_IMAGE, E_IO), or a source item that is not
 * a path or a Buffer (E_ARG), gives an error record, or ends the stream with `onError: 'throw'`;
 * any other failure ends the stream. A source that throws (its iterator's next() fails) ends the
 * stream with that error whatever `onError` says, as nothing after it can be read; but first come
 * the records of every item it gave before failing, in order, as they would have without it.
 */
export function extract(model: Runner, source: ExtractSource, options?: ExtractOptions): AsyncGenerator<ExtractRecord, void, undefined> {
  const opts = checkOptions(options, 'options', ['outputs', 'batchSize', 'preprocess', 'onError', 'concurrency']);
  const batchSize = checkInt(opts.batchSize ?? 32, 'options.batchSize');
  const concurrency = checkInt(opts.concurrency ?? os.availableParallelism(), 'options.concurrency');
  const onError = checkOneOf(opts.onError ?? 'record', 'options.onError', ON_ERROR);
  if (!isImage(source) && !isIterable(source)) throw argError('source', 'an image path, a Buffer, or an (async) iterable of them', source);
  // outputs and preprocess are checked where they are used, by model.run and preprocess(), with their own messages.
  // fc7 by default; pool5 for weights without a classifier.
  const runOptions = { outputs: opts.outputs ?? [model.info.classes ? 'fc7' : 'pool5'] };

  // The weights' own preprocessing unless told otherwise (a bare architecture has none: preprocess's default).
  const preprocessing = { ...opts.preprocess, preset: opts.preprocess?.preset ?? model.info.preset };
  const decoded = mapAhead(images(source), concurrency, (item) => decode(item, preprocessing));
  // Two batches in flight: the next one is queued on the native thread while this one's records go out.
  const results = mapAhead(batches(decoded, batchSize), 2, (batch) => infer(model, batch, runOptions));
  return (async function* () {
    for await (const records of results) {
      for (const record of records) {
        if (record.error && onError === 'throw') throw record.error;
        yield record;
      }
    }
  })();
}

/** A source item: an image (a view's with its preprocessing), or (not an image) the E_ARG error that is its record. */
interface Item { id: string; image?: ImageInput; preprocess?: PreprocessOptions; error?: VggError }
interface Decoded { id: string; pixels?: Pixels; error?: VggError }

const isImage = (v: unknown): v is ImageInput => (typeof v === 'string' && v.length > 0) || Buffer.isBuffer(v);
const isView = (v: unknown): v is ImageView => typeof v === 'object' && v !== null && !Buffer.isBuffer(v)
  && typeof (v as ImageView).id === 'string' && isImage((v as ImageView).image) && typeof (v as ImageView).preprocess === 'object';
const isIterable = (v: unknown): v is Iterable<unknown> | AsyncIterable<unknown> =>
  typeof v === 'object' && v !== null && (Symbol.iterator in v || Symbol.asyncIterator in v);

/** The source's images with their ids; a single path or Buffer is a source of one. */
async function* images(source: ExtractSource): AsyncGenerator<Item> {
  let index = 0;
  for await (const image of isImage(source) ? [source] : source as AsyncIterable<unknown>) {
    if (isImage(image)) yield { id: typeof image === 'string' ? image : `buffer:${index}`, image };
    else if (isView(image)) yield image;
    else yield { id: `item:${index}`, error: argError(`source item ${index}`, 'an image path, a Buffer or a view { id, image, preprocess }', image) };
    index++;
  }
}

async function decode({ id, image, preprocess: own, error }: Item, options: PreprocessOptions): Promise<Decoded> {
  if (error) return { id, error };
  try {
    return { id, pixels: await preprocessPixels(image!, own ? { ...options, ...own } : options) };
  } catch (e) {
    // An unreadable or undecodable image is that image's problem; a bad option or a bug is everyone's.
    if (e instanceof VggError && (e.code === 'E_IMAGE' || e.code === 'E_IO')) return { id, error: e };
    throw e;
  }
}

/**
 * Runs a batch, one model.run per image size (a batch must be one size; the default 224 crop
 * makes them all one), and gives its records back in input order. Each record's blobs are views
 * of the batch's output: no copy.
 */
async function infer(model: Runner, batch: Decoded[], runOptions: { outputs: string[] }): Promise<ExtractRecord[]> {
  const records: ExtractRecord[] = batch.map(({ id, error }) => (error ? { id, error } : { id }));
  await Promise.all([...sizeGroups(batch).values()].map(async (rows) => {
    const out = await model.run(normalizeBatch(rows.map((i) => batch[i].pixels!)), runOptions);
    rows.forEach((i, row) => { records[i].outputs = rowOf(out, row); });
  }));
  return records;
}

/** Positions of the decoded images in a batch, by image size. */
function sizeGroups(batch: Decoded[]): Map<string, number[]> {
  const groups = new Map<string, number[]>();
  batch.forEach(({ pixels }, i) => {
    if (!pixels) return;
    const key = `${pixels.width}x${pixels.height}`;
    const group = groups.get(key);
    if (group) group.push(i);
    else groups.set(key, [i]);
  });
  return groups;
}

/** Images of one size as a batch [n, 3, h, w], each normalized straight into its row. */
function normalizeBatch(images: Pixels[]): Tensor {
  const { width, height } = images[0];
  const data = new Float32Array(images.length * 3 * height * width);
  images.forEach((image, i) => normalizeInto(image, data, i * 3 * height * width));
  return { data, shape: [images.length, 3, height, width] };
}

/** [1, 3, h, w] tensors of one size as a batch [n, 3, h, w]. */
export function stack(tensors: Tensor[]): Tensor {
  const [, c, h, w] = tensors[0].shape;
  const data = new Float32Array(tensors.length * c * h * w);
  tensors.forEach((t, i) => data.set(t.data, i * t.data.length));
  return { data, shape: [tensors.length, c, h, w] };
}

function rowOf(outputs: Outputs, row: number): Outputs {
  const out: Outputs = {};
  for (const [name, { data, shape }] of Object.entries(outputs)) {
    const size = data.length / shape[0];
    out[name] = { data: data.subarray(row * size, (row + 1) * size), shape: [1, ...shape.slice(1)] };
  }
  return out;
}
