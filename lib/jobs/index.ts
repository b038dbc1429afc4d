import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { ConnectionOptions, Job, Queue, Worker } from 'bullmq';
import type { Device, Precision } from '../engine/device';
import { VggError } from '../errors';
import type { ExtractRecord } from '../tasks/extract';
import { loadModel, type Model } from '../engine/model';
import type { PreprocessOptions } from '../images/preprocess';
import { readSafetensorsFile, type SafetensorsFile } from '../weights/safetensors';
import { writerFor } from '../outputs';
import { Journal } from '../outputs/journal';
import type { RowSource } from '../outputs/rows';
import { writeSafetensorsRows } from '../outputs/safetensors';
import { writeAtomic } from '../files';
import { imageList } from '../images/sources';

// Loaded on first use: an application that requires vggnet for inference alone should not pay
// for a Redis client and queue library (about 130 ms of module loading) it never uses.
const bullmq = (): typeof import('bullmq') => require('bullmq');

/** The BullMQ queue every shard of every job goes to; workers listen on it alone. */
export const QUEUE = 'vggnet-shards';
const SPEC_KEY = (id: string) => `vggnet:job:${id}`;
const STARTED_KEY = (id: string) => `vggnet:job:${id}:started`;
export const DEFAULT_REDIS = 'redis://127.0.0.1:6379';

/** What every shard of a job shares: stored in Redis under vggnet:job:<id> and in DIR/manifest.json. */
export interface JobSpec {
  id: string;
  weights: string;
  weightsBytes: number;
  outputs: string[];
  batchSize: number;
  preprocess: PreprocessOptions;
  shardSize: number;
  /** The output folder (absolute): DIR/manifest.json and DIR/shards/. */
  out: string;
  shards: number;
  images: number;
}

/** The ioredis client underneath BullMQ's narrower interface. */
type RawRedis = { set(key: string, value: string, nx: 'NX'): Promise<string | null> };

interface ShardData { job: string; index: number; first: number; ids: string[]; paths: string[] }

export interface SubmitOptions {
  weights: string;
  out: string;
  outputs?: string[];
  shardSize?: number;
  batchSize?: number;
  preprocess?: PreprocessOptions;
  redis?: string;
  /** Tries per shard before it is failed for good (3), and the first retry's delay (5000 ms, doubling). */
  attempts?: number;
  backoffMs?: number;
}

export interface SubmitResult {
  id: string; shards: number; images: number; out: string;
  /** False when the job was already submitted (then nothing was added). */
  created: boolean;
  /** Shards that had failed for good and were put back in the queue by this submission. */
  retried: number;
}

/** ioredis options from a redis:// URL, so that BullMQ makes its own connections. */
export function connectionOf(url = process.env.REDIS_URL ?? DEFAULT_REDIS): ConnectionOptions & { host: string; port: number } {
  const u = new URL(url);
  if (u.protocol !== 'redis:' && u.protocol !== 'rediss:') throw new VggError('E_ARG', `--redis: expected redis://host:port, got ${url}`);
  return {
    host: u.hostname || '127.0.0.1',
    port: Number(u.port || 6379),
    ...(u.username ? { username: decodeURIComponent(u.username) } : {}),
    ...(u.password ? { password: decodeURIComponent(u.password) } : {}),
    ...(u.pathname.length > 1 ? { db: Number(u.pathname.slice(1)) } : {}),
    ...(u.protocol === 'rediss:' ? { tls: {} } : {}),
  };
}

export const shardName = (index: number) => String(index).padStart(12, '0');
export const shardFile = (out: string, index: number) => path.join(out, 'shards', `${shardName(index)}.safetensors`);
export const shardErrors = (out: string, index: number) => path.join(out, 'shards', `${shardName(index)}.errors.jsonl`);
const shardJobId = (id: string, index: number) => `${id}-${shardName(index)}`;

/**
 * Splits the images into shards and enqueues them. The job id is a hash of the images and every
 * option that changes the output, and each shard's BullMQ id derives from it, so submitting the
 * same job again adds nothing (BullMQ ignores an id it has); a worker also skips a shard whose
 * output is already written.
 */
export async function submitJob(images: string | string[], options: SubmitOptions): Promise<SubmitResult> {
  const outputs = options.outputs ?? ['fc7'];
  const shardSize = options.shardSize ?? 1000;
  const batchSize = options.batchSize ?? 32;
  const preprocess = options.preprocess ?? {};
  if (!Number.isSafeInteger(shardSize) || shardSize < 1) throw new VggError('E_ARG', `shardSize: expected a positive integer, got ${shardSize}`);
  const ids: string[] = [];
  if (typeof images === 'string') for await (const file of (await imageList(images))()) ids.push(file);
  else ids.push(...images);
  if (!ids.length) throw new VggError('E_ARG', `${String(images)} names no images`);
  const weights = path.resolve(options.weights);
  let weightsBytes: number;
  try {
    weightsBytes = fs.statSync(weights).size;
  } catch (e) {
    throw new VggError('E_IO', `cannot read ${weights}: ${(e as NodeJS.ErrnoException).code}`, { cause: e });
  }
  const out = path.resolve(options.out);
  const hash = createHash('sha256');
  hash.update(JSON.stringify({ weights, weightsBytes, outputs, batchSize, preprocess, shardSize, out }));
  for (const id of ids) hash.update(`\n${id}`);
  const id = hash.digest('hex').slice(0, 16);
  const shards = Math.ceil(ids.length / shardSize);
  const spec: JobSpec = { id, weights, weightsBytes, outputs, batchSize, preprocess, shardSize, out, shards, images: ids.length };

  const manifestFile = path.join(out, 'manifest.json');
  const before = readManifest(out);
  if (before && before.id !== id) {
    throw new VggError('E_ARG', `${out} holds job ${before.id}, not this one (${id}); use another --out folder`);
  }
  fs.mkdirSync(path.join(out, 'shards'), { recursive: true });
  if (!before) {
    const shardList = Array.from({ length: shards }, (_, index) => ({
      index, first: index * shardSize, count: Math.min(shardSize, ids.length - index * shardSize),
      file: path.relative(out, shardFile(out, index)), errors: path.relative(out, shardErrors(out, index)),
    }));
    writeAtomic(manifestFile, (o) => o.write(JSON.stringify({ ...spec, shardList }, null, 1)));
  }

  const queue = new (bullmq().Queue<ShardData>)(QUEUE, { connection: clientConnection(options.redis) });
  try {
    const client = await queue.client;
    const created = (await (client as unknown as RawRedis).set(SPEC_KEY(id), JSON.stringify(spec), 'NX')) === 'OK';
    const opts = {
      attempts: options.attempts ?? 3,
      backoff: { type: 'exponential', delay: options.backoffMs ?? 5000 },
      removeOnComplete: false, removeOnFail: false,
    };
    for (let index = 0; index < shards; index += 100) {
      const bulk = [];
      for (let s = index; s < Math.min(shards, index + 100); s++) {
        const slice = ids.slice(s * shardSize, (s + 1) * shardSize);
        bulk.push({ name: id, data: { job: id, index: s, first: s * shardSize, ids: slice, paths: slice.map((p) => path.resolve(p)) }, opts: { ...opts, jobId: shardJobId(id, s) } });
      }
      await queue.addBulk(bulk);
    }
    // Submitting again also retries the shards that failed for good (after their cause was fixed).
    let retried = 0;
    if (!created) {
      for (let s = 0; s < shards; s++) {
        if (await queue.getJobState(shardJobId(id, s)) === 'failed') {
          await (await queue.getJob(shardJobId(id, s)))?.retry('failed', { resetAttemptsMade: true });
          retried++;
        }
      }
    }
    return { id, shards, images: ids.length, created, out, retried };
  } finally {
    await queue.close();
  }
}

function readManifest(out: string): (JobSpec & { shardList: unknown[] }) | undefined {
  try {
    return JSON.parse(fs.readFileSync(path.join(out, 'manifest.json'), 'utf8'));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new VggError('E_IO', `cannot read ${path.join(out, 'manifest.json')}: ${(e as Error).message}`, { cause: e });
  }
}

/** For short-lived clients (submit, status, merge): fail soon when Redis cannot be reached rather than retry forever. */
const clientConnection = (url?: string): ConnectionOptions => ({ // ioredis options

  ...connectionOf(url), maxRetriesPerRequest: 3, enableOfflineQueue: false,
  retryStrategy: (times: number) => (times > 5 ? null : 200 * times),
} as ConnectionOptions);

// ---- worker ------------------------------------------------------------------

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
  /** Called after each shard, for logs. */
  onShard?: (event: { job: string; index: number; images: number; failed: number; skipped: boolean; seconds: number }) => void;
}

export interface JobWorker {
  /** Stops taking shards, finishes the ones it has, frees its models. */
  close(): Promise<void>;
  readonly worker: Worker;
}

/**
 * Takes shards from the queue and extracts them with the job's model (loaded once per job and
 * kept until a shard of another job comes), the same engine, preprocessing and writers as `vgg
 * extract`: each shard's rows go through a Journal in a temporary folder, then to
 * DIR/shards/<n>.errors.jsonl and DIR/shards/<n>.safetensors, each written atomically, the
 * .safetensors last (its presence means the shard is done).
 */
export function runWorker(options: WorkerOptions = {}): JobWorker {
  const connection = connectionOf(options.redis);
  const specs = new Map<string, JobSpec>();
  const models = new Map<string, { model: Promise<Model>; users: number }>();
  const engine = {
    ...(options.device !== undefined ? { device: options.device } : {}),
    ...(options.threads !== undefined ? { threads: options.threads } : {}),
    ...(options.precision !== undefined ? { precision: options.precision } : {}),
    ...(options.winograd !== undefined ? { winograd: options.winograd } : {}),
    ...(options.calibration !== undefined ? { calibration: options.calibration } : {}),
  };
  const delayMs = Number(process.env.VGGNET_JOBS_TEST_DELAY_MS ?? 0); // test hook: slows each batch

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

  async function acquire(spec: JobSpec): Promise<Model> {
    // Models of other jobs that nothing uses are freed: one job at a time is the usual case.
    for (const [key, entry] of models) {
      if (key !== spec.weights && entry.users === 0) {
        models.delete(key);
        void entry.model.then((m) => m.dispose(), () => {});
      }
    }
    let entry = models.get(spec.weights);
    if (!entry) {
      entry = { model: loadModel(spec.weights, engine), users: 0 };
      models.set(spec.weights, entry);
      entry.model.catch(() => models.delete(spec.weights));
    }
    entry.users++;
    return entry.model;
  }

  const release = (spec: JobSpec) => {
    const entry = models.get(spec.weights);
    if (entry) entry.users--;
  };

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
    const model = await acquire(spec);
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), `vgg-shard-${spec.id}-${index}-`));
    try {
      const journal = Journal.open(tmp, spec.outputs, {}, false);
      let at = 0;
      let batch: ExtractRecord[] = [];
      for await (const record of model.extract(paths, { outputs: spec.outputs, batchSize: spec.batchSize, preprocess: spec.preprocess })) {
        batch.push({ ...record, id: ids[at++] });
        if (batch.length === spec.batchSize) {
          journal.add(batch);
          batch = [];
          if (delayMs) await new Promise((r) => setTimeout(r, delayMs));
        }
      }
      journal.add(batch);
      journal.flush();
      if (at !== ids.length) throw new VggError('E_ARG', `shard ${index}: ${at} records for ${ids.length} images`);
      writeAtomic(shardErrors(spec.out, index), (o) => {
        for (const failure of journal.errors()) o.write(`${JSON.stringify(failure)}\n`);
      });
      writeSafetensorsRows(file, journal);
      const seconds = (performance.now() - started) / 1000;
      options.onShard?.({ job: spec.id, index, images: journal.items, failed: journal.failed, skipped: false, seconds });
      return { images: journal.items, failed: journal.failed, seconds };
    } finally {
      release(spec);
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
  // Connection errors (Redis restarting) are retried by ioredis; without a listener they would crash the process.
  worker.on('error', () => {});

  return {
    worker,
    async close() {
      await worker.close();
      for (const entry of models.values()) await entry.model.then((m) => m.dispose(), () => {});
      models.clear();
    },
  };
}

// ---- status ------------------------------------------------------------------

export interface JobStatus {
  id: string;
  out: string;
  shards: number;
  images: number;
  done: number;
  failed: number;
  running: number;
  waiting: number;
  imagesDone: number;
  imagesPerSecond: number;
  etaSeconds: number | undefined;
  failures: { index: number; attempts: number; error: string }[];
  finished: boolean;
}

async function getSpec(queue: Queue, id: string): Promise<JobSpec> {
  const text = await (await queue.client).get(SPEC_KEY(id));
  if (!text) throw new VggError('E_ARG', `no job ${id} in Redis`);
  return JSON.parse(text) as JobSpec;
}

/** Shards done, failed, running and waiting, images/s since the first shard started, and ETA. */
export async function jobStatus(id: string, options: { redis?: string } = {}): Promise<JobStatus> {
  const queue = new (bullmq().Queue<ShardData>)(QUEUE, { connection: clientConnection(options.redis) });
  try {
    const spec = await getSpec(queue, id);
    const status: JobStatus = {
      id, out: spec.out, shards: spec.shards, images: spec.images, done: 0, failed: 0, running: 0, waiting: 0,
      imagesDone: 0, imagesPerSecond: 0, etaSeconds: undefined, failures: [], finished: false,
    };
    const countOf = (index: number) => Math.min(spec.shardSize, spec.images - index * spec.shardSize);
    for (let first = 0; first < spec.shards; first += 200) {
      const indexes = Array.from({ length: Math.min(200, spec.shards - first) }, (_, i) => first + i);
      const states = await Promise.all(indexes.map((i) => queue.getJobState(shardJobId(id, i))));
      for (const [k, state] of states.entries()) {
        const index = indexes[k];
        if (state === 'completed') {
          status.done++;
          status.imagesDone += countOf(index);
        } else if (state === 'failed') {
          status.failed++;
          const job = await queue.getJob(shardJobId(id, index));
          status.failures.push({ index, attempts: job?.attemptsMade ?? 0, error: job?.failedReason ?? 'unknown' });
        } else if (state === 'active') {
          status.running++;
        } else {
          status.waiting++;
        }
      }
    }
    const started = Number(await (await queue.client).get(STARTED_KEY(id)));
    if (started && status.imagesDone) {
      status.imagesPerSecond = status.imagesDone / Math.max(0.001, (Date.now() - started) / 1000);
      status.etaSeconds = (spec.images - status.imagesDone) / status.imagesPerSecond;
    }
    status.finished = status.done + status.failed === spec.shards;
    return status;
  } finally {
    await queue.close();
  }
}

/** Resolves `JOB` to its output folder: a folder with a manifest.json, or a job id looked up in Redis. */
export async function jobFolder(job: string, options: { redis?: string } = {}): Promise<string> {
  if (readManifestSafe(job)) return path.resolve(job);
  const queue = new (bullmq().Queue)(QUEUE, { connection: clientConnection(options.redis) });
  try {
    return (await getSpec(queue, job)).out;
  } finally {
    await queue.close();
  }
}

const readManifestSafe = (dir: string) => {
  try {
    return fs.statSync(dir).isDirectory() ? readManifest(dir) : undefined;
  } catch {
    return undefined;
  }
};

// ---- merge -------------------------------------------------------------------

/** The shards of a finished job as one RowSource, shard after shard: input order. One shard file is held at a time. */
class ShardRows implements RowSource {
  readonly blobs: string[];
  readonly rows: number;
  readonly shapes: Record<string, number[]> | undefined;
  readonly #files: string[];

  constructor(files: string[], blobs: string[]) {
    this.#files = files;
    this.blobs = blobs;
    let rows = 0;
    let shapes: Record<string, number[]> | undefined;
    for (const file of files) {
      const st = readSafetensorsFile(file);
      const n = this.#idsOf(st).length;
      rows += n;
      if (n && !shapes) shapes = Object.fromEntries(blobs.map((b) => [b, tensor(st, b).shape.slice(1)]));
    }
    this.rows = rows;
    this.shapes = shapes;
  }

  #idsOf(st: SafetensorsFile): string[] {
    return JSON.parse(st.metadata.ids ?? '[]') as string[];
  }

  *ids(): Iterable<string> {
    for (const file of this.#files) yield* this.#idsOf(readSafetensorsFile(file));
  }

  *blobData(blob: string): Iterable<Uint8Array> {
    for (const file of this.#files) {
      const st = readSafetensorsFile(file);
      if (!this.#idsOf(st).length) continue;
      const e = tensor(st, blob);
      yield st.bytes.subarray(e.begin, e.end);
    }
  }

  *rowValues(): Iterable<{ id: string; values: Record<string, Float32Array> }> {
    for (const file of this.#files) {
      const st = readSafetensorsFile(file);
      const ids = this.#idsOf(st);
      const data = Object.fromEntries(this.blobs.map((b) => {
        const e = tensor(st, b);
        return [b, new Float32Array(st.bytes.slice(e.begin, e.end).buffer)];
      }));
      for (const [r, id] of ids.entries()) {
        yield { id, values: Object.fromEntries(this.blobs.map((b) => {
          const per = data[b].length / ids.length;
          return [b, data[b].subarray(r * per, (r + 1) * per)];
        })) };
      }
    }
  }
}

function tensor(st: SafetensorsFile, blob: string) {
  const e = st.tensors.get(blob);
  if (!e || e.dtype !== 'F32') throw new VggError('E_WEIGHTS_FORMAT', `${st.source} has no F32 tensor ${blob}`);
  return e;
}

export interface MergeResult { rows: number; failed: number; errorsFile: string | undefined }

/**
 * Joins the shards of a finished job into one features file (.safetensors, .npy or .jsonl, by
 * the writers of `vgg extract`), in input order, and their failures into FILE.errors.jsonl.
 */
export async function mergeJob(job: string, file: string, options: { redis?: string } = {}): Promise<MergeResult> {
  const dir = await jobFolder(job, options);
  const manifest = readManifest(dir);
  if (!manifest) throw new VggError('E_IO', `${dir} has no manifest.json`);
  const write = writerFor(file, manifest.outputs);
  const files = Array.from({ length: manifest.shards }, (_, i) => shardFile(dir, i));
  const missing = files.filter((f) => !fs.existsSync(f));
  if (missing.length) throw new VggError('E_ARG', `job ${manifest.id} is not finished: ${missing.length} of ${manifest.shards} shards are not done (first: ${missing[0]})`);
  const rows = new ShardRows(files, manifest.outputs);
  write(file, rows);
  const errorsFile = `${file}.errors.jsonl`;
  let failed = 0;
  const pieces = Array.from({ length: manifest.shards }, (_, i) => fs.readFileSync(shardErrors(dir, i)));
  for (const p of pieces) failed += p.toString('utf8').split('\n').filter(Boolean).length;
  if (failed) writeAtomic(errorsFile, (o) => { for (const p of pieces) o.write(p); });
  else fs.rmSync(errorsFile, { force: true });
  return { rows: rows.rows, failed, errorsFile: failed ? errorsFile : undefined };
}
