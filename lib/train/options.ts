import { VggError, argError, checkInt, checkOneOf, checkOptions } from '../errors';
import type { LoadOptions } from '../engine';
import type { LabeledSource } from '../images/labeled';

/** Which fully connected layers learn; the layers below them stay as the weights have them. */
export type TrainLayers = 'fc8' | 'fc7-fc8' | 'fc6-fc8';
export const TRAIN_LAYERS: readonly TrainLayers[] = ['fc8', 'fc7-fc8', 'fc6-fc8'];
/** The paper's augmentations of the training images: horizontal flips, and scale jittering (S in [256, 512]). */
export type Augment = 'flip' | 'scale';
export const AUGMENTS: readonly Augment[] = ['flip', 'scale'];
/** Views per image with scale jittering, unless told otherwise: the plain center crop and 4 jittered ones. */
export const SCALE_VIEWS = 5;

/** One epoch's numbers, as `vgg train` logs them. */
export interface EpochLog {
  epoch: number;
  /** Mean cross-entropy of the epoch's batches (with dropout), and the share of them classified right, in %. */
  loss: number;
  trainAccuracy: number;
  /** On the validation images' center crops, without dropout: cross-entropy and top-1 accuracy in %. */
  valLoss: number;
  valAccuracy: number;
  learningRate: number;
  seconds: number;
  /** The best validation accuracy so far: these are the weights kept. */
  best: boolean;
  /** After this epoch the learning rate is divided by 10 (validation accuracy stopped improving). */
  lrDropped: boolean;
}

export interface TrainOptions {
  /** The new weights file (.safetensors), written atomically when training ends. */
  out: string;
  /** The layers that learn: 'fc8' (a new classifier on fc7, the default), 'fc7-fc8' or 'fc6-fc8'. */
  layers?: TrainLayers;
  /** At most this many epochs (30 by default); training stops earlier once the learning rate has dropped `maxDrops` times and accuracy stalls again. */
  epochs?: number;
  /** Images per SGD step; 64 by default. */
  batchSize?: number;
  /** 0.01 by default, divided by 10 when validation accuracy stops improving. */
  learningRate?: number;
  momentum?: number;
  weightDecay?: number;
  /** Dropout after fc6 and fc7 (on the input too when fc7 or fc6 is frozen: the paper drops fc7's and fc6's outputs); 0.5 by default. */
  dropout?: number;
  /** The share of each class's images held out for validation (seeded); 0.1 by default. */
  val?: number;
  /** Validation images of their own (class folders or a list with the training classes' names) instead of `val`. */
  valSource?: LabeledSource;
  /** Seeds the split, the new layers, the augmented views, the shuffling and dropout; 0 by default. */
  seed?: number;
  augment?: Augment[];
  /** Views per training image with 'scale' (SCALE_VIEWS by default); 'flip' alone makes 2 (the image and its mirror). */
  views?: number;
  /** The feature cache's folder; `${out}.cache` by default. */
  cache?: string;
  /** fc6 and fc7's width for weights without them (a Keras notop file), with `layers: 'fc6-fc8'`. */
  fcHidden?: number;
  /** Epochs without a better validation accuracy before the learning rate drops; 2 by default. */
  patience?: number;
  /** Drops of the learning rate before a stall ends training; 3 by default (the paper's). */
  maxDrops?: number;
  /** How the convolutional layers run while caching features (threads, device, precision...). */
  load?: LoadOptions;
  /** Images decoded at once while caching; the number of cores by default. */
  concurrency?: number;
  /** Progress: views cached so far (those from an earlier run included) of all. */
  onCache?: (done: number, total: number) => void;
  /** Progress: training views stepped through in this epoch. */
  onStep?: (done: number, total: number) => void;
  onEpoch?: (epoch: EpochLog) => void;
}

export type TrainSettings = Required<Pick<TrainOptions, 'out' | 'layers' | 'epochs' | 'batchSize' | 'learningRate' | 'momentum' | 'weightDecay'
  | 'dropout' | 'seed' | 'augment' | 'views' | 'cache' | 'patience' | 'maxDrops'>> & Omit<TrainOptions, 'views'>;

const KEYS: (keyof TrainOptions)[] = ['out', 'layers', 'epochs', 'batchSize', 'learningRate', 'momentum', 'weightDecay', 'dropout', 'val',
  'valSource', 'seed', 'augment', 'views', 'cache', 'fcHidden', 'patience', 'maxDrops', 'load', 'concurrency', 'onCache', 'onStep', 'onEpoch'];

/** A number in [min, max) (or [min, max] with `closed`), or E_ARG naming it. */
function checkNumber(value: unknown, name: string, min: number, max: number, closed = false): number {
  const ok = typeof value === 'number' && Number.isFinite(value) && value >= min && (closed ? value <= max : value < max);
  if (!ok) throw argError(name, `a number from ${min} to ${max}${closed ? '' : ' (exclusive)'}`, value);
  return value as number;
}

/** Every option checked, defaults filled in, before anything is read. */
export function checkTrainOptions(options: TrainOptions): TrainSettings {
  if (typeof options !== 'object' || options === null) throw argError('options', 'an object with at least `out`', options);
  const o = checkOptions(options, 'options', KEYS);
  if (typeof o.out !== 'string' || !o.out) throw argError('options.out', 'the new weights file path (.safetensors)', o.out);
  if (!o.out.endsWith('.safetensors')) throw new VggError('E_ARG', `options.out ${o.out}: the new weights are a .safetensors file`);
  const augment = o.augment ?? [];
  if (!Array.isArray(augment)) throw argError('options.augment', `an array of ${AUGMENTS.join(', ')}`, augment);
  augment.forEach((a, i) => checkOneOf(a, `options.augment[${i}]`, AUGMENTS));
  if (o.views !== undefined && !augment.includes('scale')) throw new VggError('E_ARG', 'options.views sets the views of scale jittering: add augment scale, or leave views out');
  const views = augment.includes('scale') ? checkInt(o.views ?? SCALE_VIEWS, 'options.views', { min: 2, max: 100 }) : augment.includes('flip') ? 2 : 1;
  if (o.val === 0) throw new VggError('E_ARG', 'options.val is 0: training needs validation images (the learning rate drops when their accuracy stalls, and the best epoch is kept)');
  if (o.val !== undefined && o.valSource !== undefined) throw new VggError('E_ARG', 'options.val and options.valSource both say where validation images come from: give one');
  for (const f of ['onCache', 'onStep', 'onEpoch'] as const) if (o[f] !== undefined && typeof o[f] !== 'function') throw argError(`options.${f}`, 'a function', o[f]);
  return {
    ...o,
    out: o.out,
    layers: checkOneOf(o.layers ?? 'fc8', 'options.layers', TRAIN_LAYERS),
    epochs: checkInt(o.epochs ?? 30, 'options.epochs', { max: 10000 }),
    batchSize: checkInt(o.batchSize ?? 64, 'options.batchSize', { max: 4096 }), // the trainer's bound on rows a step
    learningRate: checkNumber(o.learningRate ?? 0.01, 'options.learningRate', 0, 10),
    momentum: checkNumber(o.momentum ?? 0.9, 'options.momentum', 0, 1),
    weightDecay: checkNumber(o.weightDecay ?? 5e-4, 'options.weightDecay', 0, 1),
    dropout: checkNumber(o.dropout ?? 0.5, 'options.dropout', 0, 1),
    ...(o.valSource === undefined ? { val: checkNumber(o.val ?? 0.1, 'options.val', 0, 1) } : {}),
    seed: checkInt(o.seed ?? 0, 'options.seed', { min: 0, max: 2 ** 32 - 1 }),
    augment: [...new Set(augment)],
    views,
    cache: o.cache ?? `${o.out}.cache`,
    ...(o.fcHidden !== undefined ? { fcHidden: checkInt(o.fcHidden, 'options.fcHidden', { max: 65536 }) } : {}),
    patience: checkInt(o.patience ?? 2, 'options.patience', { max: 10000 }),
    maxDrops: checkInt(o.maxDrops ?? 3, 'options.maxDrops', { min: 0, max: 100 }),
    ...(o.concurrency !== undefined ? { concurrency: checkInt(o.concurrency, 'options.concurrency') } : {}),
  };
}
