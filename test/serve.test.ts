// vgg serve: the HTTP service on loopback with the small config-D fixture. Every route, the
// dynamic batching (answers checked against single-image runs), every fault with its status
// and code, a soak of bad bodies mixed into good traffic, and SIGTERM through the CLI.
import { strict as assert } from 'node:assert';
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import sharp from 'sharp';
import { loadModel, type Model } from '../lib/model';
import type { Outputs, RunOptions } from '../lib/engine';
import type { VggError } from '../lib/errors';
import { preprocess } from '../lib/images/preprocess';
import { parseSafetensors, readF32 } from '../lib/weights/safetensors';
import type { Tensor } from '../lib/tensor';
import { createServer, vggnetPlugin, type ServeModel, type ServeOptions, type VggnetServer } from '../lib/serve';
import { fixture, relError } from './helpers';
import { moduleEnv } from './modules';

const WEIGHTS = fixture('D.weights.safetensors');
const MAIN = path.resolve(__dirname, '../lib/cli/main.js');

/** A distinct small PNG: a gradient whose colours depend on the seed. */
async function makeImage(seed: number, width = 64 + (seed % 5) * 8, height = 48 + (seed % 7) * 8): Promise<Buffer> {
  const pixels = Buffer.alloc(width * height * 3);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const at = (y * width + x) * 3;
      pixels[at] = (x * (seed + 3) + y) & 255;
      pixels[at + 1] = (y * (seed + 5) + seed * 37) & 255;
      pixels[at + 2] = ((x ^ y) * (seed + 1)) & 255;
    }
  }
  return sharp(pixels, { raw: { width, height, channels: 3 } }).png().toBuffer();
}

/** A model whose runs can be held at a gate or slowed down, and which counts the images it ran. */
class GatedModel implements ServeModel {
  images = 0;
  /** Added to each run, per image of the batch: a slower machine, without relying on this one's speed. */
  delayPerImageMs = 0;
  /** Runs started (waiting at the gate or done). */
  started = 0;
  #gate: Promise<void> = Promise.resolve();
  #open: () => void = () => {};
  constructor(readonly model: Model) {}
  get info() { return this.model.info; }
  blobNames(head?: 'fixed' | 'dense') { return this.model.blobNames(head); }
  async run(input: Tensor, options?: RunOptions): Promise<Outputs> {
    this.started++;
    await this.#gate;
    if (this.delayPerImageMs > 0) await new Promise((r) => setTimeout(r, this.delayPerImageMs * input.shape[0]));
    this.images += input.shape[0];
    return this.model.run(input, options);
  }
  hold(): void { this.#gate = new Promise((resolve) => { this.#open = resolve; }); }
  release(): void { this.#open(); this.#gate = Promise.resolve(); }
}

interface Started { app: VggnetServer; url: string }
const running: VggnetServer[] = [];

async function start(model: ServeModel, options: ServeOptions = {}): Promise<Started> {
  const app = createServer(model, options);
  running.push(app);
  const url = await app.listen({ port: 0, host: '127.0.0.1' });
  await app.vggnet.warm();
  return { app, url };
}

async function stop(app: VggnetServer): Promise<void> {
  running.splice(running.indexOf(app), 1);
  await app.close();
}

async function post(url: string, body: Buffer | string | undefined, headers: Record<string, string> = {}, signal?: AbortSignal) {
  const res = await fetch(url, { method: 'POST', body, headers: { 'content-type': 'image/png', ...headers }, signal });
  const bytes = Buffer.from(await res.arrayBuffer());
  const json = () => JSON.parse(bytes.toString('utf8'));
  return { status: res.status, headers: res.headers, bytes, json };
}

async function assertError(r: Awaited<ReturnType<typeof post>>, status: number, code: string) {
  assert.equal(r.status, status, r.bytes.toString('utf8').slice(0, 300));
  const body = r.json();
  assert.equal(body.error.code, code, JSON.stringify(body));
  assert.equal(typeof body.error.message, 'string');
}

async function until(condition: () => boolean, what: string, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

describe('vgg serve', function () {
  let model: Model;
  let images: Buffer[];
  /** Single-image fc7 / pool5 / prob of images[i], as model.run gives them. */
  let singles: Outputs[];

  before(async () => {
    model = await loadModel(WEIGHTS, { threads: 2 });
    images = await Promise.all(Array.from({ length: 8 }, (_, i) => makeImage(i)));
    singles = [];
    for (const img of images) singles.push(await model.run(await preprocess(img), { outputs: ['fc7', 'pool5', 'prob'] }));
  });

  after(async () => {
    for (const app of running.splice(0)) await app.close();
    await model.dispose();
  });

  describe('routes', () => {
    let s: Started;
    before(async () => { s = await start(model); });
    after(async () => { await stop(s.app); });

    it('GET /healthz and /readyz', async () => {
      const h = await fetch(`${s.url}/healthz`);
      assert.equal(h.status, 200);
      assert.deepEqual(await h.json(), { status: 'ok' });
      const r = await fetch(`${s.url}/readyz`);
      assert.equal(r.status, 200);
      assert.deepEqual(await r.json(), { status: 'ready' });
    });

    it('POST /v1/features answers JSON equal to a single-image run', async () => {
      const r = await post(`${s.url}/v1/features?outputs=fc7,pool5`, images[0]);
      assert.equal(r.status, 200);
      const { outputs } = r.json();
      assert.deepEqual(Object.keys(outputs), ['fc7', 'pool5']);
      for (const name of ['fc7', 'pool5']) {
        assert.deepEqual(outputs[name].shape, singles[0][name].shape);
        assert.ok(relError(outputs[name].data, singles[0][name].data) < 1e-5, name);
      }
    });

    it('POST /v1/features defaults to fc7 and takes multipart', async () => {
      const form = new FormData();
      form.append('note', 'ignored');
      form.append('image', new Blob([images[1]], { type: 'image/png' }), 'x.png');
      const res = await fetch(`${s.url}/v1/features`, { method: 'POST', body: form });
      assert.equal(res.status, 200);
      const { outputs } = await res.json() as { outputs: Record<string, { data: number[] }> };
      assert.deepEqual(Object.keys(outputs), ['fc7']);
      assert.ok(relError(outputs.fc7.data, singles[1].fc7.data) < 1e-5);
    });

    it('POST /v1/features with Accept: application/octet-stream answers float32 with X-Shape', async () => {
      const r = await post(`${s.url}/v1/features?outputs=pool5`, images[2], { accept: 'application/octet-stream' });
      assert.equal(r.status, 200);
      assert.equal(r.headers.get('content-type'), 'application/octet-stream');
      assert.equal(r.headers.get('x-shape'), singles[2].pool5.shape.join(','));
      const data = new Float32Array(r.bytes.buffer.slice(r.bytes.byteOffset, r.bytes.byteOffset + r.bytes.length));
      assert.ok(relError(data, singles[2].pool5.data) < 1e-5);
    });

    it('POST /v1/features with Accept: application/safetensors answers a safetensors file', async () => {
      const r = await post(`${s.url}/v1/features?outputs=fc7,pool5`, images[3], { accept: 'application/safetensors' });
      assert.equal(r.status, 200);
      const file = parseSafetensors(new Uint8Array(r.bytes), 'response');
      for (const name of ['fc7', 'pool5']) {
        const entry = file.tensors.get(name)!;
        assert.deepEqual(entry.shape, singles[3][name].shape);
        assert.ok(relError(readF32(file, entry), singles[3][name].data) < 1e-5);
      }
    });

    it('POST /v1/classify answers the labels of model.classify', async () => {
      const r = await post(`${s.url}/v1/classify?top=3`, images[4]);
      assert.equal(r.status, 200);
      const { classes } = r.json();
      const expected = await model.classify(images[4], { top: 3 });
      assert.deepEqual(classes.map((c: { index: number }) => c.index), expected.map((c) => c.index));
      assert.deepEqual(classes.map((c: { label: string }) => c.label), expected.map((c) => c.label));
      for (const [i, c] of classes.entries()) assert.ok(Math.abs(c.prob - expected[i].prob) < 1e-5);
      const d = await post(`${s.url}/v1/classify`, images[4]);
      assert.equal(d.json().classes.length, 5);
    });

    it('GET /metrics has requests, latency, batch sizes, queue depth and images/s', async () => {
      const res = await fetch(`${s.url}/metrics`);
      assert.equal(res.status, 200);
      const text = await res.text();
      assert.match(text, /vggnet_requests_total\{route="\/v1\/features",status="200"\} \d+/);
      assert.match(text, /vggnet_request_duration_seconds_bucket\{le="[\d.]+",route="\/v1\/classify"\}/);
      assert.match(text, /vggnet_batch_size_count \d+/);
      assert.match(text, /vggnet_queue_depth 0/);
      assert.match(text, /vggnet_images_per_second [\d.]+/);
      assert.match(text, /vggnet_images_total \d+/);
    });

    it('an unknown route is a JSON 404', async () => {
      await assertError(await post(`${s.url}/v1/nothing`, images[0]), 404, 'E_ARG');
    });
  });

  // Each in an app of its own (a child process), as the app's fastify and @fastify/multipart
  // resolve there: fastify 4 apps have @fastify/multipart 8 (installed here as fastify4-multipart).
  for (const [major, fastifyPackage, modules] of [[5, 'fastify', {}], [4, 'fastify4', { '@fastify/multipart': 'fastify4-multipart' }]] as const) {
    it(`vggnetPlugin mounts the routes under a prefix of a fastify ${major} app, leaving its other routes alone`, async () => {
      const child = spawn(process.execPath, ['-r', path.resolve(__dirname, 'modules.js'), path.resolve(__dirname, 'fastify-app.js'), fastifyPackage],
        { env: { ...process.env, ...moduleEnv(modules) }, stdio: ['ignore', 'pipe', 'pipe'] });
      let stderr = '';
      child.stderr!.on('data', (d) => { stderr += d; });
      try {
        const [version, url] = await new Promise<string[]>((resolve, reject) => {
          child.stdout!.once('data', (d: Buffer) => resolve(d.toString().trim().split(' ')));
          child.once('exit', () => reject(new Error(`the fastify ${major} app exited: ${stderr}`)));
        });
        assert.equal(Number(version.split('.')[0]), major);
        const echo = await fetch(`${url}/echo`, { method: 'POST', body: '{"a":1}', headers: { 'content-type': 'application/json' } });
        assert.deepEqual(await echo.json(), { got: { a: 1 } });
        const r = await post(`${url}/vgg/v1/features?outputs=fc7`, images[7]);
        assert.equal(r.status, 200);
        assert.ok(relError(r.json().outputs.fc7.data, singles[7].fc7.data) < 1e-5);
        const form = new FormData();
        form.append('image', new Blob([images[6]], { type: 'image/png' }), 'x.png');
        const m = await fetch(`${url}/vgg/v1/features`, { method: 'POST', body: form });
        assert.equal(m.status, 200);
        assert.ok(relError(((await m.json()) as { outputs: { fc7: { data: number[] } } }).outputs.fc7.data, singles[6].fc7.data) < 1e-5);
        await assertError(await post(`${url}/vgg/v1/features`, 'nope'), 400, 'E_IMAGE');
        const ready = async () => (await fetch(`${url}/vgg/readyz`)).status;
        const end = Date.now() + 10_000;
        while (await ready() !== 200 && Date.now() < end) await new Promise((res) => setTimeout(res, 20));
        assert.equal(await ready(), 200);
        assert.match(await (await fetch(`${url}/vgg/metrics`)).text(), /vggnet_images_total [1-9]/);
      } finally {
        child.kill('SIGTERM');
      }
    });
  }

  it('vggnetPlugin declares the fastify versions of package.json\'s peer range and stays encapsulated', () => {
    const meta = (vggnetPlugin as unknown as Record<symbol, unknown>)[Symbol.for('plugin-meta')] as { fastify: string; name: string };
    const pkg = JSON.parse(fs.readFileSync(path.resolve(__dirname, '../../package.json'), 'utf8')) as { peerDependencies: Record<string, string> };
    assert.equal(meta.fastify, pkg.peerDependencies.fastify);
    assert.equal(meta.name, 'vggnet');
    // Its parsers and error handler stay its own (the echo route above shows it too).
    assert.ok(!(vggnetPlugin as unknown as Record<symbol, unknown>)[Symbol.for('skip-override')]);
  });

  it('/readyz is 503 until the warm-up run is done', async () => {
    const gated = new GatedModel(model);
    gated.hold();
    const app = createServer(gated);
    running.push(app);
    const url = await app.listen({ port: 0, host: '127.0.0.1' });
    const before = await fetch(`${url}/readyz`);
    assert.equal(before.status, 503);
    assert.equal(((await before.json()) as { error: { code: string } }).error.code, 'E_BUSY');
    assert.equal((await fetch(`${url}/healthz`)).status, 200);
    gated.release();
    await app.vggnet.warm();
    assert.equal((await fetch(`${url}/readyz`)).status, 200);
    await stop(app);
  });

  it('batches concurrent distinct images into one run and answers each caller its own slice', async () => {
    const sizes: number[] = [];
    const s = await start(model, { maxBatch: 8, maxDelayMs: 1000, onBatch: (n) => sizes.push(n) });
    try {
      const answers = await Promise.all(images.map((img) => post(`${s.url}/v1/features?outputs=fc7,prob`, img)));
      assert.deepEqual(sizes, [8]);
      for (const [i, r] of answers.entries()) {
        assert.equal(r.status, 200);
        const { outputs } = r.json();
        assert.deepEqual(outputs.fc7.shape, [1, model.info.fcHidden]);
        assert.ok(relError(outputs.fc7.data, singles[i].fc7.data) < 1e-4, `image ${i} fc7`);
        assert.ok(relError(outputs.prob.data, singles[i].prob.data) < 1e-4, `image ${i} prob`);
      }
      // Each answer is its own image's: no two distinct images got the same features.
      assert.notDeepEqual(answers[0].json().outputs.fc7.data, answers[1].json().outputs.fc7.data);
      const metrics = await (await fetch(`${s.url}/metrics`)).text();
      assert.match(metrics, /vggnet_batch_size_bucket\{le="4"\} 0/);
      assert.match(metrics, /vggnet_batch_size_bucket\{le="8"\} 1/);
      assert.match(metrics, /vggnet_batch_size_sum 8/);
      // Mixed requests in one batch: classify and features share it.
      sizes.length = 0;
      const [f, c] = await Promise.all([
        post(`${s.url}/v1/features?outputs=pool5`, images[5]),
        post(`${s.url}/v1/classify?top=2`, images[6]),
      ]);
      assert.deepEqual(sizes, [2]);
      assert.ok(relError(f.json().outputs.pool5.data, singles[5].pool5.data) < 1e-4);
      assert.equal(c.json().classes.length, 2);
    } finally {
      await stop(s.app);
    }
  });

  describe('faults', () => {
    let s: Started;
    let gated: GatedModel;
    const ok = async () => {
      const r = await post(`${s.url}/v1/features`, images[0]);
      assert.equal(r.status, 200);
      assert.ok(relError(r.json().outputs.fc7.data, singles[0].fc7.data) < 1e-4);
    };

    before(async () => {
      gated = new GatedModel(model);
      s = await start(gated, { maxBatch: 1, maxDelayMs: 0, maxQueue: 2, timeoutMs: 2000, bodyLimit: 256 * 1024, maxPixels: 512 * 512 });
    });
    after(async () => {
      gated.release();
      await ok();
      assert.equal((await fetch(`${s.url}/healthz`)).status, 200);
      await stop(s.app);
    });

    it('a body over the limit is 413 (raw and multipart)', async () => {
      const big = Buffer.alloc(300 * 1024, 7);
      await assertError(await post(`${s.url}/v1/features`, big), 413, 'E_IMAGE');
      const form = new FormData();
      form.append('image', new Blob([big]), 'big.png');
      const res = await fetch(`${s.url}/v1/classify`, { method: 'POST', body: form });
      assert.equal(res.status, 413);
      assert.equal(((await res.json()) as { error: { code: string } }).error.code, 'E_IMAGE');
      await ok();
    });

    it('not an image, a corrupt one, an empty body and a missing multipart field are 400 E_IMAGE', async () => {
      await assertError(await post(`${s.url}/v1/features`, 'certainly not a picture', { 'content-type': 'text/plain' }), 400, 'E_IMAGE');
      await assertError(await post(`${s.url}/v1/classify`, '{"json": true}', { 'content-type': 'application/json' }), 400, 'E_IMAGE');
      await assertError(await post(`${s.url}/v1/features`, images[0].subarray(0, images[0].length >> 1)), 400, 'E_IMAGE');
      await assertError(await post(`${s.url}/v1/classify`, images[0].subarray(0, 60)), 400, 'E_IMAGE');
      await assertError(await post(`${s.url}/v1/features`, undefined), 400, 'E_IMAGE');
      const form = new FormData();
      form.append('picture', new Blob([images[0]]), 'x.png');
      const res = await fetch(`${s.url}/v1/features`, { method: 'POST', body: form });
      assert.equal(res.status, 400);
      await ok();
    });

    it('too many pixels is 400 E_IMAGE', async () => {
      const huge = await sharp({ create: { width: 1024, height: 600, channels: 3, background: { r: 1, g: 2, b: 3 } } }).png().toBuffer();
      assert.ok(huge.length < 256 * 1024);
      await assertError(await post(`${s.url}/v1/features`, huge), 400, 'E_IMAGE');
      await assertError(await post(`${s.url}/v1/classify`, huge), 400, 'E_IMAGE');
      await ok();
    });

    it('an unknown output, a bad top or two blobs as octet-stream are 400 E_ARG', async () => {
      await assertError(await post(`${s.url}/v1/features?outputs=fc7,fc99`, images[0]), 400, 'E_ARG');
      await assertError(await post(`${s.url}/v1/features?outputs=fc7,fc7`, images[0]), 400, 'E_ARG');
      await assertError(await post(`${s.url}/v1/features?outputs=`, images[0]), 400, 'E_ARG');
      await assertError(await post(`${s.url}/v1/features?outputs=fc7,pool5`, images[0], { accept: 'application/octet-stream' }), 400, 'E_ARG');
      await assertError(await post(`${s.url}/v1/classify?top=0`, images[0]), 400, 'E_ARG');
      await assertError(await post(`${s.url}/v1/classify?top=abc`, images[0]), 400, 'E_ARG');
      await ok();
    });

    it('a full queue is 503 E_BUSY with Retry-After; the queued requests are answered', async () => {
      gated.hold();
      const started = gated.started;
      const running = post(`${s.url}/v1/features`, images[0]);
      await until(() => gated.started === started + 1, 'the first run');
      const queued = [post(`${s.url}/v1/features`, images[1]), post(`${s.url}/v1/features`, images[2])];
      await until(() => s.app.vggnet.batcher.depth === 2, 'a full queue');
      const busy = await post(`${s.url}/v1/features`, images[3]);
      await assertError(busy, 503, 'E_BUSY');
      assert.equal(busy.headers.get('retry-after'), '1');
      gated.release();
      const answers = await Promise.all([running, ...queued]);
      for (const [i, r] of answers.entries()) {
        assert.equal(r.status, 200);
        assert.ok(relError(r.json().outputs.fc7.data, singles[i].fc7.data) < 1e-4);
      }
    });

    it('a request past its deadline is 504 E_TIMEOUT, queued or running', async () => {
      gated.hold();
      const t0 = Date.now();
      const [a, b] = await Promise.all([post(`${s.url}/v1/features`, images[0]), post(`${s.url}/v1/classify`, images[1])]);
      assert.ok(Date.now() - t0 < 5000);
      await assertError(a, 504, 'E_TIMEOUT');
      await assertError(b, 504, 'E_TIMEOUT');
      // The one that timed out while queued left the queue.
      assert.equal(s.app.vggnet.batcher.depth, 0);
      gated.release();
      await ok();
    });

    it('a client that disconnects while queued has its work dropped, and only its own', async () => {
      gated.hold();
      const before = gated.images;
      const started = gated.started;
      const first = post(`${s.url}/v1/features`, images[0]);
      await until(() => gated.started === started + 1, 'the first run');
      const abort = new AbortController();
      const leaving = post(`${s.url}/v1/features`, images[1], {}, abort.signal).catch((e: Error) => e);
      await until(() => s.app.vggnet.batcher.depth === 1, 'the second image queued');
      const third = post(`${s.url}/v1/features?outputs=pool5`, images[2]);
      await until(() => s.app.vggnet.batcher.depth === 2, 'the third image queued');
      abort.abort();
      assert.ok((await leaving) instanceof Error);
      await until(() => s.app.vggnet.batcher.depth === 1, 'the dropped image to leave the queue');
      gated.release();
      const [r1, r3] = await Promise.all([first, third]);
      assert.equal(r1.status, 200);
      assert.ok(relError(r1.json().outputs.fc7.data, singles[0].fc7.data) < 1e-4);
      assert.equal(r3.status, 200);
      assert.ok(relError(r3.json().outputs.pool5.data, singles[2].pool5.data) < 1e-4);
      // The first and the third ran; the second never did.
      assert.equal(gated.images - before, 2);
      const metrics = await (await fetch(`${s.url}/metrics`)).text();
      assert.match(metrics, /vggnet_queue_depth 0/);
    });
  });

  describe('admission control (maxLatencyMs)', () => {
    const DELAY_MS = 200;
    /** About four images' time, as this machine runs the fixture now (10 ms to 2 s on a shared one). */
    let LIMIT_MS: number;
    let s: Started;
    let gated: GatedModel;

    /** A request and how long its answer took, from before fetch to the whole body. */
    const timed = async (url: string, body: Buffer | string | FormData, headers: Record<string, string> = {}) => {
      const t0 = performance.now();
      const res = await fetch(url, { method: 'POST', body, headers: typeof body === 'object' && !(body instanceof Buffer) ? headers : { 'content-type': 'image/png', ...headers } });
      const bytes = Buffer.from(await res.arrayBuffer());
      return { status: res.status, headers: res.headers, bytes, json: () => JSON.parse(bytes.toString('utf8')), ms: performance.now() - t0 };
    };
    /** `n` requests at once, images[i % 8] each: every third a classify, one a multipart body with two images. */
    const burst = (n: number) => Promise.all(Array.from({ length: n }, (_, i) => {
      if (i % 3 === 2) return timed(`${s.url}/v1/classify?top=3`, images[i % 8]);
      if (i === 4) {
        // Two images in one multipart body: the first is the request's, the second is skipped.
        const form = new FormData();
        form.append('image', new Blob([images[i % 8]]), 'a.png');
        form.append('image', new Blob([images[(i + 1) % 8]]), 'b.png');
        return timed(`${s.url}/v1/features?outputs=fc7`, form);
      }
      return timed(`${s.url}/v1/features?outputs=fc7`, images[i % 8]);
    }));
    /** The refused and the accepted of a burst, each checked. */
    const check = (answers: Awaited<ReturnType<typeof timed>>[]) => {
      const refused = answers.filter((r) => r.status === 503);
      const accepted = answers.filter((r) => r.status === 200);
      assert.equal(refused.length + accepted.length, answers.length, answers.map((r) => r.status).join(','));
      for (const r of refused) {
        assert.equal(r.json().error.code, 'E_BUSY');
        assert.match(r.json().error.message, new RegExp(`more than the limit of ${LIMIT_MS} ms`));
        const [seconds, ms] = [Number(r.headers.get('retry-after')), Number(r.headers.get('retry-after-ms'))];
        assert.ok(seconds >= 1 && ms >= 1 && ms <= seconds * 1000 && ms > seconds * 1000 - 1000, `Retry-After: ${seconds}, Retry-After-Ms: ${ms}`);
      }
      for (const [i, r] of answers.entries()) {
        if (r.status !== 200) continue;
        if (i % 3 === 2) assert.equal(r.json().classes.length, 3);
        else assert.ok(relError(r.json().outputs.fc7.data, singles[i % 8].fc7.data) < 1e-4, `request ${i}`);
      }
      return { refused, accepted };
    };

    before(async () => {
      gated = new GatedModel(model);
      gated.delayPerImageMs = DELAY_MS;
      const input = await preprocess(images[0]);
      let slowest = 0;
      for (let i = 0; i < 3; i++) {
        const t0 = performance.now();
        await model.run(input, { outputs: ['fc7'] });
        slowest = Math.max(slowest, performance.now() - t0);
      }
      LIMIT_MS = Math.round(4 * (DELAY_MS + slowest));
      s = await start(gated, { maxBatch: 1, maxDelayMs: 0, maxLatencyMs: LIMIT_MS, warmup: [1] });
    });
    after(async () => { await stop(s.app); });

    it('admits everything before any batch has run, then refuses at once what would wait too long', async () => {
      // No measurement yet: the burst is admitted whole.
      assert.equal(s.app.vggnet.batcher.estimateMs(), undefined);
      const first = check(await burst(6));
      assert.equal(first.accepted.length, 6);
      const { refused, accepted } = check(await burst(20));
      assert.ok(refused.length > 0 && accepted.length > 0, `${refused.length} refused, ${accepted.length} accepted`);
      // About four of them fit; far from all.
      assert.ok(accepted.length < 12, `${accepted.length} accepted`);
      // Refused before their bodies were read: faster than the fastest answer.
      const slowestRefusal = Math.max(...refused.map((r) => r.ms));
      const fastestAnswer = Math.min(...accepted.map((r) => r.ms));
      assert.ok(slowestRefusal < fastestAnswer, `refusals up to ${slowestRefusal.toFixed(1)} ms, answers from ${fastestAnswer.toFixed(1)} ms`);
      const metrics = await (await fetch(`${s.url}/metrics`)).text();
      assert.match(metrics, new RegExp(`vggnet_refused_total\{reason="latency"\} ${refused.length}\n`));
      assert.match(metrics, /vggnet_batch_run_seconds\{size="1"\} 0\.\d+/);
      assert.match(metrics, /vggnet_estimated_wait_seconds 0\.\d+/);
    });

    it('gives back the places of requests that fail or leave before their image is queued', async () => {
      // One at a time, each admitted while the server is idle.
      assert.equal((await post(`${s.url}/v1/features`, 'not an image')).status, 400);
      assert.equal((await post(`${s.url}/v1/features?outputs=nope`, images[0])).status, 400);
      assert.equal((await post(`${s.url}/v1/features`, images[0].subarray(0, 100))).status, 400);
      const leaving = new AbortController();
      const left = post(`${s.url}/v1/features`, images[1], {}, leaving.signal).catch((e: Error) => e);
      await new Promise((r) => setTimeout(r, 5));
      leaving.abort();
      assert.ok((await left) instanceof Error);
      // Idle again: a new request would wait for its own intake and its batch alone.
      await until(() => gated.started === gated.images, 'the runs to finish');
      const batcher = s.app.vggnet.batcher;
      const alone = () => (batcher.runTimes.intakeMs ?? 0) + batcher.runTimes.cautiousMs(1)!;
      await until(() => batcher.estimateMs() === alone(), `no place held (estimate ${batcher.estimateMs()} ms, alone ${alone()} ms)`);
    });

    it('follows the run time: after slower batches it admits fewer', async () => {
      const batcher = s.app.vggnet.batcher;
      /** A burst's accepted count, against the count its estimate allows (one more where a batch ends while the burst arrives). */
      const admitted = async () => {
        const perImage = batcher.runTimes.cautiousMs(1)!;
        const accepted = check(await burst(20)).accepted.length;
        const allowed = Math.floor(LIMIT_MS / perImage);
        assert.ok(accepted >= allowed - 1 && accepted <= allowed + 1, `${accepted} accepted at ${perImage.toFixed(0)} ms an image`);
        return { perImage, accepted };
      };
      const runs = async (n: number) => {
        for (let i = 0; i < n; i++) assert.equal((await post(`${s.url}/v1/features`, images[i])).status, 200);
      };
      try {
        gated.delayPerImageMs = 100;
        await runs(2);
        const fast = await admitted();
        gated.delayPerImageMs = 1000;
        await runs(3);
        const slow = await admitted();
        assert.ok(slow.perImage > fast.perImage * 1.5, `${fast.perImage} -> ${slow.perImage} ms an image`);
        assert.ok(slow.accepted < fast.accepted, `${slow.accepted} accepted at ${slow.perImage} ms an image, ${fast.accepted} at ${fast.perImage}`);
      } finally {
        gated.delayPerImageMs = DELAY_MS;
      }
    });

    it('refuses nothing without maxLatencyMs', async () => {
      const unbounded = await start(gated, { maxBatch: 1, maxDelayMs: 0, warmup: [] });
      try {
        await post(`${unbounded.url}/v1/features`, images[0]);
        const answers = await Promise.all(Array.from({ length: 10 }, (_, i) => post(`${unbounded.url}/v1/features?outputs=fc7`, images[i % 8])));
        for (const [i, r] of answers.entries()) {
          assert.equal(r.status, 200);
          assert.ok(relError(r.json().outputs.fc7.data, singles[i % 8].fc7.data) < 1e-4);
        }
      } finally {
        await stop(unbounded.app);
      }
    });

    it('checks maxLatencyMs and --max-latency-ms, naming them', async () => {
      for (const bad of [0, -5, 1.5, NaN, '300']) {
        assert.throws(() => createServer(model, { maxLatencyMs: bad as number }), (e: VggError) => e.code === 'E_ARG' && /maxLatencyMs/.test(e.message), String(bad));
      }
      for (const bad of ['0', '-5', '1.5', 'soon']) {
        const r = spawnSync(process.execPath, [MAIN, 'serve', '--weights', WEIGHTS, '--port', '0', '--max-latency-ms', bad], { encoding: 'utf8', timeout: 20_000 });
        assert.equal(r.status, 1, r.stderr);
        assert.match(r.stderr, /^vgg: E_ARG: .*--max-latency-ms/);
      }
    });
  });

  it('soak: 200 bad bodies mixed into good traffic fail alone, and memory stays flat', async function () {
    const s = await start(model, { maxBatch: 16, maxDelayMs: 5, bodyLimit: 64 * 1024, maxPixels: 400 * 400 });
    try {
      const truncated = images.map((img) => img.subarray(0, img.length - 40));
      const random = (i: number) => Buffer.from(Array.from({ length: 50 + (i * 7919) % 3000 }, (_, k) => (k * 31 + i * 17) & 255));
      const huge = await sharp({ create: { width: 800, height: 800, channels: 3, background: { r: 9, g: 9, b: 9 } } }).png().toBuffer();
      const bad = (i: number): Promise<Awaited<ReturnType<typeof post>>> => {
        switch (i % 6) {
          case 0: return post(`${s.url}/v1/features`, random(i));
          case 1: return post(`${s.url}/v1/classify`, truncated[i % truncated.length]);
          case 2: return post(`${s.url}/v1/features`, Buffer.alloc(70 * 1024, i));
          case 3: return post(`${s.url}/v1/features?outputs=nope${i}`, images[i % images.length]);
          case 4: return post(`${s.url}/v1/features`, huge);
          default: return post(`${s.url}/v1/classify`, '', { 'content-type': 'application/json' });
        }
      };
      const round = async (badCount: number, goodEvery: number) => {
        const goods: { i: number; r: Promise<Awaited<ReturnType<typeof post>>> }[] = [];
        const bads: Promise<Awaited<ReturnType<typeof post>>>[] = [];
        for (let i = 0; i < badCount; i++) {
          bads.push(bad(i));
          if (i % goodEvery === 0) goods.push({ i, r: post(`${s.url}/v1/features?outputs=fc7`, images[i % images.length]) });
          if (i % 20 === 19) await Promise.all(bads.slice(-20));
        }
        for (const r of await Promise.all(bads)) assert.ok(r.status >= 400 && r.status < 500 && r.json().error.code, `${r.status}`);
        for (const { i, r } of goods) {
          const res = await r;
          assert.equal(res.status, 200, res.bytes.toString().slice(0, 200));
          assert.ok(relError(res.json().outputs.fc7.data, singles[i % images.length].fc7.data) < 1e-4);
        }
        return goods.length;
      };
      await round(60, 3); // warms every path
      global.gc?.();
      const heap0 = process.memoryUsage().heapUsed;
      const good = await round(200, 3);
      assert.ok(good >= 60);
      global.gc?.();
      const growth = process.memoryUsage().heapUsed - heap0;
      assert.ok(growth < 30 * 1024 * 1024, `heap grew by ${growth} bytes`);
      assert.equal((await fetch(`${s.url}/healthz`)).status, 200);
      const metrics = await (await fetch(`${s.url}/metrics`)).text();
      assert.match(metrics, /vggnet_requests_total\{route="\/v1\/features",status="413"\} \d+/);
    } finally {
      await stop(s.app);
    }
  });

  it('vgg serve exits 0 on SIGTERM after answering the request in flight', async () => {
    const child = spawn(process.execPath, [MAIN, 'serve', '--weights', WEIGHTS, '--port', '0', '--threads', '1', '--max-delay-ms', '1500'], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (d: string) => { stderr += d; });
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    try {
      await until(() => /ready\n/.test(stderr), `the server to be ready (${stderr})`, 30_000);
      const url = /listening on (\S+)/.exec(stderr)![1];
      const t0 = Date.now();
      // Waits in the queue for its batch (--max-delay-ms 1500) while SIGTERM arrives.
      const inFlight = post(`${url}/v1/features?outputs=fc7`, images[0]);
      await new Promise((r) => setTimeout(r, 300));
      child.kill('SIGTERM');
      const r = await inFlight;
      assert.equal(r.status, 200);
      assert.ok(relError(r.json().outputs.fc7.data, singles[0].fc7.data) < 1e-4);
      assert.equal(await exited, 0, stderr);
      assert.ok(Date.now() - t0 < 10_000);
      assert.match(stderr, /SIGTERM/);
      // Nothing is accepted any more.
      await assert.rejects(fetch(`${url}/healthz`));
    } finally {
      child.kill('SIGKILL');
    }
  });
});
