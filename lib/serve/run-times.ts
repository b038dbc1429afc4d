/**
 * How long the engine takes to run a batch, per batch size, and how long an admitted request
 * takes to reach the queue (its body read and its image decoded): moving averages (EWMA) of
 * what the batcher has seen, so that they follow the machine as it is now (other work on the
 * cores, a slower precision) rather than figures measured once. The batcher splits its queue
 * into batches by the averages, and the admission control of `vgg serve` reads them with their
 * spread to tell how long a new request would wait.
 */
export class RunTimes {
  /** Weight of the newest run: a batch that ran twice as long moves the estimate 30% of the way. */
  static readonly WEIGHT = 0.3;
  /**
   * How many mean deviations above the average a promise allows for. On a shared CPU a batch
   * takes from 0.7x to 1.8x the average of the ones before it (the cores' other work, a
   * hypervisor taking its share), so a wait counted at the average is exceeded half the time;
   * as TCP's retransmission timer does with round trips, admission counts the average plus
   * twice the deviation, which a steady engine keeps near zero. The deviation is relative and
   * pooled over all batch sizes, since what makes batches slow slows them all alike: every batch
   * updates it, and a size that no longer runs does not keep an old one.
   */
  static readonly DEVIATIONS = 2;
  #ms = new Map<number, number>();
  #spread = 0;
  #intakeMs: number | undefined;

  /** Records a batch of `size` images (as run, padding included) that took `ms`. */
  observe(size: number, ms: number): void {
    const before = this.#ms.get(size);
    if (before !== undefined && before > 0) this.#spread = ewma(this.#spread, Math.abs(ms - before) / before);
    this.#ms.set(size, ewma(before, ms));
  }

  /**
   * Records a request that took `ms` from its admission to its image's submission. A plain
   * average, without the spread: one client's slow upload says nothing of the next request's.
   */
  observeIntake(ms: number): void {
    this.#intakeMs = ewma(this.#intakeMs, ms);
  }

  /** The average time from a request's admission to its image in the queue; undefined before any. */
  get intakeMs(): number | undefined {
    return this.#intakeMs;
  }

  /**
   * The estimated time of a batch of `size`: its own average once that size has run, before
   * that the per-image time of the nearest size that has (batch time grows about linearly
   * with the batch on a CPU; over-estimating on a GPU only refuses early until the size runs).
   * Undefined before any run.
   */
  batchMs(size: number): number | undefined {
    const own = this.#ms.get(size);
    if (own !== undefined) return own;
    let nearest: number | undefined;
    for (const s of this.#ms.keys()) {
      if (nearest === undefined || Math.abs(Math.log(s / size)) < Math.abs(Math.log(nearest / size))) nearest = s;
    }
    return nearest === undefined ? undefined : (this.#ms.get(nearest)! / nearest) * size;
  }

  /** The time a batch of `size` ends within most times: batchMs and DEVIATIONS mean deviations. */
  cautiousMs(size: number): number | undefined {
    const ms = this.batchMs(size);
    return ms === undefined ? undefined : ms * (1 + RunTimes.DEVIATIONS * this.#spread);
  }

  /**
   * The next batch out of `waiting` images of one shape: how many it takes and the size it
   * runs at. Up to maxBatch, padded (with zero images) to a power of two: each batch size is a
   * network the engine compiles once, and six sizes up to 32 stay compiled where 32 would not.
   * Where the measured run times say padding costs more than it saves (on a CPU a batch of 8
   * takes about twice a batch of 4), the batch is the power of two below instead, and the rest
   * waits for the next one.
   */
  nextBatch(waiting: number, maxBatch: number): { take: number; size: number } {
    const take = Math.min(waiting, maxBatch);
    const size = Math.min(maxBatch, 2 ** Math.ceil(Math.log2(take)));
    if (size === take) return { take, size };
    const below = 2 ** Math.floor(Math.log2(take));
    const padded = this.batchMs(size);
    const smaller = this.batchMs(below);
    if (padded !== undefined && smaller !== undefined && smaller / below < padded / take) return { take: below, size: below };
    return { take, size };
  }

  /** The batches `n` images of one shape run as, in order (nextBatch after nextBatch): the images each takes and the time it ends within most times (cautiousMs). */
  *batches(n: number, maxBatch: number): Generator<{ take: number; ms: number | undefined }> {
    while (n > 0) {
      const { take, size } = this.nextBatch(n, maxBatch);
      yield { take, ms: this.cautiousMs(size) };
      n -= take;
    }
  }

  /** The averages so far, by batch size. */
  entries(): [size: number, ms: number][] {
    return [...this.#ms.entries()].sort((a, b) => a[0] - b[0]);
  }
}

function ewma(old: number | undefined, value: number): number {
  return old === undefined ? value : old + RunTimes.WEIGHT * (value - old);
}
