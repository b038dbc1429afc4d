import * as fs from 'node:fs';
import * as path from 'node:path';
import { VggError } from '../errors';
import type { PreprocessOptions } from '../images';

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

/** One shard's BullMQ job data: its images, as given (ids) and as absolute paths. */
export interface ShardData { job: string; index: number; first: number; ids: string[]; paths: string[] }

export const shardName = (index: number) => String(index).padStart(12, '0');
export const shardFile = (out: string, index: number) => path.join(out, 'shards', `${shardName(index)}.safetensors`);
export const shardErrors = (out: string, index: number) => path.join(out, 'shards', `${shardName(index)}.errors.jsonl`);
export const shardJobId = (id: string, index: number) => `${id}-${shardName(index)}`;

/** DIR/manifest.json, or undefined when there is none. */
export function readManifest(out: string): (JobSpec & { shardList: unknown[] }) | undefined {
  try {
    return JSON.parse(fs.readFileSync(path.join(out, 'manifest.json'), 'utf8'));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new VggError('E_IO', `cannot read ${path.join(out, 'manifest.json')}: ${(e as Error).message}`, { cause: e });
  }
}

/** readManifest for a path that may not be a job folder at all (a job id): undefined then. */
export function manifestIfFolder(dir: string): (JobSpec & { shardList: unknown[] }) | undefined {
  try {
    return fs.statSync(dir).isDirectory() ? readManifest(dir) : undefined;
  } catch {
    return undefined;
  }
}
