// End-to-end `extract` (decode, resize, crop, normalize, batch, infer) against the model alone
// on the same tensors, same weights, same process: how much the image pipeline costs.
//
// usage: npm run bench:extract [-- --images 48 --batch 8 --rounds 3 --threads 2]
// Uses seeded random VGG16 weights (the figures do not depend on the values) and photo-sized
// JPEGs made from samples/ (640x480). Rounds alternate the two modes; each figure is a median.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import sharp from 'sharp';
import { loadModel, preprocess, type Tensor } from '../lib';
import { defaultWeights } from '../lib/weights/default-weights';

function flag(name: string, fallback: number): number {
  const at = process.argv.indexOf(`--${name}`);
  return at > 0 ? Number(process.argv[at + 1]) : fallback;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

async function makeImages(count: number): Promise<string[]> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vggnet-bench-'));
  const samples = path.resolve(__dirname, '../../samples');
  const sources = fs.readdirSync(samples).map((f) => path.join(samples, f));
  return Promise.all(Array.from({ length: count }, async (_, i) => {
    const file = path.join(dir, `${String(i).padStart(5, '0')}.jpg`);
    await sharp(sources[i % sources.length]).resize(640, 480, { fit: 'fill' }).rotate(i % 2 ? 0 : 180).jpeg({ quality: 88 }).toFile(file);
    return file;
  }));
}

async function main(): Promise<void> {
  const images = flag('images', 48), batch = flag('batch', 8), rounds = flag('rounds', 3), threads = flag('threads', os.availableParallelism());
  const files = await makeImages(images);
  const model = await loadModel(await defaultWeights({ quiet: true }), { threads });
  const tensors = await Promise.all(files.map((f) => preprocess(f)));
  const batches: Tensor[] = [];
  for (let i = 0; i < tensors.length; i += batch) {
    const group = tensors.slice(i, i + batch);
    const data = new Float32Array(group.length * group[0].data.length);
    group.forEach((t, j) => data.set(t.data, j * t.data.length));
    batches.push({ data, shape: [group.length, 3, 224, 224] });
  }
  await model.run(batches[0], { outputs: ['fc7'] }); // compile the shape once

  const modelOnly: number[] = [], endToEnd: number[] = [];
  for (let r = 0; r < rounds; r++) {
    let t = performance.now();
    for (const b of batches) await model.run(b, { outputs: ['fc7'] });
    modelOnly.push((images * 1000) / (performance.now() - t));
    t = performance.now();
    let n = 0;
    for await (const rec of model.extract(files, { outputs: ['fc7'], batchSize: batch })) n += rec.outputs ? 1 : 0;
    if (n !== images) throw new Error(`extract returned ${n} of ${images} images`);
    endToEnd.push((images * 1000) / (performance.now() - t));
  }
  await model.dispose();
  fs.rmSync(path.dirname(files[0]), { recursive: true, force: true });

  const m = median(modelOnly), e = median(endToEnd);
  console.log(`\nVGG16 fp32, fc7, ${images} JPEGs 640x480, batch ${batch}, ${threads} threads, median of ${rounds} rounds\n`);
  console.log('| pipeline | images/s | vs model only |');
  console.log('|---|---|---|');
  console.log(`| model.run on preprocessed tensors | ${m.toFixed(2)} | 1.00x |`);
  console.log(`| model.extract from JPEG files | ${e.toFixed(2)} | ${(e / m).toFixed(2)}x |`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
