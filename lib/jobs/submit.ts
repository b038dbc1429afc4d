import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { VggError, checkInt, checkPeers } from '../errors';
import { writeAtomic } from '../files';
import { imageList, type PreprocessOptions } from '../images';
import { SPEC_KEY, withQueue, type RawRedis } from './redis';
import { readManifest, shardErrors, shardFile, shardJobId, type JobSpec, type ShardData } from './spec';

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

/**
 * Splits the images into shards and enqueues them. The job id is a hash of the images and every
 * option that changes the output, and each shard's BullMQ id derives from it, so submitting the
 * same job again adds nothing (BullMQ ignores an id it has); a worker also skips a shard whose
 * output is already written.
 */
export async function submitJob(images: string | string[], options: SubmitOptions): Promise<SubmitResult> {
  checkPeers('jobs'); // before the manifest is written
  const outputs = options.outputs ?? ['fc7'];
  const shardSize = checkInt(options.shardSize ?? 1000, 'shardSize');
  const batchSize = checkInt(options.batchSize ?? 32, 'batchSize');
  const preprocess = options.preprocess ?? {};
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
  writeManifest(spec);

  return withQueue(options.redis, async (queue) => {
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
        const data: ShardData = { job: id, index: s, first: s * shardSize, ids: slice, paths: slice.map((p) => path.resolve(p)) };
        bulk.push({ name: id, data, opts: { ...opts, jobId: shardJobId(id, s) } });
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
  });
}

/** DIR/manifest.json with the shard list, unless the folder holds it already; another job's folder is E_ARG. */
function writeManifest(spec: JobSpec): void {
  const { id, out, shards, shardSize, images } = spec;
  const before = readManifest(out);
  if (before && before.id !== id) {
    throw new VggError('E_ARG', `${out} holds job ${before.id}, not this one (${id}); use another --out folder`);
  }
  fs.mkdirSync(path.join(out, 'shards'), { recursive: true });
  if (before) return;
  const shardList = Array.from({ length: shards }, (_, index) => ({
    index, first: index * shardSize, count: Math.min(shardSize, images - index * shardSize),
    file: path.relative(out, shardFile(out, index)), errors: path.relative(out, shardErrors(out, index)),
  }));
  writeAtomic(path.join(out, 'manifest.json'), (o) => o.write(JSON.stringify({ ...spec, shardList }, null, 1)));
}
