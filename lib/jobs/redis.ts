import type { ConnectionOptions, Queue } from 'bullmq';
import { VggError, checkPeers } from '../errors';
import type { JobSpec } from './spec';

// An optional peer dependency, loaded on first use: an application that requires vggnet for
// inference alone should not install or load a Redis client and queue library (about 130 ms).
export const bullmq = (): typeof import('bullmq') => (checkPeers('jobs'), require('bullmq'));

/** The BullMQ queue every shard of every job goes to; workers listen on it alone. */
export const QUEUE = 'vggnet-shards';
export const SPEC_KEY = (id: string) => `vggnet:job:${id}`;
export const STARTED_KEY = (id: string) => `vggnet:job:${id}:started`;
export const DEFAULT_REDIS = 'redis://127.0.0.1:6379';

/** The ioredis client underneath BullMQ's narrower interface. */
export type RawRedis = { set(key: string, value: string, nx: 'NX'): Promise<string | null> };

/** ioredis options from a redis:// URL, so that BullMQ makes its own connections. */
export function connectionOf(url = process.env.REDIS_URL ?? DEFAULT_REDIS): ConnectionOptions & { host: string; port: number } {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new VggError('E_ARG', `Expected a redis://host:port URL for --redis but received ${JSON.stringify(url)}`);
  }
  if (u.protocol !== 'redis:' && u.protocol !== 'rediss:') throw new VggError('E_ARG', `Expected a redis://host:port URL for --redis but received ${JSON.stringify(url)}`);
  return {
    host: u.hostname || '127.0.0.1',
    port: Number(u.port || 6379),
    ...(u.username ? { username: decodeURIComponent(u.username) } : {}),
    ...(u.password ? { password: decodeURIComponent(u.password) } : {}),
    ...(u.pathname.length > 1 ? { db: Number(u.pathname.slice(1)) } : {}),
    ...(u.protocol === 'rediss:' ? { tls: {} } : {}),
  };
}

/** For short-lived clients (submit, status, merge): fail soon when Redis cannot be reached rather than retry forever. */
export const clientConnection = (url?: string): ConnectionOptions => ({ // ioredis options
  ...connectionOf(url), maxRetriesPerRequest: 3, enableOfflineQueue: false,
  retryStrategy: (times: number) => (times > 5 ? null : 200 * times),
} as ConnectionOptions);

/** A short-lived queue handle, closed after `use`. */
export async function withQueue<T>(redis: string | undefined, use: (queue: Queue) => Promise<T>): Promise<T> {
  const queue = new (bullmq().Queue)(QUEUE, { connection: clientConnection(redis) });
  try {
    return await use(queue);
  } finally {
    await queue.close();
  }
}

/** A job's spec as Redis holds it. */
export async function getSpec(queue: Queue, id: string): Promise<JobSpec> {
  const text = await (await queue.client).get(SPEC_KEY(id));
  if (!text) throw jobLost(id, 'no such job');
  return JSON.parse(text) as JobSpec;
}

/** A job Redis has forgotten: a typo, or a Redis that restarted without persistence. */
export function jobLost(id: string, what: string): VggError {
  return new VggError('E_JOB_LOST', `Redis knows ${what} of job ${id}: it was never submitted to this Redis, or Redis lost it (a restart without persistence). `
    + 'Submit it again with the same vgg job submit command (shards already written to its folder are not redone), and run Redis with append-only persistence (appendonly yes)');
}
