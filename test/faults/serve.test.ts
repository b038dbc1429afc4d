import { strict as assert } from 'node:assert';
import * as net from 'node:net';
import sharp from 'sharp';
import type { FastifyInstance } from 'fastify';
import { loadModel, type Model } from '../../lib/model';
import type { Outputs, RunOptions } from '../../lib/engine';
import { preprocess } from '../../lib/images/preprocess';
import { createServer, type ServeModel, type ServeOptions } from '../../lib/serve';
import type { Tensor } from '../../lib/tensor';
import { fixture } from '../helpers';

/** Hostile and unlucky HTTP clients, on loopback, next to good ones. */
describe('faults: the service and its clients', function () {
  this.timeout(60_000);
  let model: Model;
  let image: Buffer;
  const apps: FastifyInstance[] = [];
  /** The model, counting the images it is asked to run. */
  const counted = { runs: 0 } as ServeModel & { runs: number };

  before(async () => {
    model = await loadModel(fixture('D.weights.safetensors'), { threads: 2 });
    Object.assign(counted, {
      info: model.info,
      blobNames: (head?: 'fixed' | 'dense') => model.blobNames(head),
      run: (input: Tensor, options?: RunOptions): Promise<Outputs> => { counted.runs++; return model.run(input, options); },
    });
    const pixels = Buffer.from(Array.from({ length: 64 * 48 * 3 }, (_, i) => (i * 7) & 255));
    image = await sharp(pixels, { raw: { width: 64, height: 48, channels: 3 } }).png().toBuffer();
  });
  after(async () => {
    for (const app of apps) await app.close();
    await model?.dispose();
  });

  async function start(options: ServeOptions): Promise<{ url: string; port: number }> {
    const app = createServer(counted, { warmup: [], ...options }) as unknown as FastifyInstance;
    apps.push(app);
    const url = await app.listen({ port: 0, host: '127.0.0.1' });
    return { url, port: (app.server.address() as net.AddressInfo).port };
  }
  const post = (url: string, body: Buffer | string, headers: Record<string, string> = {}) =>
    fetch(url, { method: 'POST', body, headers: { 'content-type': 'image/png', ...headers } });

  /** Sockets that connect and stop: half of them mid-headers, half after the headers of a body they never send. */
  function stalled(port: number, count: number) {
    return Array.from({ length: count }, (_, i) => {
      const socket = net.connect(port, '127.0.0.1');
      socket.on('error', () => {});
      socket.resume(); // read what the server says (a 408), and so see its end
      const closed = new Promise<number>((resolve) => socket.once('close', () => resolve(Date.now())));
      socket.write(i % 2 ? 'POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 5000\r\n\r\n' : 'POST /v1/classify HTTP/1.1\r\nHost: x\r\n');
      return { socket, closed };
    });
  }

  it('an answer past --max-response-mb is 400 E_ARG naming its size and the limit, before the run', async () => {
    const { url } = await start({ maxResponseBytes: 1 << 20 });
    const before = counted.runs;
    const r = await post(`${url}/v1/features?outputs=conv1_1`, image);
    assert.equal(r.status, 400);
    const { error } = await r.json() as { error: { code: string; message: string } };
    assert.equal(error.code, 'E_ARG');
    // conv1_1 of D at 224x224: 4 x 224 x 224 floats, at most 24 bytes each in JSON.
    assert.match(error.message, /4817920 bytes.*limit of 1048576/);
    assert.equal(counted.runs, before, 'nothing ran');
    // The same blob as float32 fits: 802,816 bytes.
    const raw = await post(`${url}/v1/features?outputs=conv1_1`, image, { accept: 'application/octet-stream' });
    assert.equal(raw.status, 200);
    assert.equal((await raw.arrayBuffer()).byteLength, 4 * 224 * 224 * 4);
  });

  it('a large JSON answer streams, and holds exactly the floats of a direct run', async () => {
    const { url } = await start({});
    const r = await post(`${url}/v1/features?outputs=conv1_1,fc7`, image);
    assert.equal(r.status, 200);
    assert.match(r.headers.get('content-type') ?? '', /application\/json/);
    const body = await r.json() as { outputs: Record<string, { shape: number[]; data: number[] }> };
    const direct = await model.run(await preprocess(image), { outputs: ['conv1_1', 'fc7'] });
    for (const name of ['conv1_1', 'fc7']) {
      assert.deepEqual(body.outputs[name].shape, direct[name].shape);
      assert.deepEqual(Float32Array.from(body.outputs[name].data), direct[name].data, name);
    }
  });

  it('a malformed multipart body is 400 E_IMAGE', async () => {
    const { url } = await start({});
    const body = '--XYZ\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\nContent-Type: image/png\r\n\r\nnot finished';
    const r = await post(`${url}/v1/classify`, body, { 'content-type': 'multipart/form-data; boundary=XYZ' });
    assert.equal(r.status, 400);
    assert.equal(((await r.json()) as { error: { code: string } }).error.code, 'E_IMAGE');
  });

  it('50 stalled clients are closed after --client-timeout-ms while good requests all succeed', async () => {
    const timeout = 1000;
    const { url, port } = await start({ clientTimeoutMs: timeout });
    const opened = Date.now();
    const sockets = stalled(port, 50);
    const good = await Promise.all(Array.from({ length: 12 }, () => post(`${url}/v1/classify`, image)));
    for (const r of good) assert.equal(r.status, 200);
    const closedAt = await Promise.race([
      Promise.all(sockets.map((s) => s.closed)),
      new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`${sockets.filter((s) => !s.socket.destroyed).length} stalled sockets still open 10 s after the client timeout`)), timeout + 10_000)),
    ]);
    for (const at of closedAt) assert.ok(at - opened >= timeout * 0.9, 'not closed before the timeout');
  });

  it('--max-connections caps sockets: past it a connection is closed at once; good requests succeed once the stalled ones are cut', async () => {
    const { url, port } = await start({ clientTimeoutMs: 1500, maxConnections: 50 });
    const sockets = stalled(port, 50);
    await new Promise((resolve) => setTimeout(resolve, 200));
    const [extra] = stalled(port, 1);
    const refusedAt = await extra.closed;
    const stillOpen = sockets.filter((s) => !s.socket.destroyed && s.socket.readyState === 'open').length;
    assert.equal(stillOpen, 50, 'the stalled sockets are still open when the one past the cap is closed');
    const cut = await Promise.all(sockets.map((s) => s.closed));
    assert.ok(refusedAt < Math.min(...cut), 'closed before the stalled ones timed out');
    const good = await Promise.all(Array.from({ length: 12 }, () => post(`${url}/v1/classify`, image)));
    for (const r of good) assert.equal(r.status, 200);
  });
});
