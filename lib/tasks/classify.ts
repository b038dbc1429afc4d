import { classNames } from '../images/classes';
import { VggError, checkBoolean, checkInt, checkOptions } from '../errors';
import type { Runner } from '../engine';
import { preprocessSizes, type Preset } from '../images/preprocess';
import { checkProtocolOptions, cropFor, posterior, topClasses, type ProtocolOptions } from './protocols';

export interface ClassifyOptions extends Omit<ProtocolOptions, 'batchSize'> {
  /** How many classes to return, most probable first; 5 by default. */
  top?: number;
  /** The same as `protocol: 'dense'` (what it was called before there were protocols). */
  dense?: boolean;
  preset?: Preset;
  /** Images with more pixels are E_IMAGE, checked from the header before decoding: see preprocess(). */
  maxPixels?: number;
}

export interface Prediction {
  label: string;
  index: number;
  prob: number;
}

/**
 * The `top` most probable classes of an image under a test protocol (see protocols.ts): by
 * default torchvision's (resize to 256, center crop 224, fixed head); `dense`, `multicrop` and
 * `dense+multicrop` are the paper's, over several scales.
 */
export async function classify(model: Runner, image: string | Buffer, options?: ClassifyOptions): Promise<Prediction[]> {
  const { top, preset, maxPixels, settings } = checkClassifyOptions(options);
  const scaled = await preprocessSizes(image, settings.scales, { preset: preset ?? model.info.preset, maxPixels, crop: cropFor(settings.protocol) });
  const prob = await posterior(model, scaled, settings);
  const labels = model.info.classNames ?? classNames(model.info.classes);
  return topClasses(prob, top).map((index) => ({ label: labels[index], index, prob: prob[index] }));
}

function checkClassifyOptions(options: ClassifyOptions | undefined) {
  const opts = checkOptions(options, 'options', ['top', 'protocol', 'dense', 'scales', 'flip', 'preset', 'maxPixels']);
  const top = checkInt(opts.top ?? 5, 'options.top');
  const dense = checkBoolean(opts.dense ?? false, 'options.dense');
  if (dense && opts.protocol !== undefined && opts.protocol !== 'dense') {
    throw new VggError('E_ARG', `options.dense is protocol 'dense'; it contradicts options.protocol ${JSON.stringify(opts.protocol)}`);
  }
  const settings = checkProtocolOptions({ protocol: dense ? 'dense' : opts.protocol, scales: opts.scales, flip: opts.flip });
  // preset and maxPixels are checked by preprocess, which names them the same way.
  return { top, preset: opts.preset, maxPixels: opts.maxPixels, settings };
}
