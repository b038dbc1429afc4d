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
  /**
   * How long an image that finds the engine free waits for others before its batch runs; 5 ms
   * by default. Images queued behind a running batch have had their wait: they run as it ends.
   */
  maxDelayMs?: number;
  /** Most images waiting (admitted, not yet running); an image past it is E_BUSY. 256 by default. */
  maxQueue?: number;
  /**
   * Admission control: an image whose answer is estimated to come later than this (the batch
   * running, the images ahead, its own batch, at the measured run times, from when its request
   * reaches the queue), or that would make an image admitted before it miss its own deadline,
   * is E_BUSY at once, with `retryAfterMs`; one that would run at once is always admitted.
   * None by default: every image waits its turn.
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
  /** When its answer is due (performance.now()): admitted at + maxLatencyMs, Infinity without it. */
  deadline: number;
  /** When it was queued (performance.now()). */
  queuedAt: number;
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
  /** The deadlines of the images admitted whose submit has not come yet (their requests are being read or decoded). */
  #reserved: number[] = [];
  /** The batch running: its size as run and when it started (performance.now()). */
  #runningSize = 0;
  #runningSince = 0;
  /** Each admission's taking of one place (its deadline, undefined if it had none left), out of the callers' reach. */
  #places = new WeakMap<Admission, () => number | undefined>();
  /** When the next batch could first have started (the engine free, an image queued); undefined while none could. */
  #readyAt: number | undefined;
  /** When the last batch ended (performance.now()). */
  #freedAt = -Infinity;
  /**
   * When the clients refused for time were told to come back (performance.now()), those still
   * ahead: a client refused now is told to come after them, so that a crowd refused together
   * comes back spread out at the pace the queue drains, rather than all at once to be refused again.
   */
  #promised: number[] = [];

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
    const admittedAt = performance.now();
    const deadline = admittedAt + (this.maxLatencyMs ?? Infinity);
    for (let i = 0; i < images; i++) this.#reserved.push(deadline);
    const admission: Admission = {
      release: () => {
        if (held === 0) return;
        for (; held > 0; held--) this.#unreserve(deadline);
        // A batch held for these images need not wait any more.
        this.#schedule();
      },
    };
    this.#places.set(admission, () => {
      if (held === 0) return undefined;
      held--;
      this.#unreserve(deadline);
      this.runTimes.observeIntake(performance.now() - admittedAt);
      return deadline;
    });
    return admission;
  }

  #unreserve(deadline: number): void {
    this.#reserved.splice(this.#reserved.indexOf(deadline), 1);
  }

  /**
   * How long from now `images` images admitted now are estimated to have their answers: the
   * rest of the batch running, the batches of the images admitted before them and their own,
   * at the measured run times with their spread (RunTimes.cautiousMs: a promise kept most times,
   * not half of them; all images counted as one shape). Their own request reaches the
   * queue at the measured intake time (reading and decoding): where that is after the engine
   * frees, the next batch waits for them, up to a one-image batch's time, and past that they
   * run after it. Undefined before any batch has run.
   */
  estimateMs(images = 1): number | undefined {
    const free = this.#freeInMs();
    if (free === undefined) return undefined;
    const ahead = this.#queue.length + this.#reserved.length;
    const ready = this.runTimes.intakeMs ?? 0;
    if (ahead === 0 || ready <= free + this.#companyMs() + (this.runTimes.batchMs(1) ?? 0)) {
      const batches = this.#batchesMs(ahead + images);
      return batches === undefined ? undefined : Math.max(free, ready) + batches;
    }
    const before = this.#batchesMs(ahead);
    const own = this.#batchesMs(images);
    return before === undefined || own === undefined ? undefined : Math.max(free + before, ready) + own;
  }

  /**
   * How long the next batch waits for company once the engine is free: maxDelayMs, or nothing
   * where its first image was queued behind a running batch (it has had its wait).
   */
  #companyMs(): number {
    const first = this.#queue[0];
    return first && (this.#running || first.queuedAt <= this.#freedAt) ? 0 : this.maxDelayMs;
  }

  /** How long until the batch running ends, most times (RunTimes.cautiousMs): 0 if none runs, undefined if its size has no measured time. */
  #freeInMs(): number | undefined {
    if (!this.#running) return 0;
    const running = this.runTimes.cautiousMs(this.#runningSize);
    return running === undefined ? undefined : Math.max(0, running - (performance.now() - this.#runningSince));
  }

  /** The run time of `n` images of one shape, in batches as the run times split them. */
  #batchesMs(n: number): number | undefined {
    let total = 0;
    for (const { ms } of this.runTimes.batches(n, this.maxBatch)) {
      if (ms === undefined) return undefined;
      total += ms;
    }
    return total;
  }

  /** Queues one image [1, 3, h, w]; resolves to its blobs, each with a leading dimension of 1. */
  submit(input: Tensor, { outputs, signal, admission }: SubmitOptions): Promise<Outputs> {
    if (input.shape.length !== 4 || input.shape[0] !== 1) {
      return Promise.reject(new VggError('E_SHAPE', `Expected one image [1, 3, h, w] but received shape [${input.shape.join(', ')}]`));
    }
    if (signal?.aborted) return Promise.reject(signal.reason);
    const admitted = admission === undefined ? undefined : this.#places.get(admission)?.();
    const refusal = admitted === undefined ? this.#refusal(1) : undefined;
    if (refusal) return Promise.reject(refusal);
    const deadline = admitted ?? performance.now() + (this.maxLatencyMs ?? Infinity);
    return new Promise<Outputs>((resolve, reject) => {
      const job: Job = { input, outputs, deadline, queuedAt: performance.now(), key: input.shape.join('x'), resolve, reject, signal };
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
    const ahead = this.#queue.length + this.#reserved.length;
    if (ahead + images > this.maxQueue) {
      this.#onRefuse?.('queue_full');
      return new VggError('E_BUSY', `the queue is full (${ahead} images waiting, at most ${this.maxQueue}); retry later`);
    }
    // An image that would run at once is never refused for time: waiting cannot make it sooner,
    // and its batch measures the engine again (one slower than the limit would otherwise shut
    // the server for good).
    if (this.maxLatencyMs === undefined || (ahead === 0 && !this.#running)) return undefined;
    const ms = this.estimateMs(images);
    if (ms === undefined || (ms <= this.maxLatencyMs && !this.#delaysOthers(images))) return undefined;
    this.#onRefuse?.('latency');
    const retryAfterMs = this.#promise(images, ms);
    return new VggError('E_BUSY', `the answer would take about ${Math.round(ms)} ms (${ahead} images waiting), more than the limit of ${this.maxLatencyMs} ms; retry in ${Math.ceil(retryAfterMs / 1000)} s`, { retryAfterMs });
  }

  /**
   * Whether `images` more would make an image admitted before them later than its deadline (or
   * later than the latest already is): joining a batch makes it run longer, so a batch that
   * would end in time for the images already in it might not with more. A batch of 4 and 1 on a
   * CPU, say: the 1 was admitted to run alone, and newcomers joining it would make it a batch of
   * 4 that ends too late for it. The images run in batches as the run times split them, in order.
   */
  #delaysOthers(images: number): boolean {
    const now = performance.now();
    const deadlines = [...this.#queue.map((j) => j.deadline), ...this.#reserved];
    const late = (n: number) => {
      let t = this.#freeInMs() ?? 0;
      let worst = 0;
      let i = 0;
      for (const { take, ms } of this.runTimes.batches(n, this.maxBatch)) {
        if (i >= deadlines.length) break;
        t += ms ?? 0;
        for (const d of deadlines.slice(i, i + take)) worst = Math.max(worst, now + t - d);
        i += take;
      }
      return worst;
    };
    return late(deadlines.length + images) > late(deadlines.length) + 1;
  }

  /**
   * When a request refused for time (its answer estimated at `ms`) should come back: once the
   * queue will have drained enough for it and for the refused clients told to come back before
   * it, counted as queued ahead. At most maxBatch of those are counted, so that clients that
   * retry at once, each refusal adding one, cannot push the others' retries far out.
   */
  #promise(images: number, ms: number): number {
    const now = performance.now();
    this.#promised = this.#promised.filter((at) => at > now);
    const behind = this.estimateMs(images + Math.min(this.#promised.length, this.maxBatch)) ?? ms;
    const retryAfterMs = Math.max(ms, behind) - this.maxLatencyMs!;
    if (this.#promised.length < this.maxBatch) this.#promised.push(now + retryAfterMs);
    return retryAfterMs;
  }

  /**
   * Starts the next batch when it is full, or once the first image has waited maxDelayMs for
   * company (at once when it was queued behind the batch that just ended). With maxLatencyMs,
   * past that, while images admitted are still being read and decoded, it waits for them up to a
   * one-image batch's time (what running one of them alone after would cost), since the
   * admission counted them in it. Without it, nothing was promised and the engine never waits
   * (on a CPU a fuller batch is not faster per image).
   */
  #schedule(): void {
    if (this.#queue.length === 0) this.#readyAt = undefined;
    if (this.#running || this.#queue.length === 0) return;
    const now = performance.now();
    this.#readyAt ??= now;
    const full = this.#queue.filter((j) => j.key === this.#queue[0].key).length >= this.maxBatch;
    const hold = this.maxLatencyMs !== undefined && this.#reserved.length > 0 ? this.runTimes.batchMs(1) ?? 0 : 0;
    const waitMs = full || this.#closing ? 0 : this.#readyAt + this.#companyMs() + hold - now;
    if (waitMs <= 0) {
      this.#start();
    } else {
      // Anew each time: an image queued or a place given back can make the wait shorter.
      clearTimeout(this.#timer);
      this.#timer = setTimeout(() => {
        this.#timer = undefined;
        this.#schedule();
      }, waitMs);
    }
  }

  #start(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#readyAt = undefined;
    if (this.#running || this.#queue.length === 0) return;
    const key = this.#queue[0].key;
    const { take, size } = this.runTimes.nextBatch(this.#queue.filter((j) => j.key === key).length, this.maxBatch);
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
    this.#running = this.#runBatch(jobs, size).then((deliver) => {
      this.#running = undefined;
      this.#freedAt = performance.now();
      // The next batch goes to the engine before this one's answers are sliced and sent (their
      // JSON and writes take milliseconds a batch, which the engine would otherwise sit out).
      this.#schedule();
      deliver();
    });
  }

  /** Runs a batch; resolves, once the engine is done with it, to what hands out its answers. */
  async #runBatch(jobs: Job[], padded: number): Promise<() => void> {
    const outputs = [...new Set(jobs.flatMap((j) => j.outputs))];
    const [, c, h, w] = jobs[0].input.shape;
    const size = c * h * w;
    let result: Outputs;
    try {
      let data = jobs[0].input.data;
      if (padded > 1) {
        data = new Float32Array(padded * size);
        jobs.forEach((j, i) => data.set(j.input.data, i * size));
      }
      result = await this.#runner.run({ data, shape: [padded, c, h, w] }, { outputs });
      this.runTimes.observe(padded, performance.now() - this.#runningSince);
    } catch (e) {
      return () => jobs.forEach((j) => j.reject(e));
    }
    return () => jobs.forEach((j, i) => {
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
