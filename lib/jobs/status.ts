import * as path from 'node:path';
import { getSpec, jobLost, STARTED_KEY, withQueue } from './redis';
import { manifestIfFolder, shardJobId } from './spec';

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
  /** Images extracted by the shards running, as their workers last reported (each second); redone if a worker dies. */
  imagesRunning: number;
  imagesPerSecond: number;
  etaSeconds: number | undefined;
  failures: { index: number; attempts: number; error: string }[];
  finished: boolean;
}

/** Shards done, failed, running and waiting, images/s since the first shard started, and ETA. */
export function jobStatus(id: string, options: { redis?: string } = {}): Promise<JobStatus> {
  return withQueue(options.redis, async (queue) => {
    const spec = await getSpec(queue, id);
    const status: JobStatus = {
      id, out: spec.out, shards: spec.shards, images: spec.images, done: 0, failed: 0, running: 0, waiting: 0,
      imagesDone: 0, imagesRunning: 0, imagesPerSecond: 0, etaSeconds: undefined, failures: [], finished: false,
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
          const progress = (await queue.getJob(shardJobId(id, index)))?.progress;
          if (typeof progress === 'number') status.imagesRunning += Math.min(progress, countOf(index));
        } else if (state === 'unknown') {
          // Shards are never removed (removeOnComplete: false): one that is gone was lost with Redis's data.
          throw jobLost(id, `nothing of shard ${index}`);
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
  });
}

/** Resolves `JOB` to its output folder: a folder with a manifest.json, or a job id looked up in Redis. */
export async function jobFolder(job: string, options: { redis?: string } = {}): Promise<string> {
  if (manifestIfFolder(job)) return path.resolve(job);
  return withQueue(options.redis, async (queue) => (await getSpec(queue, job)).out);
}
