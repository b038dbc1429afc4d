import * as http from 'node:http';
import { Readable } from 'node:stream';
import type { FastifyError, FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify';
import fastifyPlugin from 'fastify-plugin';
import { classify } from '../tasks/classify';
import { VggError, checkPeers, type VggErrorCode } from '../errors';
import type { Outputs, Runner } from '../engine';
import { preprocess } from '../images/preprocess';
import { inferShapes, type Arch } from '../arch/topology';
import { encodeSafetensors } from '../weights/safetensors';
import type { Tensor } from '../tensor';
import { VggnetService, type ServeModel, type ServeOptions } from './service';
import type { Admission } from './batcher';

// Optional peer dependencies, loaded on first use: an application that requires vggnet for
// inference alone should not install or load an HTTP stack (about 100 ms) it never starts.
const fastify = (): typeof import('fastify').default => (checkPeers('serve'), require('fastify'));
const multipart = (): typeof import('@fastify/multipart').default => (checkPeers('serve'), require('@fastify/multipart'));

// The exported types below are spelled without fastify's: vggnet's declarations then compile
// in an app without fastify, and without esModuleInterop (pino >= 10.3, under fastify's logger
// types, default-imports the `export =` module thread-stream).

export interface VggnetPluginOptions extends ServeOptions {
  model: ServeModel;
  /** A service made beforehand (createServer passes its own); otherwise the plugin makes one. */
  service?: VggnetService;
}

/** A fastify plugin (4 or 5) taking VggnetPluginOptions; `app.register` checks the options. */
export type VggnetPlugin = (app: any, options: VggnetPluginOptions) => Promise<void>;

/** What createServer returns: a fastify instance (`as unknown as FastifyInstance` for the rest of its API). */
export interface VggnetServer {
  /** The batcher, the metrics and the readiness. */
  readonly vggnet: VggnetService;
  /** Starts listening; resolves to the address, like `http://127.0.0.1:8080`. */
  listen(options: { port?: number; host?: string }): Promise<string>;
  /** Stops accepting, finishes the requests in flight. */
  close(): Promise<unknown>;
  ready(): PromiseLike<unknown>;
}

/** The fastify versions vggnetPlugin mounts in (4 and 5 are tested); package.json's peer range says the same. */
export const FASTIFY_VERSIONS = '^4.26.0 || ^5.0.0';

const DEFAULT_OUTPUTS = ['fc7'];

const routes: FastifyPluginAsync<VggnetPluginOptions> = async (app, opts) => {
  const { model, service: given, ...options } = opts;
  // fastify's own plugin options (prefix, logLevel) are not ours.
  const serveOptions = pick(options as Record<string, unknown>, SERVE_KEYS) as ServeOptions;
  const service = given ?? new VggnetService(model, serveOptions);
  const { bodyLimit, maxPixels, preset, timeoutMs, retryAfterS, maxResponseBytes } = service.options;
  const blobs = new Set(model.blobNames('fixed'));

  // Any content type is an image body; multipart carries it in the field `image`.
  app.removeAllContentTypeParsers();
  await app.register(multipart(), { limits: { fileSize: bodyLimit, files: 4, fields: 16, parts: 20 }, throwFileSizeLimit: true });
  app.addContentTypeParser('*', { parseAs: 'buffer', bodyLimit }, (_req, body, done) => done(null, body));

  app.setErrorHandler((err: FastifyError | VggError, request, reply) => {
    const { status, code } = httpStatus(err);
    // Where the batcher can tell when a retry would be accepted (--max-latency-ms), it says so:
    // in whole seconds (HTTP's Retry-After), and in ms (retry-after-ms, as OpenAI's and Azure's
    // APIs send it), since a queue of a second drains enough in a few ms more often than not.
    const retryAfterMs = err instanceof VggError ? err.retryAfterMs : undefined;
    if (status === 503) reply.header('Retry-After', String(retryAfterMs === undefined ? retryAfterS : Math.max(1, Math.ceil(retryAfterMs / 1000))));
    if (status === 503 && retryAfterMs !== undefined) reply.header('Retry-After-Ms', String(Math.ceil(retryAfterMs)));
    if (status >= 500 && code !== 'E_BUSY' && code !== 'E_TIMEOUT') request.log.error(err);
    void reply.code(status).type('application/json').send({ error: { code, message: err.message } });
  });

  // Admission, before the body is read: a refused request costs its headers alone. Each request
  // runs one image (multipart: the first field `image`, any others are skipped unread), so it
  // holds one place, from its headers until its image is queued or the response closes
  // (answered, or the client gone: even one gone before this hook ran).
  const admissions = new WeakMap<FastifyRequest, Admission>();
  const admit = async (request: FastifyRequest, reply: FastifyReply) => {
    const admission = service.batcher.admit(1);
    admissions.set(request, admission);
    if (reply.raw.destroyed || request.raw.socket.destroyed) admission.release();
    else reply.raw.once('close', admission.release);
  };

  app.addHook('onResponse', async (request, reply) => {
    const route = request.routeOptions.url ?? 'unknown';
    service.metrics.requests.inc({ route, status: String(reply.statusCode) });
    service.metrics.latency.observe({ route }, reply.elapsedTime / 1000);
  });
  app.addHook('onRequestAbort', async (request) => {
    service.metrics.requests.inc({ route: request.routeOptions.url ?? 'unknown', status: 'aborted' });
  });

  app.addHook('onReady', async () => {
    // Not awaited: the server listens at once, and /readyz says when the model is warm.
    service.warm().catch((e: unknown) => app.log.error(e));
  });
  // Shutdown: new requests are 503 E_BUSY, those in flight finish, and every answer closes its
  // connection so that the server's close is not held up by idle keep-alive sockets.
  app.addHook('preClose', async () => {
    void service.close();
  });
  app.addHook('onRequest', async (_request, reply) => {
    if (service.closing) {
      void reply.header('Connection', 'close');
      service.metrics.refused.inc({ reason: 'shutdown' });
      throw new VggError('E_BUSY', 'the server is shutting down');
    }
  });
  app.addHook('onSend', async (_request, reply) => {
    if (service.closing) void reply.header('Connection', 'close');
  });
  app.addHook('onClose', async () => {
    await service.close();
  });

  /** Runs one image through preprocessing and the batcher, within the request's deadline. */
  async function runImage(reply: FastifyReply, image: Buffer, run: (image: Buffer, signal: AbortSignal) => Promise<unknown>) {
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(new VggError('E_TIMEOUT', `the request took longer than ${timeoutMs} ms`)), timeoutMs - Math.min(timeoutMs - 1, reply.elapsedTime));
    // A client that goes away: its image leaves the queue (or its answer is dropped).
    const onClose = () => { if (!reply.raw.writableEnded) controller.abort(new VggError('E_ARG', 'the client closed the connection')); };
    reply.raw.once('close', onClose);
    try {
      const work = run(image, controller.signal);
      work.catch(() => {});
      return await raceAbort(work, controller.signal);
    } finally {
      clearTimeout(timer);
      reply.raw.off('close', onClose);
    }
  }

  app.post('/v1/features', { onRequest: admit }, async (request, reply) => {
    const outputs = parseOutputs((request.query as Record<string, unknown>).outputs, blobs);
    const accept = String(request.headers.accept ?? '');
    const format = accept.includes('application/safetensors') ? 'safetensors' : accept.includes('application/octet-stream') ? 'raw' : 'json';
    if (format === 'raw' && outputs.length !== 1) {
      throw new VggError('E_ARG', `Accept: application/octet-stream returns one blob; ask for one output, not ${outputs.join(',')}`);
    }
    const image = await imageBody(request);
    const out = await runImage(reply, image, async (img, signal) => {
      const input = await preprocess(img, { preset, maxPixels });
      const bytes = answerBytes(model.info, input.shape, outputs, format);
      if (bytes > maxResponseBytes) {
        throw new VggError('E_ARG', `the answer would be up to ${bytes} bytes (${outputs.join(',')} as ${format}), more than the server's limit of ${maxResponseBytes}; ask for fewer outputs${format === 'json' ? ', or for Accept: application/safetensors, a sixth of the size' : ''}`);
      }
      signal.throwIfAborted();
      return service.batcher.submit(input, { outputs, signal, admission: admissions.get(request) });
    }) as Outputs;
    if (format === 'raw') {
      const blob = out[outputs[0]];
      return reply.type('application/octet-stream')
        .header('X-Shape', blob.shape.join(','))
        .header('X-Output', outputs[0])
        .header('X-Dtype', 'float32')
        .send(Buffer.from(blob.data.buffer, blob.data.byteOffset, blob.data.byteLength));
    }
    if (format === 'safetensors') {
      const tensors: Record<string, Tensor> = {};
      for (const name of outputs) tensors[name] = out[name];
      return reply.type('application/safetensors').send(Buffer.concat(encodeSafetensors(tensors)));
    }
    return reply.type('application/json').send(Readable.from(jsonAnswer(out, outputs)));
  });

  app.post('/v1/classify', { onRequest: admit }, async (request, reply) => {
    const top = parseTop((request.query as Record<string, unknown>).top, model.info.classes);
    const image = await imageBody(request);
    const classes = await runImage(reply, image, (img, signal) => {
      // classify() itself, with its model.run going through the batcher.
      const batched: Runner = {
        info: model.info,
        run: (input, runOptions) => {
          signal.throwIfAborted();
          return service.batcher.submit(input, { outputs: runOptions?.outputs ?? ['prob'], signal, admission: admissions.get(request) });
        },
      };
      return classify(batched, img, { top, preset, maxPixels });
    });
    return { classes };
  });

  app.get('/healthz', async () => ({ status: 'ok' }));

  app.get('/readyz', async (_request, reply) => {
    if (service.ready) return { status: 'ready' };
    const failed = service.warmError;
    const message = failed ? `the model failed its warm-up run: ${(failed as Error).message}` : 'the model is warming up or the server is shutting down';
    return reply.code(503).header('Retry-After', String(retryAfterS))
      .send({ error: { code: failed instanceof VggError ? failed.code : 'E_BUSY', message } });
  });

  app.get('/metrics', async (_request, reply) => {
    const registry = service.metrics.registry;
    return reply.type(registry.contentType).send(await registry.metrics());
  });
};

/**
 * The routes as a fastify plugin, for an app that already has a server:
 * `app.register(vggnetPlugin, { model, prefix: '/vgg' })`. Encapsulated: its body parsers and
 * error handler apply to its own routes only. A fastify outside FASTIFY_VERSIONS refuses it.
 */
export const vggnetPlugin: VggnetPlugin = fastifyPlugin(routes, { name: 'vggnet', fastify: FASTIFY_VERSIONS, encapsulate: true });

const SERVE_KEYS = ['maxBatch', 'maxDelayMs', 'maxQueue', 'maxLatencyMs', 'timeoutMs', 'bodyLimit', 'maxPixels', 'preset', 'warmup', 'retryAfterS', 'registry', 'onBatch', 'maxResponseBytes'];

function pick(o: Record<string, unknown>, keys: string[]): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const k of keys) if (o[k] !== undefined) out[k] = o[k];
  return out;
}

/**
 * A fastify server with the routes of vggnetPlugin at the root, a JSON 404, and
 * `app.vggnet` (the batcher, metrics and readiness). Call `app.listen({ port, host })`; the
 * caller owns the model (dispose it after `app.close()`).
 */
export function createServer(model: ServeModel, options: ServeOptions & { logger?: boolean | Record<string, unknown> } = {}): VggnetServer {
  const { logger, ...serveOptions } = options;
  const service = new VggnetService(model, serveOptions);
  const { clientTimeoutMs, maxConnections } = service.options;
  const app = fastify()({
    logger: logger ?? false, bodyLimit: service.options.bodyLimit, return503OnClosing: false,
    // A client that stops sending (headers or body) is cut off after clientTimeoutMs, checked
    // often enough to be on time; idle keep-alive sockets close after it too.
    requestTimeout: clientTimeoutMs, keepAliveTimeout: clientTimeoutMs,
    serverFactory: (handler) => {
      const server = http.createServer({
        requestTimeout: clientTimeoutMs, headersTimeout: clientTimeoutMs, keepAliveTimeout: clientTimeoutMs,
        connectionsCheckingInterval: Math.min(1000, Math.max(50, clientTimeoutMs / 4)),
      }, handler);
      server.maxConnections = maxConnections;
      return server;
    },
  });
  app.decorate('vggnet', service);
  app.setNotFoundHandler((request, reply) => {
    void reply.code(404).send({ error: { code: 'E_ARG', message: `no route ${request.method} ${request.url.split('?')[0]}` } });
  });
  app.setErrorHandler((err: FastifyError, _request, reply) => {
    const { status, code } = httpStatus(err);
    void reply.code(status).send({ error: { code, message: err.message } });
  });
  void app.register(vggnetPlugin, { model, service });
  return app as typeof app & Pick<VggnetServer, 'vggnet'>; // decorated above
}

/** HTTP status and error code of a failure. */
export function httpStatus(err: { statusCode?: number; code?: string } & Error): { status: number; code: string } {
  if (err instanceof VggError) {
    const byCode: Partial<Record<VggErrorCode, number>> = { E_ARG: 400, E_SHAPE: 400, E_IMAGE: 400, E_BUSY: 503, E_TIMEOUT: 504, E_DISPOSED: 503 };
    return { status: byCode[err.code] ?? 500, code: err.code };
  }
  const status = typeof err.statusCode === 'number' && err.statusCode >= 400 && err.statusCode < 600 ? err.statusCode : 500;
  // A body past the limit is an image too large to try.
  if (status === 413) return { status, code: 'E_IMAGE' };
  if (status === 503) return { status, code: 'E_BUSY' };
  if (status < 500) return { status, code: 'E_ARG' };
  return { status, code: 'E_INTERNAL' };
}

/** The image of a request: the raw body, or the multipart field `image`. */
async function imageBody(request: FastifyRequest): Promise<Buffer> {
  let image: Buffer | undefined;
  if (request.isMultipart()) {
    try {
      for await (const part of request.parts()) {
        if (part.type === 'file') {
          if (part.fieldname === 'image' && image === undefined) image = await part.toBuffer();
          else part.file.resume();
        } else if (part.fieldname === 'image' && image === undefined && typeof part.value === 'string') {
          image = Buffer.from(part.value, 'latin1');
        }
      }
    } catch (e) {
      // The multipart plugin's own limits carry a status (413); the parser's complaints do not.
      if (typeof (e as { statusCode?: number }).statusCode === 'number' && (e as { statusCode: number }).statusCode < 500) throw e;
      throw new VggError('E_IMAGE', `malformed multipart body: ${(e as Error).message}`, { cause: e });
    }
    if (!image) throw new VggError('E_IMAGE', 'expected the image in the multipart field "image"');
  } else {
    if (!Buffer.isBuffer(request.body)) throw new VggError('E_IMAGE', 'expected an image as the request body');
    image = request.body;
  }
  if (image.length === 0) throw new VggError('E_IMAGE', 'the image is empty (0 bytes)');
  return image;
}

function parseOutputs(value: unknown, blobs: Set<string>): string[] {
  if (value === undefined) return DEFAULT_OUTPUTS;
  if (typeof value !== 'string') throw new VggError('E_ARG', 'Expected outputs once, as a comma-separated list like fc7,pool5');
  const names = value.split(',').map((s) => s.trim());
  if (names.some((n) => n === '')) throw new VggError('E_ARG', `Expected outputs as a comma-separated list like fc7,pool5 but received ${JSON.stringify(value)}`);
  if (new Set(names).size !== names.length) throw new VggError('E_ARG', 'Expected each output name once');
  for (const n of names) {
    if (!blobs.has(n)) throw new VggError('E_ARG', `Unknown output ${JSON.stringify(n.slice(0, 60))}; expected some of ${[...blobs].join(', ')}`);
  }
  return names;
}

function parseTop(value: unknown, classes: number): number {
  if (value === undefined) return Math.min(5, classes);
  const n = Number(value);
  if (typeof value !== 'string' || !/^\d+$/.test(value) || n < 1 || n > classes) {
    throw new VggError('E_ARG', `Expected top to be an integer from 1 to ${classes} but received ${JSON.stringify(String(value).slice(0, 60))}`);
  }
  return n;
}

/** The promise, or the signal's reason as soon as it aborts. */
function raceAbort<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
  });
}
/** JSON prints a float32 in at most this many bytes ("-1.1754943508222875e-38,"). */
const JSON_BYTES_PER_FLOAT = 24;

/**
 * The most bytes the answer of `outputs` for an input of `shape` can take: 4 a float in the
 * binary formats, the longest printed float in JSON. Known before the run, so that a request
 * past the limit costs nothing.
 */
export function answerBytes(arch: Arch, shape: number[], outputs: string[], format: 'json' | 'raw' | 'safetensors'): number {
  const [n, , h, w] = shape;
  const floats = inferShapes(arch, n, h, w, 'fixed').filter((b) => outputs.includes(b.name)).reduce((sum, b) => sum + b.shape.reduce((a, c) => a * c, 1), 0);
  return floats * (format === 'json' ? JSON_BYTES_PER_FLOAT : 4) + 1024 * outputs.length;
}

/** Floats printed per piece of a JSON answer: one piece is a short task on the event loop. */
const JSON_PIECE = 1 << 14;

/**
 * The JSON answer { outputs: { name: { shape, data } } } a piece at a time, as the socket takes
 * them: a blob of millions of floats is never one string, nor one long task on the event loop.
 */
export function* jsonAnswer(out: Outputs, outputs: string[]): Generator<string> {
  yield '{"outputs":{';
  for (const [i, name] of outputs.entries()) {
    const { shape, data } = out[name];
    yield `${i ? ',' : ''}${JSON.stringify(name)}:{"shape":${JSON.stringify(shape)},"data":[`;
    for (let at = 0; at < data.length; at += JSON_PIECE) {
      let piece = at ? ',' : '';
      const end = Math.min(at + JSON_PIECE, data.length);
      // JSON.stringify's numbers: non-finite ones are null.
      for (let k = at; k < end; k++) piece += `${k > at ? ',' : ''}${Number.isFinite(data[k]) ? data[k] : 'null'}`;
      yield piece;
    }
    yield ']}';
  }
  yield '}}';
}
