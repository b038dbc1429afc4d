/**
 * How long the engine takes to run a batch, per batch size: a moving average (EWMA) of the
 * batcher's own runs, so that it follows the machine as it is now (other work on the cores, a
 * slower precision) rather than a figure measured once. The admission control of `vgg serve`
 * reads it to tell how long a new request would wait.
 */
export class RunTimes {
  /** Weight of the newest run: a batch that ran twice as long moves the estimate 30% of the way. */
  static readonly WEIGHT = 0.3;
  #ms = new Map<number, number>();

  /** Records a batch of `size` images (as run, padding included) that took `ms`. */
  observe(size: number, ms: number): void {
    const old = this.#ms.get(size);
    this.#ms.set(size, old === undefined ? ms : old + RunTimes.WEIGHT * (ms - old));
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
