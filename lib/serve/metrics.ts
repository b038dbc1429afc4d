import type * as PromClient from 'prom-client';
import type { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { checkPeers } from '../errors';
import type { Batcher } from './batcher';

// Loaded on first use, with the rest of the HTTP service.
const prom = (): typeof PromClient => (checkPeers('serve'), require('prom-client'));

/** The Prometheus metrics of one server, in a registry of its own (or the one given). */
export class ServeMetrics {
  readonly registry: Registry;
  readonly requests: Counter<'route' | 'status'>;
  readonly latency: Histogram<'route'>;
  readonly batchSize: Histogram;
  readonly queueDepth: Gauge;
  readonly images: Counter;
  readonly imagesPerSecond: Gauge;
  /** Requests refused with 503 E_BUSY, by reason: queue_full, latency (--max-latency-ms), shutdown. */
  readonly refused: Counter<'reason'>;
  readonly estimatedWait: Gauge;
  readonly batchSeconds: Gauge<'size'>;
  #batcher: Batcher | undefined;
  /** Completion times (ms) of the images of the last `windowMs`, for images/s. */
  #done: number[] = [];
  #windowMs: number;

  constructor(registry: Registry = new (prom().Registry)(), prefix = 'vggnet_', windowMs = 10_000) {
    this.registry = registry;
    this.#windowMs = windowMs;
    const { Counter, Gauge, Histogram } = prom();
    const registers = [registry];
    this.requests = new Counter({ name: `${prefix}requests_total`, help: 'HTTP requests by route and status', labelNames: ['route', 'status'], registers });
    this.latency = new Histogram({
      name: `${prefix}request_duration_seconds`,
      help: 'Request latency by route, from arrival to answer',
      labelNames: ['route'],
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers,
    });
    this.batchSize = new Histogram({
      name: `${prefix}batch_size`,
      help: 'Images per engine batch',
      buckets: [1, 2, 4, 8, 16, 32, 64, 128, 256],
      registers,
    });
    this.queueDepth = new Gauge({ name: `${prefix}queue_depth`, help: 'Images waiting for a batch', registers });
    this.images = new Counter({ name: `${prefix}images_total`, help: 'Images run through the network', registers });
    const self = this;
    this.imagesPerSecond = new Gauge({
      name: `${prefix}images_per_second`,
      help: `Images run through the network per second, over the last ${windowMs / 1000} s`,
      registers,
      collect() {
        self.#trim(Date.now());
        this.set(self.#done.length / (self.#windowMs / 1000));
      },
    });
    this.refused = new Counter({ name: `${prefix}refused_total`, help: 'Requests refused with 503 E_BUSY, by reason (queue_full, latency, shutdown)', labelNames: ['reason'], registers });
    this.estimatedWait = new Gauge({
      name: `${prefix}estimated_wait_seconds`,
      help: 'How long a request arriving now is estimated to wait for its answer (NaN before any batch has run)',
      registers,
      collect() {
        this.set((self.#batcher?.estimateMs() ?? NaN) / 1000);
      },
    });
    this.batchSeconds = new Gauge({
      name: `${prefix}batch_run_seconds`,
      help: 'Moving average of the run time of a batch, by batch size as run (padding included)',
      labelNames: ['size'],
      registers,
      collect() {
        for (const [size, ms] of self.#batcher?.runTimes.entries() ?? []) this.set({ size: String(size) }, ms / 1000);
      },
    });
  }

  /** The batcher whose estimates the gauges show. */
  watch(batcher: Batcher): void {
    this.#batcher = batcher;
  }

  /** Records a batch of `n` images that just finished. */
  imagesDone(n: number): void {
    const now = Date.now();
    this.images.inc(n);
    for (let i = 0; i < n; i++) this.#done.push(now);
    this.#trim(now);
  }

  #trim(now: number): void {
    let drop = 0;
    while (drop < this.#done.length && this.#done[drop] < now - this.#windowMs) drop++;
    if (drop > 0) this.#done.splice(0, drop);
  }
}
