// What issue 13's safeguards cost, each against its peer in the same run:
// - model.run copies its input when it queues the run: the copy of a batch of 32 224x224
//   against a run of that batch;
// - loading a packed file verifies each tensor's CRC-32: load with and without `verify`.
//
// usage: npm run bench:faults [-- --rounds 3 --threads 2]
// Seeded random VGG16 weights (the figures do not depend on the values), packed for fp32.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { loadModel } from '../lib';
import { packWeights } from '../lib/tasks/pack';
import { defaultWeights } from '../lib/weights/default-weights';

function flag(name: string, fallback: number): number {
  const at = process.argv.indexOf(`--${name}`);
  return at > 0 ? Number(process.argv[at + 1]) : fallback;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

async function timed(f: () => Promise<unknown> | unknown): Promise<number> {
  const started = performance.now();
  await f();
  return performance.now() - started;
}

async function main(): Promise<void> {
  const rounds = flag('rounds', 3);
  const threads = flag('threads', os.availableParallelism());
  const weights = await defaultWeights({ quiet: true });

  const model = await loadModel(weights, { threads });
  const input = new Float32Array(32 * 3 * 224 * 224).map((_, i) => (i % 255) / 128 - 1);
  await model.run({ data: input, shape: [32, 3, 224, 224] }, { outputs: ['prob'] });
  const copies: number[] = [];
  const runs: number[] = [];
  for (let r = 0; r < rounds; r++) {
    copies.push(median(await Promise.all(Array.from({ length: 9 }, () => timed(() => input.slice())))));
    runs.push(await timed(() => model.run({ data: input, shape: [32, 3, 224, 224] }, { outputs: ['prob'] })));
  }
  await model.dispose();
  const copy = median(copies);
  const run = median(runs);
  console.log(`input copy, batch 32x3x224x224 (${(input.byteLength / 1e6).toFixed(1)} MB): ${copy.toFixed(1)} ms; run of that batch ${run.toFixed(0)} ms; copy/run ${(100 * copy / run).toFixed(2)} %`);

  const packed = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'vggnet-bench-')), 'vgg16.packed');
  const { bytes } = await packWeights(weights, packed, { threads });
  const loads: Record<'verified' | 'trusted', number[]> = { verified: [], trusted: [] };
  for (let r = 0; r < rounds; r++) {
    for (const mode of ['verified', 'trusted'] as const) {
      let m: Awaited<ReturnType<typeof loadModel>> | undefined;
      loads[mode].push(await timed(async () => { m = await loadModel(packed, { threads, verify: mode === 'verified' }); }));
      await m!.dispose();
    }
  }
  const verified = median(loads.verified);
  const trusted = median(loads.trusted);
  console.log(`packed load, VGG16 fp32 (${(bytes / 1e6).toFixed(0)} MB): verify ${verified.toFixed(0)} ms, verify: false ${trusted.toFixed(0)} ms; checksums add ${(verified - trusted).toFixed(0)} ms (${(bytes / 1e6 / ((verified - trusted) / 1000)).toFixed(0)} MB/s), x${(verified / trusted).toFixed(2)}`);
  fs.rmSync(path.dirname(packed), { recursive: true, force: true });
}

main().catch((e) => { console.error(e); process.exit(1); });
