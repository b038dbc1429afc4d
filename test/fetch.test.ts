import { strict as assert } from 'node:assert';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import type { AddressInfo } from 'node:net';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { VggError } from '../lib/errors';
import { fetchWeights } from '../lib/weights/hub';
import { fixture, repack, tmpDir } from './helpers';

// The D fixture under timm's names with the metadata timm writes ({"format": "pt"}), so that the
// architecture is read off the tensors as it is for a real download.
const served = repack(fixture('D-timm.weights.safetensors'), (_, meta) => { meta.metadata = { format: 'pt' }; });
const sha256 = createHash('sha256').update(served).digest('hex');
const COMMIT = 'c0ffee0000000000000000000000000000000000';

/**
 * A stand-in for the Hub on 127.0.0.1: `resolve` answers with a redirect to a "CDN" path that
 * carries the sha256 as X-Linked-Etag, as the Hub does; the CDN honours Range and can drop the
 * connection halfway through once.
 */
class FakeHub {
  readonly server = http.createServer((req, res) => this.handle(req, res));
  /** The Range and Accept-Encoding headers of each CDN request ('' for none). */
  ranges: string[] = [];
  encodings: string[] = [];
  etag = sha256;
  dropNext = false;
  ignoreRange = false;
  resolves = 0;
  /** The names whose repository holds the file; any other gets a 404. */
  names = ['vgg16'];

  get endpoint(): string {
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  private handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    const repo = /^\/timm\/(\w+)\.tv_in1k\/resolve\/main\/model\.safetensors$/.exec(req.url!);
    if (repo && this.names.includes(repo[1])) {
      this.resolves++;
      res.writeHead(302, { location: '/cdn/model.safetensors', 'x-linked-etag': `"${this.etag}"`, 'x-linked-size': served.length, 'x-repo-commit': COMMIT }).end();
    } else if (req.url === '/cdn/model.safetensors') {
      this.ranges.push(req.headers.range ?? '');
      this.encodings.push(req.headers['accept-encoding'] ?? '');
      const m = /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
      const from = m && !this.ignoreRange ? Number(m[1]) : 0;
      if (from >= served.length) {
        res.writeHead(416, { 'content-range': `bytes */${served.length}` }).end();
        return;
      }
      const body = served.subarray(from);
      res.writeHead(m && !this.ignoreRange ? 206 : 200, {
        'content-length': body.length,
        ...(m && !this.ignoreRange ? { 'content-range': `bytes ${from}-${served.length - 1}/${served.length}` } : {}),
        etag: '"0123456789abcdef0123456789abcdef"', // a CDN's own (md5-like) tag: not a sha256
      });
      if (this.dropNext) {
        this.dropNext = false;
        res.write(body.subarray(0, body.length >> 1), () => res.destroy());
      } else {
        res.end(body);
      }
    } else {
      res.writeHead(404).end('Entry not found');
    }
  }
}

async function rejectsWith(promise: Promise<unknown>, code: string, message: RegExp): Promise<VggError> {
  try {
    await promise;
  } catch (e) {
    assert.ok(e instanceof VggError, String(e));
    assert.equal(e.code, code, e.message);
    assert.match(e.message, message);
    return e;
  }
  assert.fail('expected a rejection');
}

/**
 * An HTTP proxy on 127.0.0.1 that counts what goes through it: CONNECT tunnels (what undici's
 * proxy agent opens) and plain forwarded requests in absolute form.
 */
class CountingProxy {
  requests = 0;
  readonly server = http.createServer((req, res) => {
    this.requests++;
    const target = new URL(req.url!);
    const upstream = http.request({ host: target.hostname, port: target.port, path: target.pathname + target.search, method: req.method, headers: req.headers },
      (r) => { res.writeHead(r.statusCode!, r.headers); r.pipe(res); });
    req.pipe(upstream);
  });

  constructor() {
    this.server.on('connect', (req: http.IncomingMessage, client: net.Socket, head: Buffer) => {
      this.requests++;
      const [host, port] = req.url!.split(':');
      const upstream = net.connect(Number(port), host, () => {
        client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
        upstream.write(head);
        upstream.pipe(client);
        client.pipe(upstream);
      });
      upstream.on('error', () => client.destroy());
      client.on('error', () => upstream.destroy());
    });
  }

  get url(): string {
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }
}

/** Runs `body` with the proxy variables set as given (the others unset), then restores them. */
async function withProxyEnv<T>(vars: Record<string, string>, body: () => Promise<T>): Promise<T> {
  const names = ['HTTPS_PROXY', 'HTTP_PROXY', 'NO_PROXY', 'https_proxy', 'http_proxy', 'no_proxy'];
  const saved = names.map((n) => [n, process.env[n]] as const);
  for (const n of names) delete process.env[n];
  Object.assign(process.env, vars);
  try {
    return await body();
  } finally {
    for (const [n, v] of saved) {
      if (v === undefined) delete process.env[n];
      else process.env[n] = v;
    }
  }
}

describe('vgg fetch', () => {
  const hub = new FakeHub();
  let cacheDir: string;
  const repoDir = (name = 'vgg16') => path.join(cacheDir, `models--timm--${name}.tv_in1k`);
  const blobs = (name = 'vgg16') => path.join(repoDir(name), 'blobs');
  const snapshot = () => path.join(repoDir(), 'snapshots', COMMIT, 'model.safetensors');
  const listing = (dir: string) => (fs.existsSync(dir) ? fs.readdirSync(dir) : []);

  // An empty vggnet cache: a developer's own ~/.cache/vggnet/models/vgg16.safetensors (an earlier vgg fetch) would be reused.
  const savedVggnetCache = process.env.VGGNET_CACHE;
  before((done) => {
    process.env.VGGNET_CACHE = tmpDir();
    hub.server.listen(0, '127.0.0.1', done);
  });
  after((done) => {
    if (savedVggnetCache === undefined) delete process.env.VGGNET_CACHE;
    else process.env.VGGNET_CACHE = savedVggnetCache;
    hub.server.close(done);
  });
  beforeEach(() => {
    cacheDir = tmpDir();
    Object.assign(hub, { ranges: [], encodings: [], resolves: 0, etag: sha256, dropNext: false, ignoreRange: false, names: ['vgg16'] });
  });

  it('downloads through the redirect, verifies the sha256, binds the file, then serves it from the cache', async () => {
    const seen: number[] = [];
    const result = await fetchWeights('vgg16', { cacheDir, endpoint: hub.endpoint, onProgress: (p) => seen.push(p.received) });
    assert.deepEqual(result, { path: snapshot(), cached: false, sha256 });
    assert.ok(fs.readFileSync(result.path).equals(served));
    // huggingface_hub's layout: the bytes in blobs/ under their sha256, a relative link from the snapshot, the commit in refs/main.
    assert.deepEqual(fs.readdirSync(blobs()), [sha256]);
    assert.equal(fs.readlinkSync(result.path), `../../blobs/${sha256}`);
    assert.equal(fs.readFileSync(path.join(repoDir(), 'refs', 'main'), 'utf8'), COMMIT);
    assert.equal(seen[seen.length - 1], served.length);

    assert.deepEqual(await fetchWeights('vgg16', { cacheDir, endpoint: hub.endpoint }), { path: result.path, cached: true });
    assert.deepEqual(hub.ranges, ['']);
  });

  it('resumes an interrupted download with a Range request', async () => {
    hub.dropNext = true;
    await rejectsWith(fetchWeights('vgg16', { cacheDir, endpoint: hub.endpoint }), 'E_FETCH', /interrupted at \d+ of \d+ bytes.*run again to resume/);
    const partial = fs.statSync(path.join(blobs(), `${sha256}.incomplete`)).size;
    assert.ok(partial > 0 && partial < served.length, `${partial} of ${served.length} bytes`);

    const result = await fetchWeights('vgg16', { cacheDir, endpoint: hub.endpoint });
    assert.deepEqual(hub.ranges, ['', `bytes=${partial}-`]);
    assert.deepEqual(hub.encodings, ['identity', 'identity'], 'byte counts must be of the file, not of a gzip stream');
    assert.ok(fs.readFileSync(result.path).equals(served));
    assert.deepEqual(fs.readdirSync(blobs()), [sha256]);
  });

  it('starts over when the server ignores the Range request', async () => {
    fs.mkdirSync(blobs(), { recursive: true });
    fs.writeFileSync(path.join(blobs(), `${sha256}.incomplete`), served.subarray(0, 1000));
    hub.ignoreRange = true;
    const result = await fetchWeights('vgg16', { cacheDir, endpoint: hub.endpoint });
    assert.deepEqual(hub.ranges, ['bytes=1000-']);
    assert.ok(fs.readFileSync(result.path).equals(served));
  });

  it('starts over when the part file is as long as the file (a run died before renaming it)', async () => {
    fs.mkdirSync(blobs(), { recursive: true });
    fs.writeFileSync(path.join(blobs(), `${sha256}.incomplete`), served);
    const result = await fetchWeights('vgg16', { cacheDir, endpoint: hub.endpoint });
    assert.deepEqual(hub.ranges, [`bytes=${served.length}-`, '']);
    assert.ok(fs.readFileSync(result.path).equals(served));
  });

  it('fails with E_FETCH on a wrong checksum and leaves no file', async () => {
    hub.etag = 'ab'.repeat(32);
    await rejectsWith(fetchWeights('vgg16', { cacheDir, endpoint: hub.endpoint }), 'E_FETCH',
      new RegExp(`checksum mismatch: expected sha256 ${'ab'.repeat(32)}, got ${sha256}`));
    assert.deepEqual(listing(blobs()), []);
  });

  it('fails with E_FETCH naming the URL and the status on a 404', async () => {
    const url = `${hub.endpoint}/timm/vgg19.tv_in1k/resolve/main/model.safetensors`;
    await rejectsWith(fetchWeights('vgg19', { cacheDir, endpoint: hub.endpoint }), 'E_FETCH', new RegExp(`^${url}: HTTP 404 Not Found$`));
    assert.deepEqual(listing(blobs('vgg19')), []);
  });

  it('fails with E_FETCH when the file is another VGG than the name says, and deletes it', async () => {
    // The fixture is config D; vgg16_bn would be D with batch norm.
    hub.names = ['vgg16_bn'];
    await rejectsWith(fetchWeights('vgg16_bn', { cacheDir, endpoint: hub.endpoint }), 'E_FETCH', /holds VGG D, but vgg16_bn is VGG D with batch norm/);
    assert.deepEqual(listing(blobs('vgg16_bn')), []);
  });

  it('rejects an unknown name with E_ARG listing the known ones', async () => {
    await rejectsWith(fetchWeights('vgg17', { cacheDir }), 'E_ARG', /vgg11, vgg13, vgg16, vgg19, vgg11_bn/);
  });

  it("rejects the names of Object.prototype's properties with E_ARG, requesting nothing", async () => {
    for (const name of ['constructor', 'toString', '__proto__', 'hasOwnProperty']) {
      await rejectsWith(fetchWeights(name, { cacheDir, endpoint: hub.endpoint }), 'E_ARG', /vgg11, vgg13, vgg16, vgg19, vgg11_bn/);
    }
    assert.deepEqual(hub.ranges, []);
    assert.deepEqual(fs.readdirSync(cacheDir), []);
  });

  it('as a command prints the path on stdout and progress on stderr', async () => {
    const main = path.resolve(__dirname, '../lib/cli/main.js');
    // Not spawnSync: this process serves the download.
    const { stdout, stderr } = await promisify(execFile)(process.execPath, [main, 'fetch', 'vgg16', '--endpoint', hub.endpoint],
      { env: { ...process.env, HF_HUB_CACHE: cacheDir } });
    assert.equal(stdout, `${snapshot()}\n`);
    assert.match(stderr, new RegExp(`^vgg fetch: vgg16: ${hub.endpoint}/timm/vgg16.tv_in1k/resolve/main/model.safetensors\n`));
    assert.match(stderr, new RegExp(`vgg fetch: vgg16: 2.1 MB in [\\d.]+ s, sha256 ${sha256} verified\n$`));
  });
  it('goes through HTTP_PROXY, and around it for a host in NO_PROXY', async () => {
    const proxy = new CountingProxy();
    await new Promise<void>((r) => proxy.server.listen(0, '127.0.0.1', r));
    try {
      const result = await withProxyEnv({ HTTP_PROXY: proxy.url, HTTPS_PROXY: proxy.url }, () => fetchWeights('vgg16', { cacheDir, endpoint: hub.endpoint }));
      assert.ok(fs.readFileSync(result.path).equals(served));
      assert.ok(proxy.requests >= 1, 'the proxy saw no request');
      const through = proxy.requests;
      await withProxyEnv({ HTTP_PROXY: proxy.url, NO_PROXY: '127.0.0.1' }, () => fetchWeights('vgg16', { cacheDir: tmpDir(), endpoint: hub.endpoint }));
      assert.equal(proxy.requests, through, 'NO_PROXY: the proxy was used');
    } finally {
      proxy.server.closeAllConnections();
      await new Promise((r) => proxy.server.close(r));
    }
  });

  it("reuses a file huggingface_hub already put in the cache, without a request", async () => {
    // What `hf_hub_download("timm/vgg16.tv_in1k", "model.safetensors")` leaves behind.
    const rev = '1'.repeat(40);
    fs.mkdirSync(blobs(), { recursive: true });
    fs.writeFileSync(path.join(blobs(), sha256), served);
    fs.mkdirSync(path.join(repoDir(), 'snapshots', rev), { recursive: true });
    fs.symlinkSync(`../../blobs/${sha256}`, path.join(repoDir(), 'snapshots', rev, 'model.safetensors'));
    fs.mkdirSync(path.join(repoDir(), 'refs'));
    fs.writeFileSync(path.join(repoDir(), 'refs', 'main'), rev);
    const result = await fetchWeights('vgg16', { cacheDir, endpoint: 'http://127.0.0.1:1' });
    assert.deepEqual(result, { path: path.join(repoDir(), 'snapshots', rev, 'model.safetensors'), cached: true });
    assert.equal(hub.resolves + hub.ranges.length, 0);
  });

  it("reuses an earlier vgg fetch's $VGGNET_CACHE/models file, linked into the hub cache, without a request; ignores a truncated one", async () => {
    const vggnetCache = tmpDir();
    const earlier = path.join(vggnetCache, 'models', 'vgg16.safetensors');
    fs.mkdirSync(path.dirname(earlier));
    fs.writeFileSync(earlier, served);
    const main = path.resolve(__dirname, '../lib/cli/main.js');
    const env = { ...process.env, HF_HUB_CACHE: cacheDir, VGGNET_CACHE: vggnetCache };
    const { stdout, stderr } = await promisify(execFile)(process.execPath, [main, 'fetch', 'vgg16', '--endpoint', hub.endpoint], { env });
    assert.equal(hub.resolves + hub.ranges.length, 0, 'a request went to the hub');
    assert.equal(stderr, `vgg fetch: vgg16: reusing ${earlier} from an earlier vgg fetch, linked into the Hugging Face cache; nothing downloaded\n`);
    // huggingface_hub's layout, so Python finds the blob by the sha256 the Hub announces; the old name still works.
    const reused = path.join(repoDir(), 'snapshots', 'main', 'model.safetensors');
    assert.equal(stdout, `${reused}\n`);
    assert.equal(fs.readlinkSync(reused), `../../blobs/${sha256}`);
    assert.equal(fs.statSync(path.join(blobs(), sha256)).ino, fs.statSync(earlier).ino);
    assert.deepEqual(fs.readdirSync(blobs()), [sha256]);

    const truncated = tmpDir();
    fs.mkdirSync(path.join(truncated, 'models'));
    fs.writeFileSync(path.join(truncated, 'models', 'vgg16.safetensors'), served.subarray(0, served.length - 100));
    cacheDir = tmpDir();
    const again = await promisify(execFile)(process.execPath, [main, 'fetch', 'vgg16', '--endpoint', hub.endpoint], { env: { ...env, HF_HUB_CACHE: cacheDir, VGGNET_CACHE: truncated } });
    assert.equal(hub.resolves, 1);
    assert.ok(fs.readFileSync(again.stdout.trim()).equals(served));
  });

  it('stops on an aborted signal with E_FETCH, and the next call resumes', async () => {
    const abort = new AbortController();
    await rejectsWith(fetchWeights('vgg16', {
      cacheDir, endpoint: hub.endpoint, signal: abort.signal,
      onProgress: (p) => { if (p.received > 0) abort.abort(); },
    }), 'E_FETCH', /interrupted at \d+ of \d+ bytes.*run again to resume/);
    const result = await fetchWeights('vgg16', { cacheDir, endpoint: hub.endpoint });
    assert.ok(fs.readFileSync(result.path).equals(served));
    assert.match(hub.ranges[1], /^bytes=\d+-$/);
  });

  it('as a command with --json prints one summary object and no progress', async () => {
    const main = path.resolve(__dirname, '../lib/cli/main.js');
    const { stdout, stderr } = await promisify(execFile)(process.execPath, [main, 'fetch', 'vgg16', '--endpoint', hub.endpoint, '--json', '--quiet'],
      { env: { ...process.env, HF_HUB_CACHE: cacheDir } });
    assert.equal(stderr, '');
    const summary = JSON.parse(stdout);
    assert.deepEqual({ ...summary, seconds: 0 }, { command: 'fetch', name: 'vgg16', path: snapshot(), cached: false, bytes: served.length, seconds: 0, sha256 });
  });
});
