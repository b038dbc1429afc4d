import type { FcLayerInit, FcTrainer } from '../engine';
import { mulberry32 } from '../weights/random';
import { shuffle } from './dataset';
import type { FeatureStore, RowRef } from './features';
import type { EpochLog, TrainSettings } from './options';

/** Rows of the cache with their classes. */
export interface Samples { rows: RowRef[]; labels: Int32Array }

/** Validation rows per predict call. */
const VAL_BATCH = 256;

export interface FitResult {
  epochs: EpochLog[];
  /** The epoch of the best validation accuracy (the first of equals), 1-based, and its weights. */
  best: { epoch: number; valAccuracy: number; weights: FcLayerInit[] };
  /** Why it ended: every epoch ran, or accuracy stalled after the last allowed drop. */
  stopped: 'epochs' | 'stalled';
}

/**
 * The paper's recipe: shuffled mini-batches (seeded), SGD with momentum and weight decay in the
 * trainer; after each epoch, accuracy on the validation rows; when it has not improved for
 * `patience` epochs the learning rate is divided by 10, and once it has been `maxDrops` times a
 * further stall ends training. The best epoch's weights are kept. The next batch is read from
 * the cache while the trainer steps through this one.
 */
export async function fit(trainer: FcTrainer, store: FeatureStore, train: Samples, val: Samples, o: TrainSettings): Promise<FitResult> {
  const random = mulberry32(o.seed ^ 0x0b5e);
  const epochs: EpochLog[] = [];
  let best: FitResult['best'] | undefined;
  let stalled = 0;
  let drops = 0;
  for (let epoch = 1; epoch <= o.epochs; epoch++) {
    const started = performance.now();
    const order = shuffle(Array.from(train.labels.keys()), random);
    let loss = 0;
    let correct = 0;
    const batchAt = (b: number) => order.slice(b, b + o.batchSize);
    let next = store.gather(batchAt(0).map((i) => train.rows[i]));
    for (let b = 0; b < order.length; b += o.batchSize) {
      const members = batchAt(b);
      const features = await next;
      if (b + o.batchSize < order.length) next = store.gather(batchAt(b + o.batchSize).map((i) => train.rows[i]));
      const result = await trainer.step(features, Int32Array.from(members, (i) => train.labels[i]));
      loss += result.loss * members.length;
      correct += result.correct;
      o.onStep?.(b + members.length, order.length);
    }
    const scored = await score(trainer, store, val);
    const improved = !best || scored.accuracy > best.valAccuracy;
    if (improved) best = { epoch, valAccuracy: scored.accuracy, weights: await trainer.weights() };
    stalled = improved ? 0 : stalled + 1;
    const stop = stalled >= o.patience && drops >= o.maxDrops;
    const lrDropped = stalled >= o.patience && !stop && epoch < o.epochs;
    const log: EpochLog = {
      epoch, loss: loss / order.length, trainAccuracy: (100 * correct) / order.length, valLoss: scored.loss, valAccuracy: scored.accuracy,
      learningRate: trainer.learningRate, seconds: (performance.now() - started) / 1000, best: improved, lrDropped,
    };
    epochs.push(log);
    o.onEpoch?.(log);
    if (stop) return { epochs, best: best!, stopped: 'stalled' };
    if (lrDropped) {
      trainer.learningRate /= 10;
      drops++;
      stalled = 0;
    }
  }
  return { epochs, best: best!, stopped: 'epochs' };
}

/** Mean cross-entropy and top-1 accuracy (%) of the trainer on the rows, without dropout. */
export async function score(trainer: FcTrainer, store: FeatureStore, samples: Samples): Promise<{ loss: number; accuracy: number }> {
  let loss = 0;
  let correct = 0;
  const classes = trainer.classes;
  for (let at = 0; at < samples.rows.length; at += VAL_BATCH) {
    const rows = samples.rows.slice(at, at + VAL_BATCH);
    const logits = await trainer.predict(await store.gather(rows), rows.length);
    rows.forEach((_, r) => {
      const row = logits.subarray(r * classes, (r + 1) * classes);
      const label = samples.labels[at + r];
      let top = 0;
      for (let c = 1; c < classes; c++) if (row[c] > row[top]) top = c;
      if (top === label) correct++;
      let sum = 0;
      for (let c = 0; c < classes; c++) sum += Math.exp(row[c] - row[top]);
      loss += Math.log(sum) - (row[label] - row[top]);
    });
  }
  const n = samples.rows.length;
  return { loss: loss / n, accuracy: (100 * correct) / n };
}
