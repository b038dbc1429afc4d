import * as os from 'node:os';
import { VggError } from '../errors';
import { FcTrainer } from '../engine';
import { openWeights } from '../weights';
import type { FailedImage } from '../outputs';
import { loadModel } from '../model';
import type { LabeledSource } from '../images/labeled';
import { readDataset, splitDataset, type Example } from './dataset';
import { FeatureStore, fillCache, imageViews, openCache, viewId } from './features';
import { INPUT_BLOB, initialClassifier, writeClassifier } from './classifier';
import { fit, type Samples } from './loop';
import { checkTrainOptions, type EpochLog, type TrainLayers, type TrainOptions } from './options';

export interface TrainSummary {
  out: string;
  /** The classes, in the order of fc8's outputs (saved in the weights). */
  classes: string[];
  layers: TrainLayers;
  /** The cached blob the trained layers take. */
  input: string;
  /** Images in each part (their views that could be read), and views per training image. */
  images: { train: number; val: number };
  views: number;
  cache: { dir: string; reused: number; computed: number };
  /** Views that could not be read or decoded: left out of training (their image's other views too). */
  failed: FailedImage[];
  epochs: EpochLog[];
  bestEpoch: number;
  /** The best epoch's validation accuracy, in %: `vgg eval` on the validation images gives 100 minus this as top-1 error. */
  valAccuracy: number;
  stopped: 'epochs' | 'stalled';
  /** The validation images with their class index (to evaluate the new weights on them). */
  validation: { image: string | Buffer; label: number }[];
  seconds: number;
}

/**
 * Trains new fully connected layers on labeled images with the paper's recipe, over frozen
 * convolutional layers whose output is computed once per image (and per augmented view) and
 * cached on disk, then writes an ordinary weights file with the new classes' names: see the
 * README's "Train a classifier on your images".
 */
export async function trainClassifier(weights: string, source: LabeledSource, options: TrainOptions): Promise<TrainSummary> {
  const started = performance.now();
  const o = checkTrainOptions(options);
  const dataset = await readDataset(source);
  const { train, val } = o.valSource !== undefined
    ? { train: dataset.examples, val: (await readDataset(o.valSource, dataset.classes, 'the validation images')).examples }
    : splitDataset(dataset.examples, o.val!, o.seed);
  if (!val.length) throw new VggError('E_ARG', `--val ${o.val} holds out no image: every class has a single image; add images or give --val-dir`);
  const opened = await openWeights(weights);
  const classifier = initialClassifier(opened, o.layers, dataset.classes.length, o.seed, o.fcHidden, weights);
  const blob = INPUT_BLOB[o.layers];

  // Every image of the set in input order, so that another split (--val, --seed) finds its features in the same cache;
  // validation images of their own need only their plain view.
  const views = [...imageViews(dataset.examples, o.augment, o.views, o.seed), ...(o.valSource !== undefined ? imageViews(val, [], 1, o.seed) : [])];
  const journal = await openCache(o.cache, {
    weights, blob, preset: opened.preset, views, engine: { precision: o.load?.precision ?? 'fp32', winograd: o.load?.winograd ?? false },
  });
  const reused = journal.items;
  let computed = 0;
  if (reused < views.length) {
    const model = await loadModel(weights, o.load);
    try {
      computed = await fillCache(journal, model, views, blob, { concurrency: o.concurrency ?? os.availableParallelism(), onCache: o.onCache });
    } finally {
      await model.dispose();
    }
  } else {
    o.onCache?.(reused, views.length);
  }

  const store = new FeatureStore(journal, blob);
  try {
    const samplesOf = (examples: Example[], count: number): Samples => {
      const found = examples.flatMap((e) => Array.from({ length: count }, (_, v) => ({ ref: store.find(viewId(e.id, v)), label: e.label })))
        .filter((s) => s.ref !== undefined);
      return { rows: found.map((s) => s.ref!), labels: Int32Array.from(found, (s) => s.label) };
    };
    const trainSamples = samplesOf(train, o.views);
    const valSamples = samplesOf(val, 1);
    if (!trainSamples.rows.length || !valSamples.rows.length) {
      throw new VggError('E_IMAGE', `no ${trainSamples.rows.length ? 'validation' : 'training'} image could be read (${store.failed.length} failed, the first: ${store.failed[0]?.id}: ${store.failed[0]?.message})`);
    }
    const trainer = await FcTrainer.create({
      layers: classifier.layers, learningRate: o.learningRate, momentum: o.momentum, weightDecay: o.weightDecay, dropout: o.dropout,
      inputDropout: o.layers !== 'fc6-fc8', seed: o.seed, ...(o.load?.threads ? { threads: o.load.threads } : {}),
    });
    let result;
    try {
      result = await fit(trainer, store, trainSamples, valSamples, o);
    } finally {
      await trainer.dispose();
    }
    const frozen = opened.fc.slice(0, 3 - result.best.weights.length).map((l) => ({ weight: l.weight!, bias: l.bias }));
    const provenance = {
      from: weights, layers: o.layers, epochs: result.epochs.length, bestEpoch: result.best.epoch, valAccuracy: result.best.valAccuracy,
      images: { train: train.length, val: val.length }, views: o.views, augment: o.augment, seed: o.seed,
    };
    await writeClassifier(o.out, { weights: opened, fc: [...frozen, ...result.best.weights], hidden: classifier.hidden, classes: dataset.classes, provenance });
    const failedImages = new Set(store.failed.map((f) => f.id));
    return {
      out: o.out, classes: dataset.classes, layers: o.layers, input: blob,
      images: { train: train.length - train.filter((e) => failedImages.has(e.id)).length, val: valSamples.rows.length }, views: o.views,
      cache: { dir: journal.dir, reused, computed }, failed: store.failed,
      epochs: result.epochs, bestEpoch: result.best.epoch, valAccuracy: result.best.valAccuracy, stopped: result.stopped,
      validation: val.filter((e) => store.find(e.id)).map((e) => ({ image: e.image, label: e.label })),
      seconds: (performance.now() - started) / 1000,
    };
  } finally {
    await store.close();
  }
}
