import type { Registry } from 'prom-client';
import { checkInt, checkOneOf } from '../errors';
import type { Engine, Runner } from '../engine';
import { PRESETS, type Preset } from '../images/preprocess';
import { Batcher } from './batcher';
import { ServeMetrics } from './metrics';

/** What the server needs of a model: a Model, or anything that runs like one and names its blobs. */
export type ServeModel = Runner & Pick<Engine, 'blobNames'>;

export interface ServeOptions {
  /** Most images in one engine batch; 32 by default. */
  maxBatch?: number;
  /** How long an image that finds the engine idle waits for company; 5 ms by default (those queued behind a running batch go as it ends). */
  maxDelayMs?: number;
  /** Most images admitted and not yet running (being decoded or waiting for a batch); past it requests are 503 E_BUSY. 256 by default. */
  maxQueue?: number;
  /**
   * Admission control: a request whose answer is estimated to come later than this many ms
   * (the images ahead of it at the measured run time per batch size) is refused at once with
   * 503 E_BUSY and a Retry-After of when it would be accepted. None by default (every request waits its turn).
   */
  maxLatencyMs?: number;
  /** Per-request limit from arrival (decoding, queue, inference) to answer; past it 504 E_TIMEOUT. 30000 by default. */
  timeoutMs?: number;
  /** Largest request body in bytes; past it 413. 20 MiB by default. */
  bodyLimit?: number;
  /** Images with more pixels are 400 E_IMAGE (decompression bombs); 40e6 by default. */
  maxPixels?: number;
  /** The preprocessing the weights were trained with; by default the weights' own (model.info.preset). */
  preset?: Preset;
  /** Batch sizes to run once before /readyz says ready (the first run of a shape compiles it); every size the batcher uses by default, [] for none. */
  warmup?: number[];
  /** Seconds in Retry-After of a 503; 1 by default. */
  retryAfterS?: number;
  /** Where the Prometheus metrics go; a registry of the server's own by default. */
  registry?: Registry;
  /** Called with the size of each batch as it starts. */
  onBatch?: (size: number) => void;
  /** Largest answer in bytes (JSON counted at its longest, 24 bytes a float); past it 400 E_ARG before the run. 64 MiB by default. */
  maxResponseBytes?: number;
  /** createServer: a client must send its whole request (headers and body) within this, and idle keep-alive sockets close after it; 10000 by default. */
  clientTimeoutMs?: number;
  /** createServer: most open sockets; connections past it are closed at once. 512 by default. */
  maxConnections?: number;
}

const MIB = 1024 * 1024;

/** The batcher, the metrics and the readiness of one model behind HTTP. */
export class VggnetService {
  readonly model: ServeModel;
  readonly batcher: Batcher;
  readonly metrics: ServeMetrics;
  readonly options: Required<Omit<ServeOptions, 'registry' | 'onBatch' | 'maxLatencyMs'>> & Pick<ServeOptions, 'maxLatencyMs'>;
  #warm: Promise<void> | undefined;
  #ready = false;
  #warmError: unknown;
  #closing = false;
  #closed: Promise<void> | undefined;

  constructor(model: ServeModel, options: ServeOptions = {}) {
    this.model = model;
    const o = options;
    this.options = {
      maxBatch: o.maxBatch ?? 32,
      maxDelayMs: o.maxDelayMs ?? 5,
      maxQueue: o.maxQueue ?? 256,
      maxLatencyMs: o.maxLatencyMs,
      timeoutMs: o.timeoutMs ?? 30_000,
      bodyLimit: o.bodyLimit ?? 20 * MIB,
      maxPixels: o.maxPixels ?? 40e6,
      preset: o.preset ?? model.info.preset ?? 'torchvision',
      warmup: o.warmup ?? batchSizes(o.maxBatch ?? 32),
      retryAfterS: o.retryAfterS ?? 1,
      maxResponseBytes: o.maxResponseBytes ?? 64 * MIB,
      clientTimeoutMs: o.clientTimeoutMs ?? 10_000,
      maxConnections: o.maxConnections ?? 512,
    };
    for (const key of ['timeoutMs', 'bodyLimit', 'maxPixels', 'retryAfterS', 'maxResponseBytes', 'clientTimeoutMs', 'maxConnections'] as const) checkInt(this.options[key], key);
    checkOneOf(this.options.preset, 'preset', PRESETS);
    this.metrics = new ServeMetrics(options.registry);
    const metrics = this.metrics;
    this.batcher = new Batcher({
      async run(input, runOptions) {
        const out = await model.run(input, runOptions);
        metrics.imagesDone(input.shape[0]);
        return out;
      },
    }, {
      maxBatch: this.options.maxBatch,
      maxDelayMs: this.options.maxDelayMs,
      maxQueue: this.options.maxQueue,
      maxLatencyMs: this.options.maxLatencyMs,
      onRefuse: (reason) => metrics.refused.inc({ reason }),
      onBatch: (n) => { metrics.batchSize.observe(n); options.onBatch?.(n); },
      onQueueDepth: (d) => metrics.queueDepth.set(d),
    });
    metrics.watch(this.batcher);
  }

  /** Runs the warm-up batches once; resolves when ready (rejects if the model cannot run). */
  warm(): Promise<void> {
    this.#warm ??= (async () => {
      const [h, w] = [224, 224];
      for (const n of this.options.warmup) {
        await this.model.run({ data: new Float32Array(n * 3 * h * w), shape: [n, 3, h, w] }, { outputs: ['prob'] });
      }
      this.#ready = true;
    })().catch((e: unknown) => {
      this.#warmError = e;
      throw e;
    });
    return this.#warm;
  }

  get ready(): boolean {
    return this.#ready && !this.#closing;
  }

  get warmError(): unknown {
    return this.#warmError;
  }

  get closing(): boolean {
    return this.#closing;
  }

  /** Not ready any more; the queued images run at once. Resolves when every batch is done. */
  close(): Promise<void> {
    this.#closing = true;
    this.#closed ??= this.batcher.close();
    return this.#closed;
  }
}

/** The sizes the batcher pads its batches to: powers of two up to maxBatch, and maxBatch. */
export function batchSizes(maxBatch: number): number[] {
  const sizes: number[] = [];
  for (let n = 1; n < maxBatch; n *= 2) sizes.push(n);
  return [...sizes, maxBatch];
}
