import { VggError, checkInt } from '../errors';
import type { Outputs, RunOptions } from '../engine';
import type { Tensor } from '../tensor';

/** What the batcher needs of a model: model.run (a Model, or a wrapper around one). */
export interface BatchRunner {
  run(input: Tensor, options?: RunOptions): Promise<Outputs>;
}

export interface BatcherOptions {
  /** Most images in one model.run; 32 by default. */
  maxBatch?: number;
  /** How long the first queued image waits for others before its batch runs; 5 ms by default. */
  maxDelayMs?: number;
  /** Most images waiting (not yet running); a request past it is E_BUSY. 256 by default. */
  maxQueue?: number;
  /** Called with each batch's size as it starts (metrics, tests). */
  onBatch?: (size: number) => void;
  /** Called with the queue depth whenever it changes. */
  onQueueDepth?: (depth: number) => void;
}

export interface SubmitOptions {
  /** Blobs wanted for this image. */
  outputs: string[];
  /** Aborting it while the image waits removes it from the queue (rejects with the reason); once its batch runs, the answer is dropped. */
  signal?: AbortSignal;
}

interface Job {
  input: Tensor;
  outputs: string[];
  key: string;
  resolve: (outputs: Outputs) => void;
  reject: (e: unknown) => void;
  signal?: AbortSignal;
  onAbort?: () => void;
}

/**
 * Dynamic batching: single images [1, 3, h, w] are queued, and gathered into one model.run of
 * up to `maxBatch` images as soon as that many wait or the oldest has waited `maxDelayMs`.
 * Only images of the same shape share a batch. One batch runs at a time (the engine runs them
 * one after another anyway); the next one gathers while it runs. Each caller gets its own
 * slice of the batch's blobs.
 */
export class Batcher {
  readonly maxBatch: number;
  readonly maxDelayMs: number;
  readonly maxQueue: number;
  #runner: BatchRunner;
  #queue: Job[] = [];
  #timer: NodeJS.Timeout | undefined;
  #running: Promise<void> | undefined;
  #closing = false;
  #onBatch?: (size: number) => void;
  #onQueueDepth?: (depth: number) => void;

  constructor(runner: BatchRunner, options: BatcherOptions = {}) {
    this.#runner = runner;
    this.maxBatch = checkInt(options.maxBatch ?? 32, 'maxBatch');
    this.maxDelayMs = checkInt(options.maxDelayMs ?? 5, 'maxDelayMs', { min: 0 });
    this.maxQueue = checkInt(options.maxQueue ?? 256, 'maxQueue');
    this.#onBatch = options.onBatch;
    this.#onQueueDepth = options.onQueueDepth;
  }

  /** Images waiting for a batch (not counting the batch running). */
  get depth(): number {
    return this.#queue.length;
  }

  /** Queues one image [1, 3, h, w]; resolves to its blobs, each with a leading dimension of 1. */
  submit(input: Tensor, { outputs, signal }: SubmitOptions): Promise<Outputs> {
    if (input.shape.length !== 4 || input.shape[0] !== 1) {
      return Promise.reject(new VggError('E_SHAPE', `Expected one image [1, 3, h, w] but received shape [${input.shape.join(', ')}]`));
    }
    if (signal?.aborted) return Promise.reject(signal.reason);
    if (this.#queue.length >= this.maxQueue) {
      return Promise.reject(new VggError('E_BUSY', `the queue is full (${this.maxQueue} images waiting); retry later`));
    }
    return new Promise<Outputs>((resolve, reject) => {
      const job: Job = { input, outputs, key: input.shape.join('x'), resolve, reject, signal };
      if (signal) {
        job.onAbort = () => {
          const at = this.#queue.indexOf(job);
          if (at < 0) return; // already in a batch: its answer is dropped by the caller
          this.#queue.splice(at, 1);
          this.#onQueueDepth?.(this.#queue.length);
          reject(signal.reason);
        };
        signal.addEventListener('abort', job.onAbort, { once: true });
      }
      this.#queue.push(job);
      this.#onQueueDepth?.(this.#queue.length);
      this.#schedule();
    });
  }

  /**
   * Resolves once every queued and running batch is done. From now on nothing waits for the
   * delay: an image that still arrives (a request in flight) runs at once.
   */
  async close(): Promise<void> {
    this.#closing = true;
    // Nothing new will join: what waits runs now rather than after its delay.
    this.#schedule();
    while (this.#running || this.#queue.length > 0) {
      if (this.#running) await this.#running;
      else this.#schedule();
    }
  }

  #schedule(): void {
    if (this.#running || this.#queue.length === 0) return;
    const full = this.#queue.filter((j) => j.key === this.#queue[0].key).length >= this.maxBatch;
    if (full || this.#closing || this.maxDelayMs === 0) {
      this.#start();
    } else {
      this.#timer ??= setTimeout(() => this.#start(), this.maxDelayMs);
    }
  }

  #start(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    if (this.#running || this.#queue.length === 0) return;
    const key = this.#queue[0].key;
    const jobs: Job[] = [];
    this.#queue = this.#queue.filter((j) => {
      if (jobs.length < this.maxBatch && j.key === key) {
        jobs.push(j);
        return false;
      }
      return true;
    });
    for (const j of jobs) if (j.onAbort) j.signal!.removeEventListener('abort', j.onAbort);
    this.#onQueueDepth?.(this.#queue.length);
    this.#onBatch?.(jobs.length);
    this.#running = this.#runBatch(jobs).finally(() => {
      this.#running = undefined;
      this.#schedule();
    });
  }

  async #runBatch(jobs: Job[]): Promise<void> {
    const outputs = [...new Set(jobs.flatMap((j) => j.outputs))];
    const [, c, h, w] = jobs[0].input.shape;
    const size = c * h * w;
    // Batches are padded (with zero images) to a power of two: each batch size is a network the
    // engine compiles once, and six sizes up to 32 stay compiled where 32 would not.
    const padded = Math.min(Math.max(this.maxBatch, jobs.length), 2 ** Math.ceil(Math.log2(jobs.length)));
    let data: Float32Array;
    if (padded === 1) {
      data = jobs[0].input.data;
    } else {
      data = new Float32Array(padded * size);
      jobs.forEach((j, i) => data.set(j.input.data, i * size));
    }
    let result: Outputs;
    try {
      result = await this.#runner.run({ data, shape: [padded, c, h, w] }, { outputs });
    } catch (e) {
      for (const j of jobs) j.reject(e);
      return;
    }
    jobs.forEach((j, i) => {
      const mine: Outputs = {};
      for (const name of j.outputs) {
        const blob = result[name];
        const per = blob.data.length / padded;
        // A copy, so that one caller's answer does not keep the whole batch's blob alive.
        mine[name] = { data: blob.data.slice(i * per, (i + 1) * per), shape: [1, ...blob.shape.slice(1)] };
      }
      j.resolve(mine);
    });
  }
}
