// End-to-end `extract` (decode, resize, crop, normalize, batch, infer) against the model alone
// on the same tensors, same weights, same process, at each CPU precision: how much the image
// pipeline costs once inference is fast (bf16, int8) and the two share the cores.
//
// usage: npm run bench:extract [-- --images 48 --batch 8 --rounds 3 --threads 2 --precisions fp32,bf16,int8]
// Uses seeded random VGG16 weights (the figures do not depend on the values) and photo-sized
// JPEGs made from samples/ (640x480); int8's calibration is measured on samples/. Per precision,
// rounds alternate the modes (model alone, extract, decoding alone, one image at a time); each
// figure is a median. Besides images/s, each mode's CPU time per image (all threads): on a machine
// that other work shares, the ratio of CPU times is what the throughputs would be with the cores
// to ourselves (both modes keep every core busy), where wall-clock rates mostly measure the others.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import sharp from 'sharp';
import { loadModel, preprocess, type Tensor } from '../lib';
import { preprocessPixels } from '../lib/images/preprocess';
import { native } from '../lib/native';
import { calibrate } from '../lib/tasks/calibrate';
import { stack } from '../lib/tasks/extract';
import type { Calibration } from '../lib/weights/calibration';
import { defaultWeights } from '../lib/weights/default-weights';

function flag(name: string, fallback: string): string {
  const at = process.argv.indexOf(`--${name}`);
  return at > 0 ? process.argv[at + 1] : fallback;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const SAMPLES = path.resolve(__dirname, '../../samples');

async function makeImages(count: number): Promise<string[]> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vggnet-bench-'));
  const sources = fs.readdirSync(SAMPLES).map((f) => path.join(SAMPLES, f));
  return Promise.all(Array.from({ length: count }, async (_, i) => {
    const file = path.join(dir, `${String(i).padStart(5, '0')}.jpg`);
    await sharp(sources[i % sources.length]).resize(640, 480, { fit: 'fill' }).rotate(i % 2 ? 0 : 180).jpeg({ quality: 88 }).toFile(file);
    return file;
  }));
}

interface Rate { perSecond: number; cpuMs: number }

/** Images per second of `fn` over `images` images, and the CPU time (all of the process's threads) per image. */
async function rate(images: number, fn: () => Promise<void>): Promise<Rate> {
  const [t, cpu] = [performance.now(), process.cpuUsage()];
  await fn();
  const { user, system } = process.cpuUsage(cpu);
  return { perSecond: (images * 1000) / (performance.now() - t), cpuMs: (user + system) / 1000 / images };
}

type Precision = 'fp32' | 'bf16' | 'int8';
interface Row { precision: Precision; run: Rate; extract: Rate; decode: Rate }

async function main(): Promise<void> {
  const images = Number(flag('images', '48')), batch = Number(flag('batch', '8')), rounds = Number(flag('rounds', '3'));
  const threads = Number(flag('threads', String(os.availableParallelism())));
  const precisions = flag('precisions', 'fp32,bf16,int8').split(',') as Precision[];
  const files = await makeImages(images);
  const weights = await defaultWeights({ quiet: true });
  const tensors = await Promise.all(files.map((f) => preprocess(f)));
  const batches: Tensor[] = [];
  for (let i = 0; i < tensors.length; i += batch) batches.push(stack(tensors.slice(i, i + batch)));
  let calibration: Calibration | undefined;
  if (precisions.includes('int8')) calibration = await calibrate(weights, fs.readdirSync(SAMPLES).map((f) => path.join(SAMPLES, f)), { threads });

  const rows: Row[] = [];
  for (const precision of precisions) {
    const model = await loadModel(weights, { threads, precision, ...(precision === 'int8' ? { calibration } : {}) });
    await model.run(batches[0], { outputs: ['fc7'] }); // compile the shape once
    const run: Rate[] = [], extract: Rate[] = [], decode: Rate[] = [];
    for (let r = 0; r < rounds; r++) {
      run.push(await rate(images, async () => {
        for (const b of batches) await model.run(b, { outputs: ['fc7'] });
      }));
      extract.push(await rate(images, async () => {
        let n = 0;
        for await (const rec of model.extract(files, { outputs: ['fc7'], batchSize: batch })) n += rec.outputs ? 1 : 0;
        if (n !== images) throw new Error(`extract returned ${n} of ${images} images`);
      }));
      decode.push(await rate(images, async () => {
        for (const f of files) await preprocessPixels(f); // one at a time: one core's worth
      }));
    }
    await model.dispose();
    const medians = (rs: Rate[]) => ({ perSecond: median(rs.map((r) => r.perSecond)), cpuMs: median(rs.map((r) => r.cpuMs)) });
    rows.push({ precision, run: medians(run), extract: medians(extract), decode: medians(decode) });
  }
  fs.rmSync(path.dirname(files[0]), { recursive: true, force: true });

  const isa = native().versions().isa ?? 'unknown';
  console.log(`\nVGG16, fc7, ${images} JPEGs 640x480, batch ${batch}, ${threads} threads, ${os.availableParallelism()} cores (oneDNN ISA ${isa}), median of ${rounds} rounds, ${new Date().toISOString().slice(0, 10)}\n`);
  console.log('| precision | `model.run` on preprocessed tensors, images/s | `model.extract` from JPEG files, images/s | extract vs run | CPU ms per image, run / extract / decoding alone | extract vs run by CPU time |');
  console.log('|---|---|---|---|---|---|');
  for (const { precision, run, extract, decode } of rows) {
    const cpu = [run, extract, decode].map((r) => r.cpuMs.toFixed(1)).join(' / ');
    console.log(`| ${precision} | ${run.perSecond.toFixed(2)} | ${extract.perSecond.toFixed(2)} | ${(extract.perSecond / run.perSecond).toFixed(2)}x | ${cpu} | ${(run.cpuMs / extract.cpuMs).toFixed(2)}x |`);
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
