import { VggError, argError, checkBoolean, checkInt, checkOneOf, isInt } from '../errors';
import type { Runner } from '../engine';
import type { Tensor } from '../tensor';
import { roundHalfEven } from '../images/preprocess';
import { stack } from './extract';
import { mapAhead } from './pipeline';

/**
 * The test protocols of the paper (section 3.2 and 4.2) and torchvision's, all on an image
 * first resized so that its shorter side is Q:
 * - `center`: the 224x224 center crop at Q = 256 (or the one scale given), fixed head;
 * - `dense`: the whole image through the dense head, score map averaged, softmax;
 * - `multicrop`: a 5x5 grid of 224x224 crops, each with its mirror (50 per scale), fixed head;
 * - `dense+multicrop`: the mean of the two.
 * Posteriors are averaged over crops, flips and scales.
 */
export type Protocol = 'center' | 'dense' | 'multicrop' | 'dense+multicrop';
export const PROTOCOLS: readonly Protocol[] = ['center', 'dense', 'multicrop', 'dense+multicrop'];

/** The paper's test scales Q (Tables 4 and 5), the default of every protocol but `center`. */
export const PAPER_SCALES: readonly number[] = [256, 384, 512];
/** The fixed head's input side: every crop's. */
export const CROP = 224;
/** torchvision's resize before its center crop. */
const CENTER_SCALE = 256;
/** Crops per side of the multi-crop grid. */
const GRID = 5;
/**
 * Shorter sides outside [224, 1024] are refused: below 224 no crop fits and the dense head's
 * 7x7 fc6 window does not either; above 1024 one dense run of VGG16 needs gigabytes.
 */
const MIN_SCALE = CROP;
const MAX_SCALE = 1024;
/** 224x224 inputs per run unless told: one scale's 25 crops and their mirrors. */
export const DEFAULT_BATCH = 2 * GRID * GRID;

export interface ProtocolOptions {
  protocol?: Protocol;
  /** The shorter sides Q: [256] for center (which takes one), the paper's [256, 384, 512] otherwise. */
  scales?: number[];
  /** center and dense: also average the posteriors of the mirrored image (multicrop always does). */
  flip?: boolean;
  /** The most 224x224 inputs in one model.run: center crops of that many images, or multi-crop crops; 50 by default. */
  batchSize?: number;
}

export type ProtocolSettings = Required<ProtocolOptions>;

/** Options checked and defaults filled in; `name` says how a message names each option. */
export function checkProtocolOptions(opts: ProtocolOptions, name: (key: keyof ProtocolOptions) => string = (k) => `options.${k}`): ProtocolSettings {
  const protocol = checkOneOf(opts.protocol ?? 'center', name('protocol'), PROTOCOLS);
  const scales = opts.scales ?? (protocol === 'center' ? [CENTER_SCALE] : PAPER_SCALES);
  if (!Array.isArray(scales) || scales.length === 0 || !scales.every((q) => isInt(q, MIN_SCALE) && q <= MAX_SCALE)) {
    throw argError(name('scales'), `a non-empty array of shorter sides from ${MIN_SCALE} to ${MAX_SCALE} pixels (no ${CROP}x${CROP} crop fits a smaller image, nor the dense head's fc6 window)`, scales);
  }
  if (new Set(scales).size !== scales.length) throw argError(name('scales'), 'scales without repeats', scales);
  if (protocol === 'center' && scales.length > 1) throw new VggError('E_ARG', `the center protocol takes one scale, not ${scales.length} (${name('scales')}); multi-scale evaluation is dense or multicrop`);
  const flip = checkBoolean(opts.flip ?? false, name('flip'));
  const batchSize = checkInt(opts.batchSize ?? DEFAULT_BATCH, name('batchSize'));
  return { protocol, scales: [...scales], flip, batchSize };
}

/** How preprocessSizes() prepares an image: the center crop at the one scale, or the whole image at each. */
export const cropFor = (protocol: Protocol): number | false => (protocol === 'center' ? CROP : false);

/** Center-protocol posteriors of several images' crops ([1, 3, 224, 224] each), in one run. */
export async function centerPosteriors(model: Runner, crops: Tensor[], flip: boolean): Promise<Float64Array[]> {
  const { prob } = await model.run(stack(crops), { outputs: ['prob'], head: 'fixed', flip });
  const classes = model.info.classes;
  return crops.map((_, i) => Float64Array.from(prob.data.subarray(i * classes, (i + 1) * classes)));
}

/**
 * An image's posterior under `settings.protocol` from what preprocessSizes() made of it: the
 * center crop, or the whole image at each scale. The dense and multi-crop halves queue their
 * runs together, so the native thread goes from one to the other without waiting.
 */
export async function posterior(model: Runner, scaled: Tensor[], settings: ProtocolSettings): Promise<Float64Array> {
  const { protocol, flip, batchSize } = settings;
  if (protocol === 'center') return (await centerPosteriors(model, scaled, flip))[0];
  const parts: Promise<Float64Array>[] = [];
  if (protocol !== 'multicrop') parts.push(densePosterior(model, scaled, flip));
  if (protocol !== 'dense') parts.push(multicropPosterior(model, scaled, batchSize));
  return mean(await Promise.all(parts));
}

/** Dense head at every scale (each with its mirror under `flip`): the mean of the posteriors. */
async function densePosterior(model: Runner, scaled: Tensor[], flip: boolean): Promise<Float64Array> {
  const probs = await Promise.all(scaled.map((image) => model.run(image, { outputs: ['prob'], head: 'dense', flip })));
  return mean(probs.map(({ prob }) => prob.data));
}

/** One crop of the grid: which scale, where, and whether mirrored. */
interface Crop { image: Tensor; x: number; y: number; mirror: boolean }

/**
 * The 5x5 grid's crops and their mirrors at every scale through the fixed head, `batchSize` to a
 * run, the posteriors averaged. Each run's crops are cut just before it is queued, and at most two
 * runs are queued at a time, so memory holds two batches of crops, not every crop of every scale.
 */
async function multicropPosterior(model: Runner, scaled: Tensor[], batchSize: number): Promise<Float64Array> {
  const crops: Crop[] = scaled.flatMap((image) => {
    const grid = gridOffsets(image.shape[3], image.shape[2]);
    return [false, true].flatMap((mirror) => grid.map(([x, y]) => ({ image, x, y, mirror })));
  });
  const chunks = Array.from({ length: Math.ceil(crops.length / batchSize) }, (_, i) => crops.slice(i * batchSize, (i + 1) * batchSize));
  const sum = new Float64Array(model.info.classes);
  const runs = mapAhead(toAsync(chunks), 2, (chunk) => model.run(cut(chunk), { outputs: ['prob'], head: 'fixed' }));
  for await (const { prob } of runs) addInto(sum, prob.data);
  return sum.map((v) => v / crops.length);
}

/**
 * The grid's top-left corners [x, y] on a W x H image: x_i = round(i (W - 224) / 4) and
 * y_j = round(j (H - 224) / 4) for i, j = 0..4, halves rounded to even as Python's round().
 */
export function gridOffsets(width: number, height: number): [number, number][] {
  if (width < CROP || height < CROP) throw new VggError('E_SHAPE', `a ${width}x${height} image has no ${CROP}x${CROP} crops`);
  const steps = Array.from({ length: GRID }, (_, i) => i);
  const at = (side: number, i: number) => roundHalfEven((i * (side - CROP)) / (GRID - 1));
  return steps.flatMap((i) => steps.map((j): [number, number] => [at(width, i), at(height, j)]));
}

/** The crops as one batch [n, 3, 224, 224], mirrored ones reversed along each row. */
function cut(crops: Crop[]): Tensor {
  const plane = CROP * CROP;
  const out = new Float32Array(crops.length * 3 * plane);
  crops.forEach(({ image, x, y, mirror }, n) => {
    const [, , h, w] = image.shape;
    for (let c = 0; c < 3; c++) {
      for (let row = 0; row < CROP; row++) {
        const from = c * h * w + (y + row) * w + x;
        const to = (n * 3 + c) * plane + row * CROP;
        if (!mirror) out.set(image.data.subarray(from, from + CROP), to);
        else for (let i = 0; i < CROP; i++) out[to + i] = image.data[from + CROP - 1 - i];
      }
    }
  });
  return { data: out, shape: [crops.length, 3, CROP, CROP] };
}

/** Adds every row of a [n, classes] posterior batch into `sum`. */
function addInto(sum: Float64Array, rows: Float32Array): void {
  for (let i = 0; i < rows.length; i++) sum[i % sum.length] += rows[i];
}

/** Element-wise mean of equal-length vectors, in float64. */
function mean(vectors: ArrayLike<number>[]): Float64Array {
  const out = new Float64Array(vectors[0].length);
  for (const v of vectors) for (let i = 0; i < out.length; i++) out[i] += v[i];
  return out.map((s) => s / vectors.length);
}

async function* toAsync<T>(items: T[]): AsyncGenerator<T> {
  yield* items;
}

/** The `k` most probable classes, most probable first (ties: the lower index first). */
export function topClasses(prob: ArrayLike<number>, k: number): number[] {
  return Array.from({ length: prob.length }, (_, i) => i)
    .sort((a, b) => prob[b] - prob[a] || a - b)
    .slice(0, k);
}
