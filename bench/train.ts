// Training speed (issue 17): vgg train's feature caching (images/s through VGG16's conv layers
// into the cache) against vgg extract's pipeline on the same images; then epochs of fc8 alone
// and of fc6-fc8 on cached VGG16 features at batch 64, vggnet's FcTrainer against PyTorch
// (Debian's python3-torch, CPU, same threads) doing the same epochs on the same features,
// rounds alternated, medians.
//
// usage: npm run bench:train [-- --rows 256 --batch 64 --rounds 3 --epochs 1 --threads N --images 32]
// The features are seeded random values (the figures do not depend on them): pool5 [rows, 25088]
// for fc6-fc8 and fc7 [rows, 4096] for fc8 alone, 1000 classes. Both sides use dropout 0.5
// (on fc8's fc7 input too, as VGG has), SGD with momentum 0.9 and weight decay 5e-4.
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as readline from 'node:readline';
import { FcTrainer, type FcLayerInit } from '../lib/engine';
import { loadModel } from '../lib/model';
import { defaultWeights } from '../lib/weights';
import { fillCache, imageViews, openCache } from '../lib/train/features';
import { native } from '../lib/native';
import { mulberry32 } from '../lib/weights/random';

function flag(name: string, fallback: number): number {
  const at = process.argv.indexOf(`--${name}`);
  return at > 0 ? Number(process.argv[at + 1]) : fallback;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const CLASSES = 1000;

function randoms(count: number, seed: number, scale: number): Float32Array {
  const next = mulberry32(seed);
  const out = new Float32Array(count);
  for (let i = 0; i < count; i++) out[i] = (next() / 4294967296 - 0.5) * scale;
  return out;
}
const linear = (outputs: number, inputs: number, seed: number): FcLayerInit => ({ weight: randoms(outputs * inputs, seed, 0.02), bias: new Float32Array(outputs) });

/** The PyTorch peer: one process, one JSON line per round asked of it. */
async function startTorch(config: { threads: number } & Record<string, unknown>) {
  const child = spawn('/usr/bin/python3', [path.join(__dirname, '../../bench/train_torch.py'), JSON.stringify(config)], {
    stdio: ['pipe', 'pipe', 'inherit'], env: { OPENBLAS_NUM_THREADS: String(config.threads), ...process.env },
  });
  const lines = readline.createInterface({ input: child.stdout })[Symbol.asyncIterator]();
  const next = async () => {
    const { value, done } = await lines.next();
    if (done) throw new Error('the PyTorch peer exited');
    return JSON.parse(value as string);
  };
  const hello = (await next()) as { torch: string; threads: number; blas: string[] };
  return {
    hello,
    async epochs(name: string, count: number): Promise<number> {
      child.stdin.write(`${name} ${count}\n`);
      return ((await next()) as { seconds: number }).seconds;
    },
    close: () => child.stdin.end(),
  };
}

/**
 * vgg train's first pass (the samples, repeated to `count` images, through VGG16 into a fresh
 * feature cache of fc7) and extract's pipeline on the same images, alternated: images/s each.
 */
async function caching(count: number, rounds: number, threads: number): Promise<[number[], number[]]> {
  const samples = path.resolve(__dirname, '../../samples');
  const photos = fs.readdirSync(samples).filter((f) => /\.(jpe?g|png)$/i.test(f)).map((f) => path.join(samples, f));
  const examples = Array.from({ length: count }, (_, i) => ({ image: photos[i % photos.length], id: `${i}:${photos[i % photos.length]}`, label: 0 }));
  const weights = await defaultWeights();
  const model = await loadModel(weights, { threads });
  const cached: number[] = [], extracted: number[] = [];
  try {
    for await (const _ of model.extract(photos, { outputs: ['fc7'] })); // compile the primitives for both
    for (let r = 0; r < rounds; r++) {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vggnet-bench-cache-'));
      const views = imageViews(examples, [], 1, 0);
      let t = performance.now();
      await fillCache(await openCache(dir, { weights, blob: 'fc7', preset: 'torchvision', engine: {}, views }), model, views, 'fc7', {});
      cached.push((count * 1000) / (performance.now() - t));
      fs.rmSync(dir, { recursive: true, force: true });
      t = performance.now();
      for await (const _ of model.extract(examples.map((e) => e.image), { outputs: ['fc7'] }));
      extracted.push((count * 1000) / (performance.now() - t));
    }
  } finally {
    await model.dispose();
  }
  return [cached, extracted];
}

async function main(): Promise<void> {
  const rows = flag('rows', 256), batch = flag('batch', 64), rounds = flag('rounds', 3), epochs = flag('epochs', 1);
  const threads = flag('threads', os.availableParallelism());
  const [cached, extracted] = await caching(flag('images', 32), rounds, threads);
  console.error(`feature caching: ${cached.map((v) => v.toFixed(1)).join(', ')}; extract ${extracted.map((v) => v.toFixed(1)).join(', ')} images/s`);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vggnet-bench-train-'));
  const pool5 = randoms(rows * 25088, 1, 2).map(Math.abs), fc7 = randoms(rows * 4096, 2, 2).map(Math.abs);
  const labels = Int32Array.from({ length: rows }, (_, i) => (i * 7919) % CLASSES);
  const files = { pool5: path.join(dir, 'pool5.f32'), fc7: path.join(dir, 'fc7.f32'), labels: path.join(dir, 'labels.i32') };
  fs.writeFileSync(files.pool5, pool5);
  fs.writeFileSync(files.fc7, fc7);
  fs.writeFileSync(files.labels, labels);
  const torch = await startTorch({ ...files, threads, batch, rows, classes: CLASSES });

  const configs = [
    { name: 'fc8', label: 'fc8 alone (fc7 features 4096 → 1000)', features: fc7, inputs: 4096, layers: [linear(CLASSES, 4096, 3)], inputDropout: true },
    {
      name: 'fc6-fc8', label: 'fc6–fc8 (pool5 features 25088 → 4096 → 4096 → 1000)', features: pool5, inputs: 25088,
      layers: [linear(4096, 25088, 4), linear(4096, 4096, 5), linear(CLASSES, 4096, 6)], inputDropout: false,
    },
  ];
  // The caching row's peer is vgg extract's pipeline on the same images (PyTorch does not take part in it).
  const table: string[][] = [[`feature caching (vgg train's first pass: VGG16 to fc7, ${flag('images', 32)} images, journaled)`,
    median(cached).toFixed(1), `vgg extract: ${median(extracted).toFixed(1)}`, `${(median(cached) / median(extracted)).toFixed(2)}x extract`]];
  for (const c of configs) {
    const trainer = await FcTrainer.create({ layers: c.layers, learningRate: 0.01, inputDropout: c.inputDropout, threads });
    const batches: [Float32Array, Int32Array][] = [];
    for (let at = 0; at < rows; at += batch) {
      const n = Math.min(batch, rows - at);
      batches.push([c.features.subarray(at * c.inputs, (at + n) * c.inputs), labels.subarray(at, at + n)]);
    }
    const ours = async () => {
      const t = performance.now();
      for (let e = 0; e < epochs; e++) for (const [x, y] of batches) await trainer.step(x, y);
      return (rows * epochs * 1000) / (performance.now() - t);
    };
    await ours(); // compile the primitives once, as PyTorch warms up below
    await torch.epochs(c.name, 1);
    const mine: number[] = [], theirs: number[] = [];
    for (let r = 0; r < rounds; r++) {
      mine.push(await ours());
      theirs.push((rows * epochs) / (await torch.epochs(c.name, epochs)));
    }
    await trainer.dispose();
    const [m, p] = [median(mine), median(theirs)];
    table.push([c.label, m.toFixed(1), p.toFixed(1), `${(m / p).toFixed(2)}x`]);
    console.error(`${c.name}: vggnet ${mine.map((v) => v.toFixed(1)).join(', ')}; PyTorch ${theirs.map((v) => v.toFixed(1)).join(', ')} images/s`);
  }
  torch.close();
  fs.rmSync(dir, { recursive: true, force: true });

  const { isa, onednn } = native().versions();
  console.log(`\nTraining at batch ${batch} on ${rows} cached feature rows, ${epochs} epoch(s) a round, ${threads} threads, median of ${rounds} rounds alternated`);
  console.log(`(oneDNN ${onednn}, ${isa}; PyTorch ${torch.hello.torch} on the CPU with ${torch.hello.blas.join(', ') || 'no BLAS library'})\n`);
  console.log('| what | vggnet images/s | PyTorch images/s | vggnet / PyTorch |');
  console.log('|---|---|---|---|');
  for (const r of table) console.log(`| ${r.join(' | ')} |`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
