import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { cacheDir } from './default-weights';
import { VggError, argError } from '../errors';
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
  /** Overrides cacheDir(); the file goes to `<cacheDir>/models/<name>.safetensors`. */
  cacheDir?: string;
  /** The Hub's address (a mirror, a proxy): `HF_ENDPOINT`, else https://huggingface.co. */
  endpoint?: string;
  /** Called after every chunk received; the caller throttles what it shows. */
  onProgress?: (p: FetchProgress) => void;
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
  path: string;
  /** It was downloaded before: nothing was requested. */
  cached: boolean;
  /** The checksum the file was verified against; absent when the server sent none. */
  sha256?: string;
}

const MAX_REDIRECTS = 10;

/**
 * Downloads pretrained weights into the cache, unless they are there already: resumable (a
 * `.part` file continued with an HTTP Range request), checked against the sha256 the Hub
 * announces, and bound as a VGG of the expected config before it gets its final name.
 */
export async function fetchWeights(name: string, options: FetchOptions = {}): Promise<FetchResult> {
  // Own keys only: `constructor`, `toString` and the like are not weights.
  const repo = typeof name === 'string' && Object.hasOwn(HUB_REPOS, name) ? HUB_REPOS[name] : undefined;
  if (repo === undefined) throw argError('name', `one of ${Object.keys(HUB_REPOS).join(', ')}`, name);
  const endpoint = (options.endpoint ?? process.env.HF_ENDPOINT ?? 'https://huggingface.co').replace(/\/+$/, '');
  const url = `${endpoint}/${repo}/resolve/main/model.safetensors`;
  const dir = path.join(options.cacheDir ?? cacheDir(), 'models');
  const file = path.join(dir, `${name}.safetensors`);
  if (fs.existsSync(file)) return { path: file, cached: true };

  const part = `${file}.part`;
  await fs.promises.mkdir(dir, { recursive: true }).catch((e) => { throw ioError(dir, e); });
  const sha256 = await download(url, part, options.onProgress);
  try {
    if (sha256 !== undefined) {
      const actual = await sha256File(part);
      if (actual !== sha256) throw new VggError('E_FETCH', `${url}: checksum mismatch: expected sha256 ${sha256}, got ${actual}; the download was deleted`);
    }
    await checkArch(part, name, url);
  } catch (e) {
    // A complete but wrong file cannot be resumed into a right one.
    await fs.promises.rm(part, { force: true });
    throw e;
  }
  await fs.promises.rename(part, file).catch((e) => { throw ioError(file, e); });
  return { path: file, cached: false, sha256 };
}

/** Downloads `url` into `part`, continuing what is there; resolves to the sha256 the server announced. */
async function download(url: string, part: string, onProgress?: FetchOptions['onProgress']): Promise<string | undefined> {
  const have = fs.existsSync(part) ? fs.statSync(part).size : 0;
  const { response, sha256 } = await request(url, have);
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
    return download(url, part, onProgress);
  } else {
    await response.body?.cancel();
    throw new VggError('E_FETCH', `${url}: HTTP ${response.status} ${response.statusText}`);
  }

  let received = from;
  const out = await fs.promises.open(part, from > 0 ? 'a' : 'w').catch((e) => { throw ioError(part, e); });
  try {
    for await (const chunk of response.body!) {
      await out.write(chunk).catch((e) => { throw ioError(part, e); });
      received += chunk.length;
      onProgress?.({ url, received, total, resumedFrom: from });
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
  return sha256;
}

/**
 * GET with redirects followed by hand: the Hub answers with a redirect to its CDN, and only that
 * redirect carries the file's sha256 (X-Linked-Etag), which automatic following would hide.
 */
async function request(url: string, from: number): Promise<{ response: Response; sha256?: string }> {
  let at = url;
  let sha256: string | undefined;
  for (let hop = 0; hop <= MAX_REDIRECTS; hop++) {
    let response: Response;
    try {
      // Not gzip, which fetch() would decode, so that byte counts and ranges refer to the file
      // itself (fetch() asks for identity by itself when given a Range).
      const headers: Record<string, string> = from > 0 ? { range: `bytes=${from}-` } : { 'accept-encoding': 'identity' };
      response = await fetch(at, { redirect: 'manual', headers });
    } catch (e) {
      throw new VggError('E_FETCH', `${url}: ${reason(e)}`, { cause: e });
    }
    sha256 ??= announcedSha256(response.headers);
    const location = response.headers.get('location');
    if (response.status < 300 || response.status >= 400 || location === null) return { response, sha256 };
    await response.body?.cancel();
    at = new URL(location, at).href;
  }
  throw new VggError('E_FETCH', `${url}: more than ${MAX_REDIRECTS} redirects`);
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

function ioError(file: string, e: unknown): VggError {
  return new VggError('E_IO', `cannot write ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, { cause: e });
}
