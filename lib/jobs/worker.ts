import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { Job, Worker } from 'bullmq';
import type { Device, Precision } from '../engine';
import { VggError } from '../errors';
import { loadModel, type Model } from '../model';
import { Journal, journalRecords, writeJournal, writeSafetensorsRows } from '../outputs';
import type { ExtractRecord } from '../tasks';
import { bullmq, connectionOf, QUEUE, SPEC_KEY, STARTED_KEY, type RawRedis } from './redis';
import { shardErrors, shardFile, type JobSpec, type ShardData } from './spec';

/** A running shard reports the images it has extracted at most this often. */
const PROGRESS_MS = 1000;

export interface WorkerOptions {
  redis?: string;
  concurrency?: number;
  device?: Device;
  threads?: number;
  precision?: Precision;
  /** As loadModel's options: Winograd for fp32 on the CPU, the int8 calibration file. */
  winograd?: boolean;
  calibration?: string;
  /** The lease on a shard, renewed while it runs (30000 ms); a dead worker's shard is taken back after it. */
  lockDuration?: number;
  /** How often stalled (lease-expired) shards are looked for (30000 ms). */
  stalledInterval?: number;
  /** Times a shard may lose its lease before it counts as failed (5). */
  maxStalledCount?: number;
  /** A pause after each batch, to make a worker slow on purpose (tests of leases and shutdown); 0 by default. */
  batchDelayMs?: number;
  /** Called after each shard, for logs. */
  onShard?: (event: { job: string; index: number; images: number; failed: number; skipped: boolean; seconds: number }) => void;
  /**
   * Connection errors (Redis restarting), which the client retries by itself; a warning
   * (VGGNET_JOB_REDIS) for each new message by default.
   */
  onError?: (error: Error) => void;
}

export interface JobWorker {
  /** Stops taking shards, finishes the ones it has, frees its models. */
  close(): Promise<void>;
  readonly worker: Worker;
}

/**
 * Takes shards from the queue and extracts them with the job's model (loaded once per job and
 * kept until a shard of another job comes), the same engine, preprocessing and records-to-file
 * path as `vgg extract`: each shard's rows go through a Journal in a temporary folder, then to
 * DIR/shards/<n>.errors.jsonl and DIR/shards/<n>.safetensors, each written atomically, the
 * .safetensors last (its presence means the shard is done).
 */
export function runWorker(options: WorkerOptions = {}): JobWorker {
  const connection = connectionOf(options.redis);
  const specs = new Map<string, JobSpec>();
  const { device, threads, precision, winograd, calibration } = options;
  const models = new ModelCache({ device, threads, precision, winograd, calibration });
  const delayMs = options.batchDelayMs ?? 0;

  async function specOf(job: Job<ShardData>): Promise<JobSpec> {
    let spec = specs.get(job.data.job);
    if (!spec) {
      const client = await worker.client;
      const text = await client.get(SPEC_KEY(job.data.job));
      if (!text) throw new VggError('E_ARG', `job ${job.data.job} is not in Redis (its spec key ${SPEC_KEY(job.data.job)} is gone)`);
      spec = JSON.parse(text) as JobSpec;
      specs.set(spec.id, spec);
    }
    return spec;
  }

  async function processShard(job: Job<ShardData>) {
    const started = performance.now();
    const spec = await specOf(job);
    const { index, ids, paths } = job.data;
    const client = await worker.client;
    await (client as unknown as RawRedis).set(STARTED_KEY(spec.id), String(Date.now()), 'NX');
    const file = shardFile(spec.out, index);
    if (fs.statSync(file, { throwIfNoEntry: false })?.isFile()) {
      options.onShard?.({ job: spec.id, index, images: ids.length, failed: 0, skipped: true, seconds: 0 });
      return { images: ids.length, skipped: true };
    }
    const model = await models.acquire(spec.weights);
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), `vgg-shard-${spec.id}-${index}-`));
    try {
      const journal = Journal.open(tmp, spec.outputs, {}, false);
      const records = model.extract(paths, { outputs: spec.outputs, batchSize: spec.batchSize, preprocess: spec.preprocess });
      let extracted = 0;
      let reportedAt = -Infinity;
      const count = await journalRecords(withIds(records, ids), journal, {
        batchSize: spec.batchSize,
        onRecord: () => { extracted++; },
        afterBatch: async () => {
          // How far the shard is, for jobStatus's imagesRunning: at most once a second, and never
          // holding the shard up (a Redis that is restarting answers later, or not).
          if (performance.now() - reportedAt >= PROGRESS_MS) {
            reportedAt = performance.now();
            job.updateProgress(extracted).catch(() => undefined);
          }
          if (delayMs) await new Promise<void>((r) => setTimeout(r, delayMs));
        },
      });
      if (count !== ids.length) throw new VggError('E_ARG', `shard ${index}: ${count} records for ${ids.length} images`);
      writeJournal(journal, file, writeSafetensorsRows, shardErrors(spec.out, index), true);
      const seconds = (performance.now() - started) / 1000;
      options.onShard?.({ job: spec.id, index, images: journal.items, failed: journal.failed, skipped: false, seconds });
      return { images: journal.items, failed: journal.failed, seconds };
    } finally {
      models.release(spec.weights);
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  }

  const worker: Worker<ShardData> = new (bullmq().Worker<ShardData>)(QUEUE, processShard, {
    connection,
    concurrency: options.concurrency ?? 1,
    lockDuration: options.lockDuration ?? 30000,
    stalledInterval: options.stalledInterval ?? 30000,
    maxStalledCount: options.maxStalledCount ?? 5,
  });
  // Without a listener an 'error' event would crash the process; ioredis retries the connection itself.
  worker.on('error', options.onError ?? warnOnce());

  return {
    worker,
    async close() {
      await worker.close();
      await models.clear();
    },
  };
}

/** Records named by the shard's ids (as submitted) rather than the absolute paths read. */
async function* withIds(records: AsyncIterable<ExtractRecord>, ids: string[]): AsyncGenerator<ExtractRecord> {
  let at = 0;
  for await (const record of records) yield { ...record, id: ids[at++] };
}

/** A warning per distinct message: a Redis that is down repeats the same one on every retry. */
function warnOnce(): (error: Error) => void {
  const seen = new Set<string>();
  return (error) => {
    if (seen.has(error.message)) return;
    seen.add(error.message);
    process.emitWarning(`vgg job worker: ${error.message}`, { code: 'VGGNET_JOB_REDIS' });
  };
}

/** The models of the jobs a worker runs, one per weights file, freed when another job's shard comes. */
class ModelCache {
  #entries = new Map<string, { model: Promise<Model>; users: number }>();
  #options: Parameters<typeof loadModel>[1];

  constructor(options: Parameters<typeof loadModel>[1]) {
    this.#options = options;
  }

  acquire(weights: string): Promise<Model> {
    // Models of other jobs that nothing uses are freed: one job at a time is the usual case.
    for (const [key, entry] of this.#entries) {
      if (key !== weights && entry.users === 0) {
        this.#entries.delete(key);
        void entry.model.then((m) => m.dispose(), () => {});
      }
    }
    let entry = this.#entries.get(weights);
    if (!entry) {
      entry = { model: loadModel(weights, this.#options), users: 0 };
      this.#entries.set(weights, entry);
      entry.model.catch(() => this.#entries.delete(weights));
    }
    entry.users++;
    return entry.model;
  }

  release(weights: string): void {
    const entry = this.#entries.get(weights);
    if (entry) entry.users--;
  }

  async clear(): Promise<void> {
    for (const entry of this.#entries.values()) await entry.model.then((m) => m.dispose(), () => {});
    this.#entries.clear();
  }
}
