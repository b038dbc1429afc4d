// The vggnet side of the GPU benchmark (issue #7), run by scripts/device-check.sh after
// bench/cuda_torch.py: the same VGG16 weights on the same card, bf16, batch 1, 32 and 256.
//
// usage: node dist/bench/cuda.js WEIGHTS.safetensors TORCH_RESULT.json
// Our figure is end to end (float32 NCHW from JS in, fc8 back in JS) with runs queued, so the
// input copy of one batch overlaps the compute of the previous; PyTorch's are its GPU time
// (CUDA events) and its own end-to-end loop.
import * as fs from 'node:fs';
import { loadModel, type Tensor } from '../lib';

const MACS_PER_IMAGE = 15.47e9;

async function main(): Promise<void> {
  const [weights, torchFile] = process.argv.slice(2);
  const torch = JSON.parse(fs.readFileSync(torchFile, 'utf8')) as {
    device: string; torch: string; bf16_matmul_tflops: number; batches: Record<string, { gpu_ms: number; end_to_end_ms: number }>;
  };
  const t0 = performance.now();
  const model = await loadModel(weights, { device: 'cuda', precision: 'bf16' });
  const loadMs = performance.now() - t0;
  const rows: string[] = [];
  for (const n of [1, 32, 256]) {
    const x: Tensor = { data: new Float32Array(n * 3 * 224 * 224).map(() => Math.random() * 4 - 2), shape: [n, 3, 224, 224] };
    for (let i = 0; i < 3; i++) await model.run(x, { outputs: ['fc8'] });
    const iters = n === 256 ? 10 : 30;
    const t = performance.now();
    await Promise.all(Array.from({ length: iters }, () => model.run(x, { outputs: ['fc8'] })));
    const ms = (performance.now() - t) / iters;
    const ref = torch.batches[String(n)];
    const tflops = (2 * MACS_PER_IMAGE * n) / (ms / 1e3) / 1e12;
    rows.push([
      n, ms.toFixed(2), ((n * 1000) / ms).toFixed(0), ((n * 1000) / ref.gpu_ms).toFixed(0), ((n * 1000) / ref.end_to_end_ms).toFixed(0),
      (ref.gpu_ms / ms).toFixed(2) + 'x', (ref.end_to_end_ms / ms).toFixed(2) + 'x', ((100 * tflops) / torch.bf16_matmul_tflops).toFixed(0) + '%',
    ].join(' | '));
  }
  await model.dispose();
  console.log(`\nVGG16 224x224 bf16 on ${torch.device} (PyTorch ${torch.torch}, bf16 matmul ${torch.bf16_matmul_tflops.toFixed(0)} TFLOP/s; vggnet load ${loadMs.toFixed(0)} ms)\n`);
  console.log('| batch | vggnet ms/batch | vggnet img/s | torch img/s (GPU) | torch img/s (end to end) | vs torch GPU | vs torch end to end | % of bf16 matmul rate |');
  console.log('|---|---|---|---|---|---|---|---|');
  for (const r of rows) console.log(`| ${r} |`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
