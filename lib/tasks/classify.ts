import { classNames } from '../images/classes';
import { VggError, argError, checkBoolean, checkInt, checkOptions, isInt } from '../errors';
import type { Runner } from '../engine';
import { preprocess, type Preset } from '../images/preprocess';

export interface ClassifyOptions {
  /** How many classes to return, most probable first; 5 by default. */
  top?: number;
  /** The paper's dense evaluation over several scales instead of torchvision's single center crop. */
  dense?: boolean;
  /** The shorter sides Q of dense evaluation; [256, 384, 512] by default (the paper's multi-scale test). */
  scales?: number[];
  /** Also average the posteriors of the horizontally mirrored image. */
  flip?: boolean;
  preset?: Preset;
  /** Images with more pixels are E_IMAGE, checked from the header before decoding: see preprocess(). */
  maxPixels?: number;
}

export interface Prediction {
  label: string;
  index: number;
  prob: number;
}

export const DENSE_SCALES: readonly number[] = [256, 384, 512];

/**
 * The `top` most probable classes of an image. By default torchvision's evaluation: resize to
 * 256, center crop 224, fixed head. With `dense`, the paper's (section 3.2): the whole image at
 * each scale Q through the dense head, class posteriors averaged over space, then over scales.
 */
export async function classify(model: Runner, image: string | Buffer, options?: ClassifyOptions): Promise<Prediction[]> {
  const { top, dense, scales, flip, preset, maxPixels } = checkClassifyOptions(options);
  const runs = dense
    ? scales.map((size) => ({ crop: false as const, size, head: 'dense' as const }))
    : [{ head: 'fixed' as const }];
  const probs = await Promise.all(runs.map(async ({ head, ...geometry }) => {
    const input = await preprocess(image, { preset: preset ?? model.info.preset, maxPixels, ...geometry });
    return (await model.run(input, { outputs: ['prob'], head, flip })).prob.data;
  }));
  return mostProbable(mean(probs), top, classNames(model.info.classes));
}

function checkClassifyOptions(options: ClassifyOptions | undefined) {
  const opts = checkOptions(options, 'options', ['top', 'dense', 'scales', 'flip', 'preset', 'maxPixels']);
  const top = checkInt(opts.top ?? 5, 'options.top');
  const dense = checkBoolean(opts.dense ?? false, 'options.dense');
  if (opts.scales !== undefined && !dense) throw new VggError('E_ARG', 'options.scales applies only with options.dense: true');
  const scales = opts.scales ?? DENSE_SCALES;
  if (!Array.isArray(scales) || scales.length === 0 || !scales.every((q) => isInt(q))) {
    throw argError('options.scales', 'a non-empty array of positive integers', scales);
  }
  // flip, preset and maxPixels are checked by model.run and preprocess, which name them the same way.
  return { top, dense, scales, flip: opts.flip, preset: opts.preset, maxPixels: opts.maxPixels };
}

/** Element-wise mean of equal-length vectors. */
function mean(vectors: Float32Array[]): Float32Array {
  const out = new Float32Array(vectors[0].length);
  for (const v of vectors) for (let i = 0; i < out.length; i++) out[i] += v[i] / vectors.length;
  return out;
}

function mostProbable(prob: Float32Array, top: number, labels: string[]): Prediction[] {
  return Array.from(prob, (p, index) => ({ label: labels[index], index, prob: p }))
    .sort((a, b) => b.prob - a.prob || a.index - b.index)
    .slice(0, top);
}
