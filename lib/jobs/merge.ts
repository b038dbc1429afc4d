import * as fs from 'node:fs';
import { VggError } from '../errors';
import { ioError } from '../files';
import { writeFailures, writerFor, type FailedImage, type RowSource } from '../outputs';
import { readSafetensorsFile, type SafetensorsFile } from '../weights';
import { jobFolder } from './status';
import { readManifest, shardErrors, shardFile } from './spec';

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
  const failed = writeFailures(errorsFile, shardFailures(dir, manifest.shards));
  return { rows: rows.rows, failed, errorsFile: failed ? errorsFile : undefined };
}

/** Every shard's failures, shard after shard. */
function* shardFailures(dir: string, shards: number): Generator<FailedImage> {
  for (let i = 0; i < shards; i++) {
    const file = shardErrors(dir, i);
    let text: string;
    try {
      text = fs.readFileSync(file, 'utf8');
    } catch (e) {
      throw ioError(e, `cannot read ${file}`);
    }
    for (const line of text.split('\n')) if (line) yield JSON.parse(line) as FailedImage;
  }
}
