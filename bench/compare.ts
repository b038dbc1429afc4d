// vggnet against onnxruntime-node on this machine, fp32 and int8: VGG16 at 224x224, the same
// weights (for int8 the same calibration), the same thread count, each engine in its own process
// (so load time and memory are its own), rounds alternating the engines, every figure the median
// over rounds. Prints one table and the issue's targets as ratios measured in this run.
//
// usage: npm run bench [-- --rounds 3 --threads 2 --batch 8]
// The first run installs onnxruntime-node into bench/peer (--ignore-scripts: its CPU binaries
// ship in the package), writes a calibration from samples/, the fp32 and int8 (QDQ) ONNX files
// and the packed files next to the seeded random VGG16 in the vggnet cache folder; later runs
// reuse them.
import { execFileSync, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { calibrate } from '../lib/tasks/calibrate';
import { writeCalibration, type Calibration } from '../lib/weights/calibration';
import { cacheDir, defaultWeights } from '../lib/weights/default-weights';
import { native } from '../lib/native';
import { packWeights } from '../lib/tasks/pack';
import { countMacs, presetArch } from '../lib/arch/topology';
import type { EngineConfig, EngineResult } from './engine';
import { PEER_DIR, writeVggOnnx } from './onnx-vgg';
import { inputRange, optimizedOps, writeQdqOnnx } from './onnx-qdq';

function flag(name: string, fallback: number): number {
  const at = process.argv.indexOf(`--${name}`);
  return at > 0 ? Number(process.argv[at + 1]) : fallback;
}
const rounds = flag('rounds', 3), threads = flag('threads', os.availableParallelism()), batch = flag('batch', 8);
const ROOT = path.resolve(__dirname, '../..');
const DIR = path.join(cacheDir(), 'bench');
const GFLOP = (2 * countMacs(presetArch('D'))) / 1e9;
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const log = (s: string) => process.stderr.write(`${s}\n`);

interface Setup { name: string; precision: string; config: Omit<EngineConfig, 'latencyRuns' | 'batch' | 'batchRuns' | 'threads'> }

/** Built once, reused while the weights file is older than them. */
async function cached(file: string, source: string, make: () => Promise<void>): Promise<string> {
  const fresh = fs.existsSync(file) && fs.statSync(file).mtimeMs >= fs.statSync(source).mtimeMs;
  if (!fresh) {
    log(`bench: making ${file}`);
    await make();
  }
  return file;
}

/** The fp32 FMA peak on `threads` threads (GFLOP/s): the best of three ~1 s probes, as the machine is shared. */
function fmaPeak(kind: 'fp32' | 'vnni' = 'fp32'): number {
  const bin = path.join(DIR, 'fma-peak');
  return Math.max(...[0, 1, 2].map(() => Number(execFileSync(bin, [String(threads), kind], { encoding: 'utf8' }))));
}

/** The int8 VNNI dot-product peak (GOP/s) the same way, or undefined on a CPU without VNNI (fma-peak exits 2). */
function vnniPeak(): number | undefined {
  try {
    return fmaPeak('vnni');
  } catch (e) {
    if ((e as { status?: number }).status === 2) return undefined;
    throw e;
  }
}

async function prepare(): Promise<{ setups: Setup[]; packed: string; qdq: string }> {
  if (!fs.existsSync(path.join(PEER_DIR, 'node_modules', 'onnxruntime-node'))) {
    log('bench: installing onnxruntime-node into bench/peer (npm ci --ignore-scripts)');
    execFileSync('npm', ['ci', '--ignore-scripts', '--no-audit', '--no-fund'], { cwd: PEER_DIR, stdio: 'inherit' });
  }
  fs.mkdirSync(DIR, { recursive: true });
  const weights = await defaultWeights();
  const onnx = await cached(path.join(DIR, 'vgg16.onnx'), weights, () => writeVggOnnx(weights, path.join(DIR, 'vgg16.onnx')));
  const samples = fs.readdirSync(path.join(ROOT, 'samples')).map((f) => path.join(ROOT, 'samples', f));
  const calib = await cached(path.join(DIR, 'vgg16.calib.json'), weights, async () => {
    writeCalibration(path.join(DIR, 'vgg16.calib.json'), await calibrate(weights, samples, { threads }));
  });
  // onnxruntime's int8 takes vggnet's ranges; only the input's, which vggnet reads in float32, is measured here.
  const qdq = await cached(path.join(DIR, 'vgg16.qdq.onnx'), calib, async () => {
    await writeQdqOnnx(weights, path.join(DIR, 'vgg16.qdq.onnx'), JSON.parse(fs.readFileSync(calib, 'utf8')) as Calibration, await inputRange(samples));
  });
  const shapes: [number, number, number, 'fixed'][] = [[1, 224, 224, 'fixed'], [batch, 224, 224, 'fixed']];
  const packedFp32 = await cached(path.join(DIR, `vgg16.fp32.b${batch}.packed`), weights, async () => {
    await packWeights(weights, path.join(DIR, `vgg16.fp32.b${batch}.packed`), { shapes, threads });
  });
  const packedInt8 = await cached(path.join(DIR, `vgg16.int8.b${batch}.packed`), calib, async () => {
    await packWeights(weights, path.join(DIR, `vgg16.int8.b${batch}.packed`), { precision: 'int8', calibration: calib, shapes, threads });
  });
  const peakBin = path.join(DIR, 'fma-peak');
  await cached(peakBin, path.join(ROOT, 'bench/fma-peak.c'), async () => {
    execFileSync('cc', ['-O3', '-funroll-loops', '-march=native', '-fopenmp', path.join(ROOT, 'bench/fma-peak.c'), '-o', peakBin]);
  });

  const vgg = (precision: 'fp32' | 'bf16' | 'int8', extra: Partial<EngineConfig> = {}) => ({ engine: 'vggnet' as const, file: weights, precision, ...extra });
  return {
    packed: packedFp32,
    qdq,
    setups: [
      { name: 'onnxruntime-node', precision: 'fp32', config: { engine: 'ort', file: onnx } },
      { name: 'onnxruntime-node', precision: 'int8', config: { engine: 'ort', file: qdq } },
      { name: 'vggnet', precision: 'fp32', config: vgg('fp32') },
      { name: 'vggnet', precision: 'fp32 Winograd', config: vgg('fp32', { winograd: true }) },
      { name: 'vggnet', precision: 'bf16', config: vgg('bf16') },
      { name: 'vggnet', precision: 'int8', config: vgg('int8', { calibration: calib }) },
      { name: 'vggnet, packed file', precision: 'fp32', config: { engine: 'vggnet', file: packedFp32 } },
      { name: 'vggnet, packed file', precision: 'int8', config: { engine: 'vggnet', file: packedInt8 } },
    ],
  };
}

/** Starts one engine process; with `hold` it resolves once the batch-1 phase is done, still running. */
function start(config: EngineConfig): { result: Promise<EngineResult>; pid: number; release: () => void } {
  const child = spawn(process.execPath, [path.join(__dirname, 'engine.js'), JSON.stringify(config)], { stdio: ['pipe', 'pipe', 'inherit'] });
  let out = '';
  const result = new Promise<EngineResult>((resolve, reject) => {
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.endsWith('\n')) resolve(JSON.parse(out) as EngineResult);
    });
    child.on('exit', (code) => { if (code !== 0) reject(new Error(`${config.engine} ${config.file}: exit ${code}`)); });
  });
  return { result, pid: child.pid!, release: () => child.stdin.end() };
}

/** Proportional set size: shared pages count 1/N to each of the N processes mapping them. */
function pssMb(pid: number): number {
  const m = /^Pss:\s+(\d+) kB/m.exec(fs.readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'));
  return Number(m![1]) / 1024;
}

/** The sum of the PSS of `count` processes that loaded `file` and ran batch 1, all alive at once. */
async function sharedPss(file: string, count: number): Promise<number> {
  const procs = Array.from({ length: count }, () => start({ engine: 'vggnet', file, threads: 1, latencyRuns: 1, batch: 1, batchRuns: 0, hold: true }));
  await Promise.all(procs.map((p) => p.result));
  const total = procs.reduce((s, p) => s + pssMb(p.pid), 0);
  procs.forEach((p) => p.release());
  return total;
}

function relError(a: number[], b: number[]): number {
  let diff = 0, max = 0;
  for (let i = 0; i < a.length; i++) { diff = Math.max(diff, Math.abs(a[i] - b[i])); max = Math.max(max, Math.abs(b[i])); }
  return diff / max;
}

async function main(): Promise<void> {
  const { setups, packed, qdq } = await prepare();
  // The int8 peer is only a peer if onnxruntime fused the QDQ graph: no float Conv or Gemm may be left.
  const ops = await optimizedOps(qdq, path.join(DIR, 'vgg16.qdq.optimized.onnx'), threads);
  const fused = Object.entries(ops).sort().map(([op, n]) => `${n} ${op}`).join(', ');
  if (ops.Conv || ops.Gemm) throw new Error(`onnxruntime left float Conv or Gemm nodes in the QDQ model: ${fused}`);
  const peaks = [fmaPeak()];
  const int8Peaks = [vnniPeak()];
  const results: EngineResult[][] = setups.map(() => []);
  for (let r = 0; r < rounds; r++) {
    for (let k = 0; k < setups.length; k++) {
      const i = (k + r) % setups.length; // each round starts with a different engine
      log(`bench: round ${r + 1}/${rounds}: ${setups[i].name} ${setups[i].precision}`);
      const slow = setups[i].precision === 'bf16' && !/bf16|amx/.test(native().versions().isa ?? '');
      const config = { ...setups[i].config, threads, latencyRuns: slow ? 2 : 5, batch, batchRuns: slow ? 1 : 3 };
      results[i].push(await start(config).result);
    }
  }
  // before and after the rounds: the machine's load changes
  peaks.push(fmaPeak());
  int8Peaks.push(vnniPeak());
  const peak = Math.max(...peaks);
  const int8Peak = int8Peaks.includes(undefined) ? undefined : Math.max(...(int8Peaks as number[]));
  const med = results.map((rs) => ({
    loadMs: median(rs.map((x) => x.loadMs)), latencyMs: median(rs.map((x) => x.latencyMs)),
    peakRssMb: median(rs.map((x) => x.peakRssMb)), imagesPerSecond: median(rs.map((x) => x.imagesPerSecond!)), fc8: rs[0].fc8,
  }));
  const peer = med[0];
  const x = (v: number) => `${v.toFixed(2)}x`;

  const v = native().versions();
  console.log(`\nVGG16 224x224, ${threads} threads, batch ${batch}; oneDNN ${v.onednn} (${v.isa}); median of ${rounds} rounds alternating engines.`);
  console.log(`onnxruntime int8 runs the QDQ model as: ${fused}.`);
  console.log(`fp32 FMA peak measured here: ${peak.toFixed(0)} GFLOP/s; int8 VNNI peak: ${int8Peak === undefined ? 'no VNNI' : `${int8Peak.toFixed(0)} GOP/s`}; VGG16 is ${GFLOP.toFixed(1)} GFLOP per image.\n`);
  console.log(`| engine | precision | batch ${batch} images/s | GFLOP/s | % of fp32 peak | vs ort | batch 1 ms | vs ort | load to first result ms | vs ort | peak RSS at batch 1 MB | vs ort | fc8 vs ort |`);
  console.log('|---|---|---|---|---|---|---|---|---|---|---|---|---|');
  setups.forEach((s, i) => {
    const m = med[i];
    const gflops = m.imagesPerSecond * GFLOP;
    console.log(`| ${s.name} | ${s.precision} | ${m.imagesPerSecond.toFixed(2)} | ${gflops.toFixed(0)} | ${((100 * gflops) / peak).toFixed(0)}% | ${x(m.imagesPerSecond / peer.imagesPerSecond)} | ${m.latencyMs.toFixed(1)} | ${x(m.latencyMs / peer.latencyMs)} | ${m.loadMs.toFixed(0)} | ${x(m.loadMs / peer.loadMs)} | ${m.peakRssMb.toFixed(0)} | ${x(m.peakRssMb / peer.peakRssMb)} | ${i === 0 ? '—' : relError(m.fc8, peer.fc8).toExponential(1)} |`);
  });

  const one = await sharedPss(packed, 1);
  const four = await sharedPss(packed, 4);
  console.log(`\n4 processes on one packed fp32 file, batch 1: sum of PSS ${four.toFixed(0)} MB, one process ${one.toFixed(0)} MB: ${x(four / one)}`);

  // The issue's targets, each a ratio to onnxruntime-node in this run (or of PSS sums).
  const at = (name: string, precision: string) => med[setups.findIndex((s) => s.name === name && s.precision === precision)];
  const ratio = (m: typeof peer, key: 'imagesPerSecond' | 'latencyMs' | 'loadMs' | 'peakRssMb', base = peer) => m[key] / base[key];
  const ortInt8 = at('onnxruntime-node', 'int8');
  const targets: [string, number, '>=' | '<=', number][] = [
    ['batch 8 images/s, fp32', ratio(at('vggnet', 'fp32'), 'imagesPerSecond'), '>=', 1.0],
    ['batch 8 images/s, fp32 Winograd', ratio(at('vggnet', 'fp32 Winograd'), 'imagesPerSecond'), '>=', 1.6],
    ['batch 8 images/s, bf16', ratio(at('vggnet', 'bf16'), 'imagesPerSecond'), '>=', 5],
    ['batch 8 images/s, int8', ratio(at('vggnet', 'int8'), 'imagesPerSecond'), '>=', 8],
    ['batch 1 latency, fp32', ratio(at('vggnet', 'fp32'), 'latencyMs'), '<=', 1.0],
    ['batch 1 latency, bf16', ratio(at('vggnet', 'bf16'), 'latencyMs'), '<=', 0.4],
    ['batch 1 latency, int8', ratio(at('vggnet', 'int8'), 'latencyMs'), '<=', 0.25],
    ['batch 8 images/s, int8 / onnxruntime int8', ratio(at('vggnet', 'int8'), 'imagesPerSecond', ortInt8), '>=', 1.3],
    ['batch 1 latency, int8 / onnxruntime int8', ratio(at('vggnet', 'int8'), 'latencyMs', ortInt8), '<=', 0.8],
    ['load to first result, fp32', ratio(at('vggnet', 'fp32'), 'loadMs'), '<=', 0.3],
    ['load to first result, packed fp32', ratio(at('vggnet, packed file', 'fp32'), 'loadMs'), '<=', 0.05],
    ['load to first result, packed int8', ratio(at('vggnet, packed file', 'int8'), 'loadMs'), '<=', 0.05],
    ['peak RSS at batch 1, fp32', ratio(at('vggnet', 'fp32'), 'peakRssMb'), '<=', 0.7],
    ['peak RSS at batch 1, bf16', ratio(at('vggnet', 'bf16'), 'peakRssMb'), '<=', 0.4],
    ['PSS of 4 processes on one packed file / one process', four / one, '<=', 1.5],
  ];
  console.log('\n| target | measured | goal | |\n|---|---|---|---|');
  for (const [what, value, op, goal] of targets) {
    const met = op === '>=' ? value >= goal : value <= goal;
    console.log(`| ${what} | ${x(value)} | ${op} ${goal}x | ${met ? 'met' : '**missed**'} |`);
  }

  // How close both int8 engines are to what the cores can do, and what the int8 targets ask of them.
  if (int8Peak !== undefined) {
    const share = (gops: number) => `${gops.toFixed(0)} GOP/s, ${((100 * gops) / int8Peak).toFixed(0)}% of the VNNI peak`;
    const ours = at('vggnet', 'int8');
    console.log(`\nint8 against the VNNI peak (${int8Peak.toFixed(0)} GOP/s):`);
    for (const [name, m] of [['onnxruntime-node', ortInt8], ['vggnet', ours]] as const) {
      console.log(`- ${name}: batch ${batch} ${share(m.imagesPerSecond * GFLOP)}; batch 1 ${share(GFLOP / (m.latencyMs / 1000))}`);
    }
    console.log(`- 1.3x onnxruntime at batch ${batch} would be ${share(1.3 * ortInt8.imagesPerSecond * GFLOP)}`);
    console.log(`- 0.8x onnxruntime's batch-1 latency would be ${share(GFLOP / (0.8 * ortInt8.latencyMs / 1000))}`);
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
