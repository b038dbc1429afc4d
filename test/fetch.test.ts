import { strict as assert } from 'node:assert';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
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
  /** The names whose repository holds the file; any other gets a 404. */
  names = ['vgg16'];

  get endpoint(): string {
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  private handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    const repo = /^\/timm\/(\w+)\.tv_in1k\/resolve\/main\/model\.safetensors$/.exec(req.url!);
    if (repo && this.names.includes(repo[1])) {
      res.writeHead(302, { location: '/cdn/model.safetensors', 'x-linked-etag': `"${this.etag}"`, 'x-linked-size': served.length }).end();
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

describe('vgg fetch', () => {
  const hub = new FakeHub();
  let cacheDir: string;
  const models = () => path.join(cacheDir, 'models');

  before((done) => { hub.server.listen(0, '127.0.0.1', done); });
  after((done) => { hub.server.close(done); });
  beforeEach(() => {
    cacheDir = tmpDir();
    Object.assign(hub, { ranges: [], encodings: [], etag: sha256, dropNext: false, ignoreRange: false, names: ['vgg16'] });
  });

  it('downloads through the redirect, verifies the sha256, binds the file, then serves it from the cache', async () => {
    const seen: number[] = [];
    const result = await fetchWeights('vgg16', { cacheDir, endpoint: hub.endpoint, onProgress: (p) => seen.push(p.received) });
    assert.deepEqual(result, { path: path.join(models(), 'vgg16.safetensors'), cached: false, sha256 });
    assert.ok(fs.readFileSync(result.path).equals(served));
    assert.deepEqual(fs.readdirSync(models()), ['vgg16.safetensors']);
    assert.equal(seen[seen.length - 1], served.length);

    assert.deepEqual(await fetchWeights('vgg16', { cacheDir, endpoint: hub.endpoint }), { path: result.path, cached: true });
    assert.deepEqual(hub.ranges, ['']);
  });

  it('resumes an interrupted download with a Range request', async () => {
    hub.dropNext = true;
    await rejectsWith(fetchWeights('vgg16', { cacheDir, endpoint: hub.endpoint }), 'E_FETCH', /interrupted at \d+ of \d+ bytes.*run again to resume/);
    const partial = fs.statSync(path.join(models(), 'vgg16.safetensors.part')).size;
    assert.ok(partial > 0 && partial < served.length, `${partial} of ${served.length} bytes`);

    const result = await fetchWeights('vgg16', { cacheDir, endpoint: hub.endpoint });
    assert.deepEqual(hub.ranges, ['', `bytes=${partial}-`]);
    assert.deepEqual(hub.encodings, ['identity', 'identity'], 'byte counts must be of the file, not of a gzip stream');
    assert.ok(fs.readFileSync(result.path).equals(served));
    assert.deepEqual(fs.readdirSync(models()), ['vgg16.safetensors']);
  });

  it('starts over when the server ignores the Range request', async () => {
    fs.mkdirSync(models());
    fs.writeFileSync(path.join(models(), 'vgg16.safetensors.part'), served.subarray(0, 1000));
    hub.ignoreRange = true;
    const result = await fetchWeights('vgg16', { cacheDir, endpoint: hub.endpoint });
    assert.deepEqual(hub.ranges, ['bytes=1000-']);
    assert.ok(fs.readFileSync(result.path).equals(served));
  });

  it('starts over when the part file is as long as the file (a run died before renaming it)', async () => {
    fs.mkdirSync(models());
    fs.writeFileSync(path.join(models(), 'vgg16.safetensors.part'), served);
    const result = await fetchWeights('vgg16', { cacheDir, endpoint: hub.endpoint });
    assert.deepEqual(hub.ranges, [`bytes=${served.length}-`, '']);
    assert.ok(fs.readFileSync(result.path).equals(served));
  });

  it('fails with E_FETCH on a wrong checksum and leaves no file', async () => {
    hub.etag = 'ab'.repeat(32);
    await rejectsWith(fetchWeights('vgg16', { cacheDir, endpoint: hub.endpoint }), 'E_FETCH',
      new RegExp(`checksum mismatch: expected sha256 ${'ab'.repeat(32)}, got ${sha256}`));
    assert.deepEqual(fs.readdirSync(models()), []);
  });

  it('fails with E_FETCH naming the URL and the status on a 404', async () => {
    const url = `${hub.endpoint}/timm/vgg19.tv_in1k/resolve/main/model.safetensors`;
    await rejectsWith(fetchWeights('vgg19', { cacheDir, endpoint: hub.endpoint }), 'E_FETCH', new RegExp(`^${url}: HTTP 404 Not Found$`));
    assert.deepEqual(fs.readdirSync(models()), []);
  });

  it('fails with E_FETCH when the file is another VGG than the name says, and deletes it', async () => {
    // The fixture is config D; vgg16_bn would be D with batch norm.
    hub.names = ['vgg16_bn'];
    await rejectsWith(fetchWeights('vgg16_bn', { cacheDir, endpoint: hub.endpoint }), 'E_FETCH', /holds VGG D, but vgg16_bn is VGG D with batch norm/);
    assert.deepEqual(fs.readdirSync(models()), []);
  });

  it('rejects an unknown name with E_ARG listing the known ones', async () => {
    await rejectsWith(fetchWeights('vgg17', { cacheDir }), 'E_ARG', /vgg11, vgg13, vgg16, vgg19, vgg11_bn/);
  });

  it("rejects the names of Object.prototype's properties with E_ARG, requesting nothing", async () => {
    for (const name of ['constructor', 'toString', '__proto__', 'hasOwnProperty']) {
      await rejectsWith(fetchWeights(name, { cacheDir, endpoint: hub.endpoint }), 'E_ARG', /vgg11, vgg13, vgg16, vgg19, vgg11_bn/);
    }
    assert.deepEqual(hub.ranges, []);
    assert.ok(!fs.existsSync(models()));
  });

  it('as a command prints the path on stdout and progress on stderr', async () => {
    const main = path.resolve(__dirname, '../lib/cli/main.js');
    // Not spawnSync: this process serves the download.
    const { stdout, stderr } = await promisify(execFile)(process.execPath, [main, 'fetch', 'vgg16', '--endpoint', hub.endpoint],
      { env: { ...process.env, VGGNET_CACHE: cacheDir } });
    assert.equal(stdout, `${path.join(models(), 'vgg16.safetensors')}\n`);
    assert.match(stderr, new RegExp(`^vgg fetch: vgg16: ${hub.endpoint}/timm/vgg16.tv_in1k/resolve/main/model.safetensors\n`));
    assert.match(stderr, new RegExp(`vgg fetch: vgg16: 2.1 MB in \\d+ s, sha256 ${sha256} verified\n$`));
  });
});
