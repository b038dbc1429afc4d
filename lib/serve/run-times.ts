/**
 * How long the engine takes to run a batch, per batch size, and how long an admitted request
 * takes to reach the queue (its body read and its image decoded): moving averages (EWMA) of
 * what the batcher has seen, so that they follow the machine as it is now (other work on the
 * cores, a slower precision) rather than figures measured once. The admission control of
 * `vgg serve` reads them to tell how long a new request would wait.
 */
export class RunTimes {
  /** Weight of the newest run: a batch that ran twice as long moves the estimate 30% of the way. */
  static readonly WEIGHT = 0.3;
  #ms = new Map<number, number>();
  #intakeMs: number | undefined;

  /** Records a batch of `size` images (as run, padding included) that took `ms`. */
  observe(size: number, ms: number): void {
    this.#ms.set(size, ewma(this.#ms.get(size), ms));
  }

  /** Records a request that took `ms` from its admission to its image's submission. */
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

  /** The averages so far, by batch size. */
  entries(): [size: number, ms: number][] {
    return [...this.#ms.entries()].sort((a, b) => a[0] - b[0]);
  }
}

function ewma(old: number | undefined, value: number): number {
  return old === undefined ? value : old + RunTimes.WEIGHT * (value - old);
}
