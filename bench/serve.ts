// Load tests of the HTTP service on loopback, same process, same model, same image:
//  - batching (issue #5): concurrency 1, 8 and 64, with dynamic batching and with --max-batch 1;
//  - admission (issue #18): 64 connections per precision, today's unbounded queue against
//    --max-latency-ms B, next to model.run's best images/s at batch 1, 2, 4 or 8 measured in
//    the same run (before and after the servers, the faster of both). Where the images/s went:
//    model.run over the same batches the server ran (the batch sizes B leaves), the share of the
//    time the engine was busy, and how much slower its batches ran than model.run's at their
//    sizes (the serving work on the same cores); their product is the served rate. And the
//    floor under a refusal's latency: a bare node:http server answering 503 under the same load.
//
// usage: npm run bench:serve [-- --suite all|batching|admission --weights W --duration 10 --threads 2
//          --max-batch 32 --device cuda --precision bf16 --precisions fp32,int8 --max-latency-ms 1000
//          --retry honour|immediate]
// Without --weights it uses seeded random VGG16 (the figures do not depend on the values); int8
// is calibrated on samples/ first (as bench/compare.ts does).
import * as os from 'node:os';
import * as path from 'node:path';
import * as fs from 'node:fs';
import * as http from 'node:http';
import autocannon from 'autocannon';
import { loadModel, type Device, type Model, type Precision } from '../lib';
import { defaultWeights } from '../lib/weights/default-weights';
import { calibrate } from '../lib/tasks/calibrate';
import { preprocess } from '../lib/images/preprocess';
import { createServer } from '../lib/serve/server';
import { closedLoopInWorker, percentile } from './load';

const sum = (values: number[]) => values.reduce((a, b) => a + b, 0);

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
        // Past the server's own --timeout-ms (30 s): at 64 connections an fp32 queue waits about 10 s, autocannon's
        // default timeout, and clients that give up and send again would be measured instead of the server.
        timeout: 60,
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

/** `batch` copies of coffee.jpg, preprocessed. */
async function coffeeBatch(batch: number): Promise<{ data: Float32Array; shape: number[] }> {
  const one = await preprocess(IMAGE);
  const data = new Float32Array(batch * one.data.length);
  for (let i = 0; i < batch; i++) data.set(one.data, i * one.data.length);
  return { data, shape: [batch, ...one.shape.slice(1)] };
}

/** model.run's mean time (ms) for a batch of `batch` on coffee.jpg: one run to compile, then about 3 s of runs, at least two. */
async function runMs(model: Model, batch: number): Promise<number> {
  const input = await coffeeBatch(batch);
  await model.run(input, { outputs: ['fc7'] });
  const t0 = performance.now();
  let runs = 0;
  while (runs < 2 || performance.now() - t0 < 3000) {
    await model.run(input, { outputs: ['fc7'] });
    runs++;
  }
  return (performance.now() - t0) / runs;
}

/**
 * model.run on coffee.jpg, preprocessed, at batch sizes 1, 2, 4 and 8 and any in `also`:
 * `times` keeps each size's fastest batch time so far (the machine's speed drifts, so before
 * and after the servers, the better is kept). Returns the images/s of each, for the log.
 */
async function measureRuns(model: Model, times: Map<number, number>, also: number[] = []): Promise<string> {
  const bySize: string[] = [];
  for (const batch of new Set([1, 2, 4, 8, ...also])) {
    const ms = await runMs(model, batch);
    times.set(batch, Math.min(ms, times.get(batch) ?? Infinity));
    bySize.push(`${((batch * 1000) / ms).toFixed(1)} at batch ${batch}`);
  }
  return bySize.join(', ');
}

/** The share of the CPU time the hypervisor gave to other guests since `from` (Linux's steal time; 0 elsewhere). */
function stolen(from = cpuTimes()): { since: () => number } {
  return {
    since: () => {
      const now = cpuTimes();
      const total = now.total - from.total;
      return total > 0 ? (now.steal - from.steal) / total : 0;
    },
  };
}

function cpuTimes(): { total: number; steal: number } {
  try {
    const fields = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1, 9).map(Number);
    return { total: sum(fields), steal: fields[7] };
  } catch {
    return { total: 0, steal: 0 };
  }
}

/** A run of the engine: its batch size (padded), how long it took, and when it ended (performance.now()). */
interface TimedRun { size: number; ms: number; end: number }

/** A batch a server ran, with the images it took. */
interface ServedBatch extends TimedRun { images: number }

/** `model`, its runs timed into `log` (the batcher runs one batch at a time). */
function timedModel(model: Model, log: TimedRun[]): Model {
  return new Proxy(model, {
    get(target, key) {
      if (key === 'run') {
        return async (...args: Parameters<Model['run']>) => {
          const t0 = performance.now();
          const out = await target.run(...args);
          const end = performance.now();
          log.push({ size: args[0].shape[0], ms: end - t0, end });
          return out;
        };
      }
      const value = Reflect.get(target, key, target);
      return typeof value === 'function' ? value.bind(target) : value;
    },
  });
}

/**
 * The floor under a refusal's latency: the same load against a bare node:http server that
 * answers every request 503 at once (Retry-After-Ms spread over 0-2 s), while the engine runs
 * batches of 8 back to back, as it does under the service. What is left is the HTTP stack, the
 * load generator and the cores the engine keeps busy.
 */
async function bareRefusals(model: Model): Promise<number[]> {
  const server = http.createServer((_req, res) => {
    res.writeHead(503, { 'content-type': 'application/json', 'retry-after': '1', 'retry-after-ms': String(Math.round(Math.random() * 2000)) });
    res.end('{"error":{"code":"E_BUSY","message":"busy"}}');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  const input = await coffeeBatch(8);
  let engineOn = true;
  const engine = (async () => {
    while (engineOn) await model.run(input, { outputs: ['fc7'] });
  })();
  const r = await closedLoopInWorker(`http://127.0.0.1:${port}`, '/v1/features?outputs=fc7', IMAGE, { connections: 64, durationS: Math.min(duration, 10), honourRetryAfter: true });
  engineOn = false;
  await engine;
  await new Promise((resolve) => server.close(resolve));
  return r.refused;
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
  // preprocess alone, warm, several at once as the server runs them.
  await Promise.all(Array.from({ length: 4 }, () => preprocess(IMAGE)));
  const p0 = process.cpuUsage();
  await Promise.all(Array.from({ length: 40 }, () => preprocess(IMAGE)));
  const p = process.cpuUsage(p0);
  return { perRequestMs: (cpu.user + cpu.system) / 1000 / r.accepted.length, preprocessMs: (p.user + p.system) / 1000 / 40, requestsPerSecond: r.accepted.length / r.seconds };
}

interface AdmissionRow {
  precision: string; queue: string; run: number; runBatch: number; served: number;
  p50: number; p99: number; refused: number; refusalP99: number; errors: number; limit?: number; meanBatch: number;
  /** model.run's images/s over the same batches (sizes and images) the server ran. */
  runAtServed: number;
  /** The share of the run the engine was running a batch. */
  busy: number;
  /** The server's batches' time over model.run's for the same sizes. */
  slowdown: number;
  /** The refusal p99 of a bare server next to the running engine (bareRefusals). */
  bareP99: number;
  /** The share of the CPU time the hypervisor took during the load (noise no ratio can cancel). */
  stolen: number;
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
    const runTimes = new Map<number, number>();
    let steal = stolen();
    const before = await measureRuns(model, runTimes);
    log(`bench: ${precision}: model.run images/s ${before} (${(100 * steal.since()).toFixed(0)}% of the CPU stolen)`);
    const served: (Omit<AdmissionRow, 'run' | 'runBatch' | 'runAtServed' | 'slowdown' | 'bareP99'> & { batches: ServedBatch[] })[] = [];
    for (const maxLatencyMs of [undefined, limit]) {
      const queue = maxLatencyMs === undefined ? 'unbounded' : `--max-latency-ms ${maxLatencyMs}`;
      log(`bench: ${precision}: ${queue}, 64 connections, ${duration} s`);
      const images: number[] = [];
      const runs: TimedRun[] = [];
      const server = await startServer(timedModel(model, runs), { maxBatch, maxDelayMs: 5, maxQueue: 1024, maxLatencyMs, warmup: served.length ? [] : undefined, onBatch: (n) => images.push(n) });
      // One request first: the estimate starts from a measured batch (before one, everything is admitted).
      await fetch(`${server.url}/v1/features?outputs=fc7`, { method: 'POST', body: IMAGE, headers: { 'content-type': 'application/octet-stream' } });
      images.length = 0;
      runs.length = 0;
      const start = performance.now();
      const loadSteal = stolen();
      const r = await closedLoopInWorker(server.url, '/v1/features?outputs=fc7', IMAGE, { connections: 64, durationS: duration, honourRetryAfter });
      const end = start + r.seconds * 1000;
      await server.close();
      // onBatch comes just before its run, so the two lists pair up; the batches that ended
      // within the load are the ones whose answers were counted.
      const batches = runs.map((run, i) => ({ ...run, images: images[i] })).filter((b) => b.end <= end);
      const busyMs = sum(batches.map((b) => Math.min(b.ms, b.end - start)));
      served.push({
        precision, queue, served: r.accepted.length / r.seconds, p50: percentile(r.accepted, 50), p99: percentile(r.accepted, 99),
        refused: r.refused.length, refusalP99: percentile(r.refused, 99), errors: r.errors, limit: maxLatencyMs,
        meanBatch: sum(batches.map((b) => b.images)) / batches.length, busy: busyMs / (end - start), stolen: loadSteal.since(), batches,
      });
    }
    log(`bench: ${precision}: serving alone, with a model that answers at once`);
    overhead ??= await servingOverhead(model);
    log(`bench: ${precision}: refusals from a bare node:http server next to the running engine`);
    const bareP99 = percentile(await bareRefusals(model), 99);
    log(`bench: ${precision}: model.run again, and at the batch sizes the servers ran`);
    steal = stolen();
    const after = await measureRuns(model, runTimes, served.flatMap((s) => s.batches.map((b) => b.size)));
    log(`bench: ${precision}: model.run images/s ${after} (${(100 * steal.since()).toFixed(0)}% of the CPU stolen)`);
    // The best of batch 1, 2, 4 and 8, each at its fastest of before and after.
    const [runBatch, bestMs] = [1, 2, 4, 8].map((b) => [b, runTimes.get(b)! / b]).sort((a, b) => a[1] - b[1])[0];
    for (const { batches, ...s } of served) {
      const runMsTotal = sum(batches.map((b) => runTimes.get(b.size)!));
      rows.push({
        ...s, run: 1000 / bestMs, runBatch, bareP99,
        runAtServed: (sum(batches.map((b) => b.images)) * 1000) / runMsTotal, slowdown: sum(batches.map((b) => b.ms)) / runMsTotal,
      });
    }
    await model.dispose();
  }

  console.log(`\n${path.basename(weights)} on ${device}, ${threads} threads, 64 connections, ${duration} s per row, coffee.jpg (600x400) per request, fc7, --max-batch ${maxBatch}; clients ${honourRetryAfter ? 'wait the Retry-After-Ms of a 503' : 'retry a 503 at once'}\n`);
  console.log('| precision | queue | model.run best images/s | served images/s | vs model.run | mean batch | p50 ms | p99 ms | p99 vs limit | refused | refusal p99 ms | errors |');
  console.log('|---|---|---|---|---|---|---|---|---|---|---|---|');
  const ms = (v: number) => (Number.isNaN(v) ? '—' : v.toFixed(v < 10 ? 1 : 0));
  for (const r of rows) {
    console.log(`| ${r.precision} | ${r.queue} | ${r.run.toFixed(1)} (batch ${r.runBatch}) | ${r.served.toFixed(1)} | ${(r.served / r.run).toFixed(2)}x | ${r.meanBatch.toFixed(1)} | ${ms(r.p50)} | ${ms(r.p99)} | ${r.limit ? `${(r.p99 / r.limit).toFixed(2)}x` : '—'} | ${r.refused} | ${ms(r.refusalP99)} | ${r.errors} |`);
  }
  // served = model.run at the served batches x busy / slowdown: where the images/s went.
  console.log('\n| precision | queue | served vs model.run best | model.run at the served batches vs best | engine busy | batches vs model.run at their sizes | CPU stolen by the hypervisor |');
  console.log('|---|---|---|---|---|---|---|');
  for (const r of rows) {
    console.log(`| ${r.precision} | ${r.queue} | ${(r.served / r.run).toFixed(2)}x | ${(r.runAtServed / r.run).toFixed(2)}x | ${(100 * r.busy).toFixed(0)}% | ${r.slowdown.toFixed(2)}x slower | ${(100 * r.stolen).toFixed(0)}% |`);
  }
  for (const p of precisions) {
    const r = rows.find((row) => row.precision === p)!;
    console.log(`${p}: refusal p99 of a bare node:http 503 under the same load, next to the engine running batches of 8: ${ms(r.bareP99)} ms`);
  }
  const o = overhead!;
  console.log(`\nserving alone (a model that answers at once): ${o.requestsPerSecond.toFixed(0)} requests/s, ${o.perRequestMs.toFixed(1)} ms CPU per request (server and load generator), of which preprocessing ${o.preprocessMs.toFixed(1)} ms`);
  for (const r of rows.filter((row) => row.limit)) {
    const ceiling = 1 / (1 / r.run + o.perRequestMs / 1000 / threads);
    console.log(`${r.precision}: serving's CPU on ${threads} cores leaves at most ${ceiling.toFixed(1)} images/s, ${(ceiling / r.run).toFixed(2)}x model.run`);
  }
  for (const r of rows.filter((row) => row.limit)) {
    const met = (ok: boolean) => (ok ? 'met' : 'NOT met');
    console.log(`${r.precision}, ${r.queue}: served ${(r.served / r.run).toFixed(2)}x model.run (target ≥ 0.9x, ${met(r.served >= 0.9 * r.run)}); p99 ${(r.p99 / r.limit!).toFixed(2)}x the limit (target ≤ 1.5x, ${met(r.p99 <= 1.5 * r.limit!)}); refusals p99 ${ms(r.refusalP99)} ms (target < 50 ms, ${met(!(r.refusalP99 >= 50))}; a bare server's ${ms(r.bareP99)} ms)`);
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
