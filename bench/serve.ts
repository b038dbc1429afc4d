// Load tests of the HTTP service on loopback, same process, same model, same image:
//  - batching (issue #5): concurrency 1, 8 and 64, with dynamic batching and with --max-batch 1;
//  - admission (issue #18): 64 connections per precision, today's unbounded queue against
//    --max-latency-ms B, next to model.run's best images/s measured in the same run (before and
//    after the servers, the best of both).
//
// usage: npm run bench:serve [-- --suite all|batching|admission --weights W --duration 10 --threads 2
//          --max-batch 32 --device cuda --precision bf16 --precisions fp32,int8 --max-latency-ms 1000
//          --retry honour|immediate]
// Without --weights it uses seeded random VGG16 (the figures do not depend on the values); int8
// is calibrated on samples/ first (as bench/compare.ts does).
import * as os from 'node:os';
import * as path from 'node:path';
import * as fs from 'node:fs';
import autocannon from 'autocannon';
import { loadModel, type Device, type Model, type Precision } from '../lib';
import { defaultWeights } from '../lib/weights/default-weights';
import { calibrate } from '../lib/tasks/calibrate';
import { preprocess } from '../lib/images/preprocess';
import { createServer } from '../lib/serve/server';
import { closedLoopInWorker, percentile } from './load';

function flag(name: string): string | undefined {
  const at = process.argv.indexOf(`--${name}`);
  return at > 0 ? process.argv[at + 1] : undefined;
}

const ROOT = path.resolve(__dirname, '../..');
const IMAGE = fs.readFileSync(path.join(ROOT, 'samples/coffee.jpg'));
const duration = Number(flag('duration') ?? 10);
const threads = Number(flag('threads') ?? os.availableParallelism());
const maxBatch = Number(flag('max-batch') ?? 32);
const device = (flag('device') ?? 'cpu') as Device;
const log = (line: string) => process.stderr.write(`${line}\n`);

async function startServer(model: Model, options: Parameters<typeof createServer>[1]): Promise<{ url: string; close: () => Promise<unknown> }> {
  const app = createServer(model, options);
  const url = await app.listen({ port: 0, host: '127.0.0.1' });
  // /readyz turns 200 once every batch size the batcher uses has been compiled.
  while ((await fetch(`${url}/readyz`)).status !== 200) await new Promise((r) => setTimeout(r, 200));
  return { url, close: () => app.close() };
}

interface BatchingRow { mode: string; connections: number; rps: number; p50: number; p99: number; errors: number }

async function batchingSuite(weights: string): Promise<void> {
  const precision = (flag('precision') ?? 'fp32') as Precision;
  const model = await loadModel(weights, { threads, device, precision });
  const rows: BatchingRow[] = [];
  for (const [mode, batch] of [['dynamic batching', maxBatch], ['--max-batch 1', 1]] as const) {
    const server = await startServer(model, { maxBatch: batch, maxDelayMs: 5, maxQueue: 1024 });
    for (const connections of [1, 8, 64]) {
      const result = await autocannon({
        url: `${server.url}/v1/features?outputs=fc7`, method: 'POST', body: IMAGE, connections, duration,
        headers: { 'content-type': 'application/octet-stream' },
      });
      rows.push({ mode, connections, rps: result.requests.average, p50: result.latency.p50, p99: result.latency.p99, errors: result.errors + result.non2xx });
    }
    await server.close();
  }
  await model.dispose();

  const single = rows.find((r) => r.mode === '--max-batch 1' && r.connections === 1)!;
  console.log(`\n${path.basename(weights)} on ${device} (${precision}), ${threads} threads, ${duration} s per row, coffee.jpg (600x400) per request, fc7\n`);
  console.log('| mode | connections | images/s | p50 ms | p99 ms | errors |');
  console.log('|---|---|---|---|---|---|');
  for (const r of rows) console.log(`| ${r.mode} | ${r.connections} | ${r.rps.toFixed(1)} | ${r.p50} | ${r.p99} | ${r.errors} |`);
  const dyn = rows.find((r) => r.mode === 'dynamic batching' && r.connections === 64)!;
  const one = rows.find((r) => r.mode === '--max-batch 1' && r.connections === 64)!;
  console.log(`\nat 64 connections: ${(dyn.rps / one.rps).toFixed(2)}x the images/s of --max-batch 1 (target 2x); p99 ${(dyn.p99 / single.p50).toFixed(1)}x the single-request latency (target 3x)`);
}

/** model.run's best images/s on coffee.jpg, preprocessed, over batch sizes 1, 4 and 8 (each compiled first). */
async function bestRun(model: Model): Promise<{ imagesPerSecond: number; batch: number; bySize: string }> {
  const one = await preprocess(IMAGE);
  let best = { imagesPerSecond: 0, batch: 0, bySize: '' };
  const bySize: string[] = [];
  for (const batch of [1, 4, 8]) {
    const data = new Float32Array(batch * one.data.length);
    for (let i = 0; i < batch; i++) data.set(one.data, i * one.data.length);
    const input = { data, shape: [batch, ...one.shape.slice(1)] };
    await model.run(input, { outputs: ['fc7'] });
    // About 3 s a size, at least two runs.
    const t0 = performance.now();
    let runs = 0;
    while (runs < 2 || performance.now() - t0 < 3000) {
      await model.run(input, { outputs: ['fc7'] });
      runs++;
    }
    const imagesPerSecond = (runs * batch) / ((performance.now() - t0) / 1000);
    bySize.push(`${imagesPerSecond.toFixed(1)} at batch ${batch}`);
    if (imagesPerSecond > best.imagesPerSecond) best = { imagesPerSecond, batch, bySize: '' };
  }
  return { ...best, bySize: bySize.join(', ') };
}

/**
 * Where serving's own time goes: requests/s and CPU ms per request (server and load generator,
 * this process) with a model that answers at once, and preprocess's share of it. On 2 cores
 * this CPU is taken from the model's: served ≤ 1 / (1 / run + overhead / cores).
 */
async function servingOverhead(model: Model): Promise<{ perRequestMs: number; preprocessMs: number; requestsPerSecond: number }> {
  const fc7 = model.info.fcHidden;
  const instant = {
    info: model.info,
    blobNames: model.blobNames.bind(model),
    run: async (input: { shape: number[] }) => ({ fc7: { data: new Float32Array(input.shape[0] * fc7), shape: [input.shape[0], fc7] } }),
  };
  const server = await startServer(instant as unknown as Model, { maxBatch, maxDelayMs: 5, maxQueue: 1024, warmup: [] });
  const cpu0 = process.cpuUsage();
  const r = await closedLoopInWorker(server.url, '/v1/features?outputs=fc7', IMAGE, { connections: 64, durationS: Math.min(duration, 5), honourRetryAfter: true });
  const cpu = process.cpuUsage(cpu0);
  await server.close();
  const p0 = process.cpuUsage();
  for (let i = 0; i < 20; i++) await preprocess(IMAGE);
  const p = process.cpuUsage(p0);
  return { perRequestMs: (cpu.user + cpu.system) / 1000 / r.accepted.length, preprocessMs: (p.user + p.system) / 1000 / 20, requestsPerSecond: r.accepted.length / r.seconds };
}

interface AdmissionRow {
  precision: string; queue: string; run: number; runBatch: number; served: number;
  p50: number; p99: number; refused: number; refusalP99: number; errors: number; limit?: number; meanBatch: number;
}

async function admissionSuite(weights: string): Promise<void> {
  const precisions = (flag('precisions') ?? 'fp32,int8').split(',') as Precision[];
  const limit = Number(flag('max-latency-ms') ?? 1000);
  const honourRetryAfter = (flag('retry') ?? 'honour') === 'honour';
  const rows: AdmissionRow[] = [];
  let overhead: Awaited<ReturnType<typeof servingOverhead>> | undefined;
  for (const precision of precisions) {
    let calibration;
    if (precision === 'int8') {
      log('bench: calibrating int8 on samples/');
      calibration = await calibrate(weights, fs.readdirSync(path.join(ROOT, 'samples')).map((f) => path.join(ROOT, 'samples', f)), { threads });
    }
    const model = await loadModel(weights, { threads, device, precision, calibration });
    log(`bench: ${precision}: model.run`);
    const before = await bestRun(model);
    const served: Omit<AdmissionRow, 'run' | 'runBatch'>[] = [];
    for (const maxLatencyMs of [undefined, limit]) {
      const queue = maxLatencyMs === undefined ? 'unbounded' : `--max-latency-ms ${maxLatencyMs}`;
      log(`bench: ${precision}: ${queue}, 64 connections, ${duration} s`);
      const batches: number[] = [];
      const server = await startServer(model, { maxBatch, maxDelayMs: 5, maxQueue: 1024, maxLatencyMs, warmup: served.length ? [] : undefined, onBatch: (n) => batches.push(n) });
      // One request first: the estimate starts from a measured batch (before one, everything is admitted).
      await fetch(`${server.url}/v1/features?outputs=fc7`, { method: 'POST', body: IMAGE, headers: { 'content-type': 'application/octet-stream' } });
      batches.length = 0;
      const r = await closedLoopInWorker(server.url, '/v1/features?outputs=fc7', IMAGE, { connections: 64, durationS: duration, honourRetryAfter });
      const meanBatch = batches.reduce((a, b) => a + b, 0) / batches.length;
      await server.close();
      served.push({
        precision, queue, served: r.accepted.length / r.seconds, p50: percentile(r.accepted, 50), p99: percentile(r.accepted, 99),
        refused: r.refused.length, refusalP99: percentile(r.refused, 99), errors: r.errors, limit: maxLatencyMs, meanBatch,
      });
    }
    log(`bench: ${precision}: serving alone, with a model that answers at once`);
    overhead ??= await servingOverhead(model);
    log(`bench: ${precision}: model.run again`);
    const after = await bestRun(model);
    const best = after.imagesPerSecond > before.imagesPerSecond ? after : before;
    log(`bench: ${precision}: model.run images/s before ${before.bySize}; after ${after.bySize}`);
    for (const s of served) rows.push({ ...s, run: best.imagesPerSecond, runBatch: best.batch });
    await model.dispose();
  }

  console.log(`\n${path.basename(weights)} on ${device}, ${threads} threads, 64 connections, ${duration} s per row, coffee.jpg (600x400) per request, fc7, --max-batch ${maxBatch}; clients ${honourRetryAfter ? 'wait the Retry-After-Ms of a 503' : 'retry a 503 at once'}\n`);
  console.log('| precision | queue | model.run best images/s | served images/s | vs model.run | mean batch | p50 ms | p99 ms | p99 vs limit | refused | refusal p99 ms | errors |');
  console.log('|---|---|---|---|---|---|---|---|---|---|---|---|');
  const ms = (v: number) => (Number.isNaN(v) ? '—' : v.toFixed(v < 10 ? 1 : 0));
  for (const r of rows) {
    console.log(`| ${r.precision} | ${r.queue} | ${r.run.toFixed(1)} (batch ${r.runBatch}) | ${r.served.toFixed(1)} | ${(r.served / r.run).toFixed(2)}x | ${r.meanBatch.toFixed(1)} | ${ms(r.p50)} | ${ms(r.p99)} | ${r.limit ? `${(r.p99 / r.limit).toFixed(2)}x` : '—'} | ${r.refused} | ${ms(r.refusalP99)} | ${r.errors} |`);
  }
  const o = overhead!;
  console.log(`\nserving alone (a model that answers at once): ${o.requestsPerSecond.toFixed(0)} requests/s, ${o.perRequestMs.toFixed(1)} ms CPU per request (server and load generator), of which preprocessing ${o.preprocessMs.toFixed(1)} ms`);
  for (const r of rows.filter((row) => row.limit)) {
    const ceiling = 1 / (1 / r.run + o.perRequestMs / 1000 / threads);
    console.log(`${r.precision}: serving's CPU on ${threads} cores leaves at most ${ceiling.toFixed(1)} images/s, ${(ceiling / r.run).toFixed(2)}x model.run`);
  }
  for (const r of rows.filter((row) => row.limit)) {
    const met = (ok: boolean) => (ok ? 'met' : 'NOT met');
    console.log(`${r.precision}, ${r.queue}: served ${(r.served / r.run).toFixed(2)}x model.run (target ≥ 0.9x, ${met(r.served >= 0.9 * r.run)}); p99 ${(r.p99 / r.limit!).toFixed(2)}x the limit (target ≤ 1.5x, ${met(r.p99 <= 1.5 * r.limit!)}); refusals p99 ${ms(r.refusalP99)} ms (target < 50 ms, ${met(!(r.refusalP99 >= 50))})`);
  }
}

async function main(): Promise<void> {
  const suite = flag('suite') ?? 'all';
  if (!['all', 'batching', 'admission'].includes(suite)) throw new Error(`--suite is all, batching or admission, not ${suite}`);
  const weights = flag('weights') ?? await defaultWeights({ quiet: true });
  if (suite !== 'admission') await batchingSuite(weights);
  if (suite !== 'batching') await admissionSuite(weights);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
