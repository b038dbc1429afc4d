import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { writeAtomicAsync } from '../files';

/**
 * The Hugging Face hub cache, laid out as huggingface_hub (Python) and transformers.js lay it
 * out, so that a file any of them downloaded is found here and the other way round:
 *
 *   <cache>/models--timm--vgg16.tv_in1k/blobs/<sha256>                      the bytes
 *   <cache>/models--timm--vgg16.tv_in1k/blobs/<sha256>.incomplete           a download under way
 *   <cache>/models--timm--vgg16.tv_in1k/snapshots/<commit>/model.safetensors -> ../../blobs/<sha256>
 *   <cache>/models--timm--vgg16.tv_in1k/refs/main                           the commit, as text
 */

/** `HF_HUB_CACHE`, else `$HF_HOME/hub`, else `$XDG_CACHE_HOME/huggingface/hub`, else `~/.cache/huggingface/hub`. */
export function hubCacheDir(): string {
  const env = process.env;
  if (env.HF_HUB_CACHE) return env.HF_HUB_CACHE;
  const home = env.HF_HOME || path.join(env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache'), 'huggingface');
  return path.join(home, 'hub');
}

export class RepoCache {
  readonly dir: string;

  /** `repo` as on the Hub: 'timm/vgg16.tv_in1k'. */
  constructor(cacheDir: string, repo: string) {
    this.dir = path.join(cacheDir, `models--${repo.split('/').join('--')}`);
  }

  blob(name: string): string {
    return path.join(this.dir, 'blobs', name);
  }

  /**
   * The cached `file` of the main branch, without any network: the snapshot refs/main names, else
   * any snapshot that has it (a cache filled offline or by hand); undefined when there is none.
   */
  find(file: string): string | undefined {
    const snapshots = path.join(this.dir, 'snapshots');
    const main = readText(path.join(this.dir, 'refs', 'main'));
    const candidates = main ? [main] : [];
    for (const rev of safeReaddir(snapshots)) if (rev !== main) candidates.push(rev);
    // existsSync follows the link: a snapshot whose blob was deleted does not count.
    return candidates.map((rev) => path.join(snapshots, rev, file)).find((at) => fs.existsSync(at));
  }

  /** Moves a complete, checked download into blobs/ and links it from the commit's snapshot; returns the snapshot path. */
  async commit(incomplete: string, blobName: string, commit: string, file: string): Promise<string> {
    const blob = this.blob(blobName);
    await fs.promises.rename(incomplete, blob);
    const snapshot = path.join(this.dir, 'snapshots', commit, file);
    await fs.promises.mkdir(path.dirname(snapshot), { recursive: true });
    // A relative link, as huggingface_hub makes, so that the cache can be moved; renamed into place, so a reader never sees none.
    const link = `${snapshot}.${process.pid}.tmp`;
    await fs.promises.rm(link, { force: true });
    await fs.promises.symlink(path.relative(path.dirname(snapshot), blob), link);
    await fs.promises.rename(link, snapshot);
    await fs.promises.mkdir(path.join(this.dir, 'refs'), { recursive: true });
    await writeAtomicAsync(path.join(this.dir, 'refs', 'main'), [Buffer.from(commit)]);
    return snapshot;
  }
}

function readText(file: string): string | undefined {
  try {
    return fs.readFileSync(file, 'utf8').trim() || undefined;
  } catch {
    return undefined;
  }
}

function safeReaddir(dir: string): string[] {
  try {
    return fs.readdirSync(dir).sort();
  } catch {
    return [];
  }
}
