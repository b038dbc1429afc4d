import { VggError, checkInt } from '../errors';
import type { Outputs, RunOptions } from '../engine';
import type { Tensor } from '../tensor';
import { RunTimes } from './run-times';

/** What the batcher needs of a model: model.run (a Model, or a wrapper around one). */
export interface BatchRunner {
  run(input: Tensor, options?: RunOptions): Promise<Outputs>;
}

export interface BatcherOptions {
  /** Most images in one model.run; 32 by default. */
  maxBatch?: number;
  /** How long the first queued image waits for others before its batch runs; 5 ms by default. */
  maxDelayMs?: number;
  /** Most images waiting (admitted, not yet running); an image past it is E_BUSY. 256 by default. */
  maxQueue?: number;
  /**
   * Admission control: an image whose answer is estimated to come later than this (the batch
   * running, the images ahead, its own batch, at the measured run times) is E_BUSY at once,
   * with `retryAfterMs`; one that would run at once is always admitted. None by default: every
   * image waits its turn.
   */
  maxLatencyMs?: number;
  /** Called with each batch's size as it starts (metrics, tests). */
  onBatch?: (size: number) => void;
  /** Called with the queue depth whenever it changes. */
  onQueueDepth?: (depth: number) => void;
  /** Called with the reason of each refusal (metrics). */
  onRefuse?: (reason: RefusalReason) => void;
}

/** Why an image was refused: the queue holds --max-queue images, or it would wait past --max-latency-ms. */
export type RefusalReason = 'queue_full' | 'latency';

/** Places in the queue held for a request's images while its body is read and decoded. */
export interface Admission {
  /** Gives back the places not used by a submit (the request failed or ended); idempotent. */
  release(): void;
}

export interface SubmitOptions {
  /** Blobs wanted for this image. */
  outputs: string[];
  /** Aborting it while the image waits removes it from the queue (rejects with the reason); once its batch runs, the answer is dropped. */
  signal?: AbortSignal;
  /** The place admit() held for this image: it is not checked again. Without one, submit admits the image itself. */
  admission?: Admission;
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
 * slice of the batch's blobs. Admission (admit, or submit itself) refuses an image with E_BUSY
 * when the queue is full or, with `maxLatencyMs`, when its answer would come too late.
 */
export class Batcher {
  readonly maxBatch: number;
  readonly maxDelayMs: number;
  readonly maxQueue: number;
  readonly maxLatencyMs: number | undefined;
  /** The measured time of a batch, per size (padding included). */
  readonly runTimes = new RunTimes();
  #runner: BatchRunner;
  #queue: Job[] = [];
  #timer: NodeJS.Timeout | undefined;
  #running: Promise<void> | undefined;
  #closing = false;
  #onBatch?: (size: number) => void;
  #onQueueDepth?: (depth: number) => void;
  #onRefuse?: (reason: RefusalReason) => void;
  /** Images admitted whose submit has not come yet (their requests are being read or decoded). */
  #reserved = 0;
  /** The batch running: its size as run and when it started (performance.now()). */
  #runningSize = 0;
  #runningSince = 0;
  /** Each admission's taking of one place (true if it had one left), out of the callers' reach. */
  #places = new WeakMap<Admission, () => boolean>();

  constructor(runner: BatchRunner, options: BatcherOptions = {}) {
    this.#runner = runner;
    this.maxBatch = checkInt(options.maxBatch ?? 32, 'maxBatch');
    this.maxDelayMs = checkInt(options.maxDelayMs ?? 5, 'maxDelayMs', { min: 0 });
    this.maxQueue = checkInt(options.maxQueue ?? 256, 'maxQueue');
    this.maxLatencyMs = options.maxLatencyMs === undefined ? undefined : checkInt(options.maxLatencyMs, 'maxLatencyMs');
    this.#onBatch = options.onBatch;
    this.#onQueueDepth = options.onQueueDepth;
    this.#onRefuse = options.onRefuse;
  }

  /** Images waiting for a batch (not counting the batch running). */
  get depth(): number {
    return this.#queue.length;
  }

  /**
   * Holds places for `images` images about to be submitted, or throws E_BUSY (the queue is
   * full, or they would wait past maxLatencyMs): a server asks before reading a request's body,
   * so that a refusal costs nothing. Each submit with the admission takes one of its places.
   */
  admit(images = 1): Admission {
    checkInt(images, 'images');
    const refusal = this.#refusal(images);
    if (refusal) throw refusal;
    let held = images;
    this.#reserved += images;
    const admission: Admission = { release: () => { this.#reserved -= held; held = 0; } };
    this.#places.set(admission, () => {
      if (held === 0) return false;
      held--;
      this.#reserved--;
      return true;
    });
    return admission;
  }

  /**
   * How long from now an image submitted now (with `images - 1` others) is estimated to have
   * its answer: the rest of the batch running, the batches of the images admitted before it
   * and its own, at the measured run times (all images counted as one shape). Undefined
   * before any batch has run.
   */
  estimateMs(images = 1): number | undefined {
    let ms = 0;
    if (this.#running) {
      const running = this.runTimes.batchMs(this.#runningSize);
      if (running === undefined) return undefined;
      ms += Math.max(0, running - (performance.now() - this.#runningSince));
    }
    let n = this.#queue.length + this.#reserved + images;
    // Full batches first (never padded), then the rest as #start would split it.
    const full = Math.floor(n / this.maxBatch);
    if (full > 0) {
      const batch = this.runTimes.batchMs(this.maxBatch);
      if (batch === undefined) return undefined;
      ms += full * batch;
      n -= full * this.maxBatch;
    }
    while (n > 0) {
      const { take, size } = this.#nextBatch(n);
      const batch = this.runTimes.batchMs(size);
      if (batch === undefined) return undefined;
      ms += batch;
      n -= take;
    }
    return ms;
  }

  /** Queues one image [1, 3, h, w]; resolves to its blobs, each with a leading dimension of 1. */
  submit(input: Tensor, { outputs, signal, admission }: SubmitOptions): Promise<Outputs> {
    if (input.shape.length !== 4 || input.shape[0] !== 1) {
      return Promise.reject(new VggError('E_SHAPE', `Expected one image [1, 3, h, w] but received shape [${input.shape.join(', ')}]`));
    }
    if (signal?.aborted) return Promise.reject(signal.reason);
    const admitted = admission !== undefined && this.#places.get(admission)?.() === true;
    const refusal = admitted ? undefined : this.#refusal(1);
    if (refusal) return Promise.reject(refusal);
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

  /** Why `images` more images cannot be admitted now, or undefined. */
  #refusal(images: number): VggError | undefined {
    const ahead = this.#queue.length + this.#reserved;
    if (ahead + images > this.maxQueue) {
      this.#onRefuse?.('queue_full');
      return new VggError('E_BUSY', `the queue is full (${ahead} images waiting, at most ${this.maxQueue}); retry later`);
    }
    // An image that would run at once is never refused for time: waiting cannot make it sooner,
    // and its batch measures the engine again (one slower than the limit would otherwise shut
    // the server for good).
    if (this.maxLatencyMs === undefined || (ahead === 0 && !this.#running)) return undefined;
    const ms = this.estimateMs(images);
    if (ms === undefined || ms <= this.maxLatencyMs) return undefined;
    this.#onRefuse?.('latency');
    const retryAfterMs = ms - this.maxLatencyMs;
    return new VggError('E_BUSY', `the answer would take about ${Math.round(ms)} ms (${ahead} images waiting), more than the limit of ${this.maxLatencyMs} ms; retry in ${Math.ceil(retryAfterMs / 1000)} s`, { retryAfterMs });
  }

  /**
   * The next batch out of `waiting` images of one shape: how many it takes and the size it
   * runs at. Up to maxBatch, padded (with zero images) to a power of two: each batch size is a
   * network the engine compiles once, and six sizes up to 32 stay compiled where 32 would not.
   * Where the measured run times say padding costs more than it saves (on a CPU a batch of 8
   * takes about twice a batch of 4), the batch is the power of two below instead, and the rest
   * waits for the next one.
   */
  #nextBatch(waiting: number): { take: number; size: number } {
    const take = Math.min(waiting, this.maxBatch);
    const size = Math.min(this.maxBatch, 2 ** Math.ceil(Math.log2(take)));
    if (size === take) return { take, size };
    const below = 2 ** Math.floor(Math.log2(take));
    const padded = this.runTimes.batchMs(size);
    const smaller = this.runTimes.batchMs(below);
    if (padded !== undefined && smaller !== undefined && smaller / below < padded / take) return { take: below, size: below };
    return { take, size };
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
    const { take, size } = this.#nextBatch(this.#queue.filter((j) => j.key === key).length);
    const jobs: Job[] = [];
    this.#queue = this.#queue.filter((j) => {
      if (jobs.length < take && j.key === key) {
        jobs.push(j);
        return false;
      }
      return true;
    });
    for (const j of jobs) if (j.onAbort) j.signal!.removeEventListener('abort', j.onAbort);
    this.#onQueueDepth?.(this.#queue.length);
    this.#onBatch?.(jobs.length);
    this.#runningSize = size;
    this.#runningSince = performance.now();
    this.#running = this.#runBatch(jobs, size).finally(() => {
      this.#running = undefined;
      this.#schedule();
    });
  }

  async #runBatch(jobs: Job[], padded: number): Promise<void> {
    const outputs = [...new Set(jobs.flatMap((j) => j.outputs))];
    const [, c, h, w] = jobs[0].input.shape;
    const size = c * h * w;
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
      this.runTimes.observe(padded, performance.now() - this.#runningSince);
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
