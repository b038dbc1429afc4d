// One engine in its own process, as bench/compare.ts starts it: load, first result, batch-1
// latency, peak RSS, then batch throughput; one JSON line on stdout. With `hold`, it stops after
// the batch-1 phase, says so, and waits for stdin to close (the parent reads its memory then).
//
// usage: node dist/bench/engine.js '<EngineConfig as JSON>'
import { mulberry32 } from '../lib/weights/random';
import { peerRequire } from './onnx-vgg';

export interface EngineConfig {
  engine: 'vggnet' | 'ort';
  file: string;
  threads: number;
  precision?: 'fp32' | 'bf16' | 'int8';
  winograd?: boolean;
  calibration?: string;
  /** Timed batch-1 runs after the first result. */
  latencyRuns: number;
  /** Batch size and timed runs for throughput; none with `hold`. */
  batch: number;
  batchRuns: number;
  hold?: boolean;
}

export interface EngineResult {
  loadMs: number;
  latencyMs: number;
  peakRssMb: number;
  imagesPerSecond?: number;
  /** fc8 of the batch-1 input, to check that the engines compute the same network. */
  fc8: number[];
}

type Runner = (data: Float32Array, n: number) => Promise<Float32Array>;

/** The same pseudo-random input for every engine: roughly a normalized image's range. */
function input(n: number): Float32Array {
  const next = mulberry32(7);
  const data = new Float32Array(n * 3 * 224 * 224);
  for (let i = 0; i < data.length; i++) data[i] = (next() / 2 ** 32 - 0.5) * 4;
  return data;
}

async function load(c: EngineConfig): Promise<Runner> {
  if (c.engine === 'ort') {
    const ort = peerRequire('onnxruntime-node');
    const session = await ort.InferenceSession.create(c.file, {
      intraOpNumThreads: c.threads, interOpNumThreads: 1, executionMode: 'sequential', graphOptimizationLevel: 'all',
    });
    return async (data, n) => (await session.run({ input: new ort.Tensor('float32', data, [n, 3, 224, 224]) })).fc8.data as Float32Array;
  }
  const { loadModel } = await import('../lib');
  const model = await loadModel(c.file, {
    threads: c.threads,
    ...(c.precision ? { precision: c.precision } : {}),
    ...(c.winograd ? { winograd: true } : {}),
    ...(c.calibration ? { calibration: c.calibration } : {}),
  });
  return async (data, n) => (await model.run({ data, shape: [n, 3, 224, 224] }, { outputs: ['fc8'] })).fc8.data;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

async function main(): Promise<void> {
  const c = JSON.parse(process.argv[2]) as EngineConfig;
  const one = input(1);
  const started = performance.now();
  const run = await load(c);
  const fc8 = await run(one, 1);
  const loadMs = performance.now() - started;

  const latencies: number[] = [];
  for (let i = 0; i < c.latencyRuns; i++) {
    const t = performance.now();
    await run(one, 1);
    latencies.push(performance.now() - t);
  }
  const result: EngineResult = {
    loadMs, latencyMs: median(latencies), peakRssMb: process.resourceUsage().maxRSS / 1024, fc8: Array.from(fc8),
  };
  if (c.hold) {
    process.stdout.write(`${JSON.stringify(result)}\n`);
    process.stdin.resume();
    await new Promise((resolve) => process.stdin.on('end', resolve));
    process.exit(0);
  }

  const batch = input(c.batch);
  await run(batch, c.batch); // the first run of a shape compiles it
  const rates: number[] = [];
  for (let i = 0; i < c.batchRuns; i++) {
    const t = performance.now();
    await run(batch, c.batch);
    rates.push((c.batch * 1000) / (performance.now() - t));
  }
  result.imagesPerSecond = median(rates);
  process.stdout.write(`${JSON.stringify(result)}\n`);
  process.exit(0);
}

main().catch((e) => {
  process.stderr.write(`${(e as Error).stack}\n`);
  process.exit(1);
});
