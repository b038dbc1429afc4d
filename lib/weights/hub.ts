import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { type Dispatcher, EnvHttpProxyAgent, fetch, type Response } from 'undici';
import { VggError, argError } from '../errors';
import { ioError } from '../files';
import { cacheDir as vggnetCacheDir } from './default-weights';
import { hubCacheDir, RepoCache } from './hf-cache';
import { openWeights } from './open';
import { presetArch } from '../arch/topology';

/**
 * Pretrained ImageNet weights by torchvision name: timm's copies of torchvision's weights on the
 * Hugging Face Hub, as safetensors with timm's key names.
 */
export const HUB_REPOS: Record<string, string> = {
  vgg11: 'timm/vgg11.tv_in1k',
  vgg13: 'timm/vgg13.tv_in1k',
  vgg16: 'timm/vgg16.tv_in1k',
  vgg19: 'timm/vgg19.tv_in1k',
  vgg11_bn: 'timm/vgg11_bn.tv_in1k',
  vgg13_bn: 'timm/vgg13_bn.tv_in1k',
  vgg16_bn: 'timm/vgg16_bn.tv_in1k',
  vgg19_bn: 'timm/vgg19_bn.tv_in1k',
};

export interface FetchOptions {
  /** The Hugging Face hub cache to read and fill: default hubCacheDir() (`$HF_HUB_CACHE`, `$HF_HOME/hub`, `~/.cache/huggingface/hub`). */
  cacheDir?: string;
  /** The Hub's address (a mirror, a proxy): `HF_ENDPOINT`, else https://huggingface.co. */
  endpoint?: string;
  /** Called after every chunk received; the caller throttles what it shows. */
  onProgress?: (p: FetchProgress) => void;
  /** Aborts the download (E_FETCH); what was received is kept, and the next call resumes it. */
  signal?: AbortSignal;
}

export interface FetchProgress {
  url: string;
  /** Bytes of the file on disk, including `resumedFrom`. */
  received: number;
  /** The file's size, when the server says. */
  total?: number;
  /** Bytes a previous, interrupted run had already saved. */
  resumedFrom: number;
}

export interface FetchResult {
  /** The file in the cache's snapshot of the repository (a link into its blobs/). */
  path: string;
  /** It was in the cache: nothing was requested. */
  cached: boolean;
  /** The checksum the file was verified against; absent when the server sent none. */
  sha256?: string;
  /** The file an earlier vggnet's `vgg fetch` left in `$VGGNET_CACHE/models/`, reused (linked into the hub cache when it can be). */
  reused?: string;
}

const FILE = 'model.safetensors';
const MAX_REDIRECTS = 10;

/**
 * Pretrained weights from the Hugging Face hub cache, downloaded into it first unless a file is
 * there already (from an earlier call, or from huggingface_hub in Python: nothing is requested
 * then). The download goes through HTTPS_PROXY/HTTP_PROXY (NO_PROXY honoured), is resumable
 * (`blobs/<sha256>.incomplete` continued with an HTTP Range request), checked against the sha256
 * the Hub announces, and bound as a VGG of the expected config before it gets its final name.
 */
export async function fetchWeights(name: string, options: FetchOptions = {}): Promise<FetchResult> {
  // Own keys only: `constructor`, `toString` and the like are not weights.
  const repo = typeof name === 'string' && Object.hasOwn(HUB_REPOS, name) ? HUB_REPOS[name] : undefined;
  if (repo === undefined) throw argError('name', `one of ${Object.keys(HUB_REPOS).join(', ')}`, name);
  const endpoint = (options.endpoint ?? process.env.HF_ENDPOINT ?? 'https://huggingface.co').replace(/\/+$/, '');
  const cache = new RepoCache(options.cacheDir ?? hubCacheDir(), repo);
  const found = cache.find(FILE);
  if (found) return { path: found, cached: true };
  const earlier = await reuseEarlierDownload(name, cache);
  if (earlier) return earlier;

  // Read from the environment now, so a caller that sets HTTPS_PROXY before calling is obeyed.
  const dispatcher = new EnvHttpProxyAgent();
  try {
    return await download({ url: `${endpoint}/${repo}/resolve/main/${FILE}`, name, cache, dispatcher, ...options });
  } finally {
    await dispatcher.close();
  }
}

/**
 * Before the hub cache, `vgg fetch` kept downloads in `<vggnet cache>/models/<name>.safetensors`,
 * a name given only after the sha256 and the binding were checked. Such a file is bound again
 * (a truncated or foreign one is ignored, and downloaded afresh) and hard-linked into the hub
 * cache under its sha256, in a snapshot named `main` as the commit is not known offline: then
 * neither vgg nor huggingface_hub (which finds the blob by the sha256 the Hub announces) download
 * it again. Where a link cannot be made (another file system), the file is used where it is.
 */
async function reuseEarlierDownload(name: string, cache: RepoCache): Promise<FetchResult | undefined> {
  const earlier = path.join(vggnetCacheDir(), 'models', `${name}.safetensors`);
  if (!fs.existsSync(earlier)) return undefined;
  try {
    await checkArch(earlier, name, earlier);
  } catch {
    return undefined;
  }
  const sha256 = await sha256File(earlier);
  const link = cache.blob(`${sha256}.${process.pid}.link`);
  try {
    await fs.promises.mkdir(path.dirname(link), { recursive: true });
    await fs.promises.link(earlier, link);
    return { path: await cache.commit(link, sha256, 'main', FILE), cached: true, reused: earlier };
  } catch {
    await fs.promises.rm(link, { force: true }).catch(() => undefined);
    return { path: earlier, cached: true, reused: earlier };
  }
}

interface Download extends FetchOptions {
  url: string;
  name: string;
  cache: RepoCache;
  dispatcher: Dispatcher;
}

/** Downloads into the blob's `.incomplete` file, continuing what is there, then checks and commits it. */
async function download(d: Download): Promise<FetchResult> {
  const { url } = d;
  const { response, meta, part, from: have } = await open(d);
  let from: number;
  let total: number | undefined;
  if (response.status === 206) {
    const m = /^bytes (\d+)-\d+\/(\d+|\*)$/.exec(response.headers.get('content-range') ?? '');
    if (!m || Number(m[1]) !== have) {
      await response.body?.cancel();
      throw new VggError('E_FETCH', `${url}: asked for bytes ${have}- but the server sent ${response.headers.get('content-range') ?? 'no Content-Range'}`);
    }
    from = have;
    total = m[2] === '*' ? undefined : Number(m[2]);
  } else if (response.status === 200) {
    from = 0; // a server that ignores Range sends the whole file: start over
    total = contentLength(response);
  } else if (response.status === 416 && have > 0) {
    // The part file is not shorter than the file (it changed, or a run died before renaming): start over.
    await response.body?.cancel();
    await fs.promises.rm(part, { force: true });
    return download(d);
  } else {
    await response.body?.cancel();
    throw new VggError('E_FETCH', `${url}: HTTP ${response.status} ${response.statusText}`);
  }

  let received = from;
  const out = await fs.promises.open(part, from > 0 ? 'a' : 'w').catch((e) => { throw ioError(e, `cannot write ${part}`); });
  try {
    for await (const chunk of response.body!) {
      await out.write(chunk).catch((e) => { throw ioError(e, `cannot write ${part}`); });
      received += chunk.length;
      d.onProgress?.({ url, received, total, resumedFrom: from });
    }
  } catch (e) {
    if (e instanceof VggError) throw e;
    throw new VggError('E_FETCH', `${url}: download interrupted at ${received} of ${total ?? '?'} bytes (${reason(e)}); run again to resume`, { cause: e });
  } finally {
    await out.close();
  }
  if (total !== undefined && received !== total) {
    throw new VggError('E_FETCH', `${url}: the server ended the download at ${received} of ${total} bytes; run again to resume`);
  }
  try {
    if (meta.sha256 !== undefined) {
      const actual = await sha256File(part);
      if (actual !== meta.sha256) throw new VggError('E_FETCH', `${url}: checksum mismatch: expected sha256 ${meta.sha256}, got ${actual}; the download was deleted`);
    }
    await checkArch(part, d.name, url);
  } catch (e) {
    // A complete but wrong file cannot be resumed into a right one.
    await fs.promises.rm(part, { force: true });
    throw e;
  }
  const file = await d.cache.commit(part, meta.blob, meta.commit, FILE).catch((e) => { throw ioError(e, `cannot write ${d.cache.dir}`); });
  return { path: file, cached: false, sha256: meta.sha256 };
}

interface Meta { sha256?: string; etag?: string; commit: string; blob: string }

/**
 * GET with redirects followed by hand: the Hub answers with a redirect to its CDN, and only that
 * redirect carries the file's sha256 (X-Linked-Etag) and the commit (X-Repo-Commit), which
 * automatic following would hide. They name the blob, and so the `.incomplete` file whose size
 * is where the download resumes: the CDN is asked for the rest with a Range.
 */
async function open(d: Download): Promise<{ response: Response; meta: Meta; part: string; from: number }> {
  let at = d.url;
  const meta: Partial<Meta> = {};
  let part: string | undefined;
  let from = 0;
  for (let hop = 0; hop <= MAX_REDIRECTS; hop++) {
    const response = await get(at, from, d);
    meta.sha256 ??= announcedSha256(response.headers);
    meta.etag ??= response.headers.get('etag')?.replace(/^W\//, '').replace(/"/g, '') || undefined;
    meta.commit ??= response.headers.get('x-repo-commit') ?? undefined;
    const location = response.headers.get('location');
    const redirect = response.status >= 300 && response.status < 400 && location !== null;
    if (part === undefined && (redirect || response.ok)) {
      meta.blob = meta.sha256 ?? meta.etag;
      if (meta.blob === undefined || !/^[\w.-]+$/.test(meta.blob)) {
        await response.body?.cancel();
        throw new VggError('E_FETCH', `${d.url}: the server named no version of the file (no X-Linked-Etag or ETag), so it cannot be cached`);
      }
      part = d.cache.blob(`${meta.blob}.incomplete`);
      await fs.promises.mkdir(path.dirname(part), { recursive: true }).catch((e) => { throw ioError(e, `cannot write ${path.dirname(part!)}`); });
      from = (await fs.promises.stat(part).catch(() => undefined))?.size ?? 0;
      if (!redirect && from > 0) {
        // The file came without a redirect, from the start: ask again for the rest.
        await response.body?.cancel();
        continue;
      }
    }
    if (!redirect) {
      if (part === undefined) return { response, meta: meta as Meta, part: '', from: 0 }; // an HTTP error: download() reports it
      // huggingface_hub names snapshots by commit; a server that sends none (an old mirror) gets the branch's name.
      meta.commit ??= 'main';
      return { response, meta: meta as Meta, part, from };
    }
    await response.body?.cancel();
    at = new URL(location, at).href;
  }
  throw new VggError('E_FETCH', `${d.url}: more than ${MAX_REDIRECTS} redirects`);
}

async function get(url: string, from: number, d: Download): Promise<Response> {
  // Not gzip, which fetch() would decode, so that byte counts and ranges refer to the file itself
  // (fetch() asks for identity by itself when given a Range).
  const headers: Record<string, string> = from > 0 ? { range: `bytes=${from}-` } : { 'accept-encoding': 'identity' };
  try {
    return await fetch(url, { redirect: 'manual', headers, dispatcher: d.dispatcher, signal: d.signal });
  } catch (e) {
    throw new VggError('E_FETCH', `${d.url}: ${reason(e)}`, { cause: e });
  }
}

/** The Hub gives an LFS file's sha256 as its X-Linked-Etag (or ETag); other ETags are not checksums. */
function announcedSha256(headers: Headers): string | undefined {
  for (const name of ['x-linked-etag', 'etag']) {
    const tag = headers.get(name)?.replace(/^W\//, '').replace(/"/g, '').toLowerCase();
    if (tag !== undefined && /^[0-9a-f]{64}$/.test(tag)) return tag;
  }
  return undefined;
}

function contentLength(response: Response): number | undefined {
  const length = response.headers.get('content-length');
  return length === null ? undefined : Number(length);
}

async function sha256File(file: string): Promise<string> {
  const hash = createHash('sha256');
  await pipeline(fs.createReadStream(file), hash);
  return hash.digest('hex');
}

/** Binds the download as a VGG (every tensor checked) and makes sure it is the config its name says. */
async function checkArch(file: string, name: string, url: string): Promise<void> {
  let found;
  try {
    found = (await openWeights(file)).arch;
  } catch (e) {
    throw new VggError('E_FETCH', `${url} is not a VGG weights file: ${(e as Error).message}`, { cause: e });
  }
  const wanted = presetArch(name);
  if (found.arch !== wanted.arch || found.batchNorm !== wanted.batchNorm) {
    const what = (a: { arch: string; batchNorm: boolean }) => `VGG ${a.arch}${a.batchNorm ? ' with batch norm' : ''}`;
    throw new VggError('E_FETCH', `${url} holds ${what(found)}, but ${name} is ${what(wanted)}`);
  }
}

/** fetch() wraps the network's error (ECONNREFUSED, a reset, a DNS failure) as `cause`. */
function reason(e: unknown): string {
  const cause = (e as { cause?: { message?: string } }).cause;
  return cause?.message ?? (e as Error).message;
}

