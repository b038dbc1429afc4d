// The test protocols' throughput on VGG16, and what the multi-crop pipeline costs over the
// network alone: evaluate() with one scale of multi-crop against model.run on the same 50 crops
// (the 5x5 grid and its mirrors, cut beforehand) as one batch, rounds alternated, medians.
//
// usage: npm run bench:eval [-- --images 2 --rounds 2 --threads 2 --protocols center,dense,multicrop,dense+multicrop]
// Seeded random VGG16 weights (the timings do not depend on the values), JPEGs made from
// samples/ at 500x375, the typical ILSVRC-2012 validation size. Every protocol at the paper's
// scales 256, 384, 512 (center at 256), dense and dense+multicrop with --flip.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import sharp from 'sharp';
import { loadModel, type Model, type Tensor } from '../lib';
import { defaultWeights } from '../lib/weights/default-weights';
import { preprocess } from '../lib/images/preprocess';
import { evaluate } from '../lib/tasks/eval';
import { gridOffsets, PROTOCOLS, type Protocol } from '../lib/tasks/protocols';

function flag(name: string, fallback: string): string {
  const at = process.argv.indexOf(`--${name}`);
  return at > 0 ? process.argv[at + 1] : fallback;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

async function makeImages(count: number): Promise<string[]> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vggnet-bench-eval-'));
  const samples = path.resolve(__dirname, '../../samples');
  const sources = fs.readdirSync(samples).filter((f) => f.endsWith('.jpg')).map((f) => path.join(samples, f));
  return Promise.all(Array.from({ length: count }, async (_, i) => {
    const file = path.join(dir, `${i}.jpg`);
    await sharp(sources[i % sources.length]).resize(500, 375, { fit: 'fill' }).jpeg({ quality: 90 }).toFile(file);
    return file;
  }));
}

/** The 25 grid crops and their 25 mirrors at Q = 256 as one batch [50, 3, 224, 224], cut here, independently of eval. */
async function crops50(file: string): Promise<Tensor> {
  const image = await preprocess(file, { size: 256, crop: false });
  const [, , h, w] = image.shape;
  const out = new Float32Array(50 * 3 * 224 * 224);
  gridOffsets(w, h).forEach(([x, y], n) => {
    for (let c = 0; c < 3; c++) {
      for (let r = 0; r < 224; r++) {
        const from = (c * h + y + r) * w + x;
        const at = ((n * 3 + c) * 224 + r) * 224;
        const mirrorAt = (((n + 25) * 3 + c) * 224 + r) * 224;
        out.set(image.data.subarray(from, from + 224), at);
        for (let i = 0; i < 224; i++) out[mirrorAt + i] = image.data[from + 223 - i];
      }
    }
  });
  return { data: out, shape: [50, 3, 224, 224] };
}

async function imagesPerSecond(model: Model, files: string[], protocol: Protocol, scales: number[], flip: boolean): Promise<number> {
  const summary = await evaluate(model, files.map((image) => ({ image, label: 0 })), { protocol, scales, flip });
  if (summary.images !== files.length) throw new Error(`evaluate scored ${summary.images} of ${files.length} images`);
  return summary.imagesPerSecond;
}

async function main(): Promise<void> {
  const count = Number(flag('images', '2')), rounds = Number(flag('rounds', '2'));
  const threads = Number(flag('threads', String(os.availableParallelism())));
  const protocols = flag('protocols', PROTOCOLS.join(',')).split(',') as Protocol[];
  const files = await makeImages(count);
  const model = await loadModel(await defaultWeights({ quiet: true }), { threads });
  const batches = await Promise.all(files.map(crops50));
  await model.run(batches[0], { head: 'fixed' }); // compile the shape once
  await imagesPerSecond(model, files.slice(0, 1), 'dense', [256, 384, 512], true); // and the dense ones

  const runOnly: number[] = [], multicrop1: number[] = [];
  for (let r = 0; r < rounds; r++) {
    const t = performance.now();
    for (const b of batches) await model.run(b, { head: 'fixed' });
    runOnly.push((count * 1000) / (performance.now() - t));
    multicrop1.push(await imagesPerSecond(model, files, 'multicrop', [256], false));
  }
  const rates = new Map<Protocol, number>();
  for (const protocol of protocols) {
    const scales = protocol === 'center' ? [256] : [256, 384, 512];
    const flip = protocol === 'dense' || protocol === 'dense+multicrop';
    rates.set(protocol, await imagesPerSecond(model, files, protocol, scales, flip));
  }
  await model.dispose();
  fs.rmSync(path.dirname(files[0]), { recursive: true, force: true });

  const [m, e] = [median(runOnly), median(multicrop1)];
  console.log(`\nVGG16 fp32, ${count} JPEGs 500x375, ${threads} threads; ${os.cpus()[0]?.model ?? 'CPU'}\n`);
  console.log('| protocol | scales | flip | runs per image | images/s | time vs dense |');
  console.log('|---|---|---|---|---|---|');
  const dense = rates.get('dense');
  for (const [protocol, rate] of rates) {
    const scales = protocol === 'center' ? '256' : '256,384,512';
    const flip = protocol === 'dense' || protocol === 'dense+multicrop' ? 'yes' : 'no';
    const runs = { center: '1 crop', dense: '3 images x 2 flips', multicrop: '150 crops', 'dense+multicrop': '150 crops + 3 images x 2 flips' }[protocol];
    console.log(`| ${protocol} | ${scales} | ${flip} | ${runs} | ${rate.toFixed(3)} | ${dense ? `${(dense / rate).toFixed(2)}x` : '-'} |`);
  }
  console.log(`\nMulti-crop at one scale (Q = 256, 50 crops per image), median of ${rounds} rounds alternated:\n`);
  console.log('| pipeline | images/s | vs model.run |');
  console.log('|---|---|---|');
  console.log(`| model.run on the 50 crops, cut beforehand, one batch | ${m.toFixed(3)} | 1.00x |`);
  console.log(`| evaluate(), protocol multicrop, scales [256], from JPEG files | ${e.toFixed(3)} | ${(e / m).toFixed(2)}x |`);
  console.log(`\ntarget: multi-crop >= 0.9x model.run: ${e / m >= 0.9 ? 'met' : 'MISSED'}`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
