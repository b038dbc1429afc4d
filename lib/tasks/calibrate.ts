import { RangeTracker, type Calibration } from '../weights/calibration';
import { VggError, argError, checkInt, checkOptions } from '../errors';
import { extract, type ExtractSource } from './extract';
import { Engine, loadEngine } from '../engine';
import type { PreprocessOptions } from '../images/preprocess';
import type { Tensor } from '../tensor';

export interface CalibrateOptions {
  /** Images per run; 8 by default. */
  batchSize?: number;
  threads?: number;
  /** For images: how they become tensors (preprocess()'s options). */
  preprocess?: PreprocessOptions;
  /** Called after each batch with the number of images measured so far. */
  onProgress?: (images: number) => void;
}

/**
 * Measures the activation ranges int8 needs by running the float32 model over sample inputs:
 * a batch tensor [n, 3, h, w] (normalized), or images (paths or Buffers, as model.extract takes
 * them). A few dozen images like the ones the model will see are enough; every one must be
 * readable, since a calibration that silently skipped inputs would not say what it measured.
 */
export async function calibrate(weights: string, samples: Tensor | ExtractSource, options?: CalibrateOptions): Promise<Calibration> {
  const opts = checkOptions(options, 'options', ['batchSize', 'threads', 'preprocess', 'onProgress']);
  const batchSize = checkInt(opts.batchSize ?? 8, 'options.batchSize');
  if (opts.onProgress !== undefined && typeof opts.onProgress !== 'function') throw argError('options.onProgress', 'a function', opts.onProgress);
  const model = await loadEngine(weights, { precision: 'fp32', threads: opts.threads }, Engine);
  try {
    const tracker = new RangeTracker(model.info);
    const outputs = tracker.blobs;
    let images = 0;
    const measured = (n: number) => opts.onProgress?.((images += n));
    if (isTensor(samples)) {
      for (const batch of split(samples, batchSize)) {
        await tracker.add(await model.run(batch, { outputs }));
        measured(batch.shape[0]);
      }
    } else {
      for await (const record of extract(model, samples, { outputs, batchSize, onError: 'throw', ...(opts.preprocess ? { preprocess: opts.preprocess } : {}) })) {
        await tracker.add(record.outputs!);
        measured(1);
      }
    }
    return tracker.result();
  } finally {
    await model.dispose();
  }
}

const isTensor = (v: unknown): v is Tensor => typeof v === 'object' && v !== null && 'data' in v && 'shape' in v;

/** Batches of a [n, 3, h, w] tensor, as views; model.run checks the shape and data. */
function* split(t: Tensor, size: number): Generator<Tensor> {
  if (!Array.isArray(t.shape) || t.shape.length !== 4 || !(t.data instanceof Float32Array)) {
    throw new VggError('E_SHAPE', `Expected calibration samples as a tensor [n, 3, h, w] of float32 but received shape ${JSON.stringify(t.shape)}`);
  }
  const [n, c, h, w] = t.shape;
  const per = c * h * w;
  for (let i = 0; i < n; i += size) {
    const k = Math.min(size, n - i);
    yield { data: t.data.subarray(i * per, (i + k) * per), shape: [k, c, h, w] };
  }
}

