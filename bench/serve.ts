// Load test of the HTTP service on loopback (issue #5): concurrency 1, 8 and 64, with dynamic
// batching and with --max-batch 1, in the same process, same model, same image.
//
// usage: npm run bench:serve [-- --weights W --duration 10 --threads 2 --max-batch 32 --device cuda --precision bf16]
// Without --weights it uses seeded random VGG16 (the figures do not depend on the values).
import * as os from 'node:os';
import * as path from 'node:path';
import * as fs from 'node:fs';
import autocannon from 'autocannon';
import { loadModel, type Device, type Precision } from '../lib';
import { defaultWeights } from '../lib/weights/default-weights';
import { createServer } from '../lib/serve/server';

function flag(name: string): string | undefined {
  const at = process.argv.indexOf(`--${name}`);
  return at > 0 ? process.argv[at + 1] : undefined;
}

interface Row { mode: string; connections: number; rps: number; p50: number; p99: number; errors: number }

async function measure(url: string, body: Buffer, connections: number, duration: number): Promise<Omit<Row, 'mode'>> {
  const result = await autocannon({
    url: `${url}/v1/features?outputs=fc7`, method: 'POST', body, connections, duration,
    headers: { 'content-type': 'application/octet-stream' },
  });
  return { connections, rps: result.requests.average, p50: result.latency.p50, p99: result.latency.p99, errors: result.errors + result.non2xx };
}

async function main(): Promise<void> {
  const duration = Number(flag('duration') ?? 10);
  const threads = Number(flag('threads') ?? os.availableParallelism());
  const maxBatch = Number(flag('max-batch') ?? 32);
  const weights = flag('weights') ?? await defaultWeights({ quiet: true });
  const image = fs.readFileSync(path.resolve(__dirname, '../../samples/coffee.jpg'));
  const device = (flag('device') ?? 'cpu') as Device;
  const precision = (flag('precision') ?? 'fp32') as Precision;
  const model = await loadModel(weights, { threads, device, precision });
  const rows: Row[] = [];
  for (const [mode, batch] of [['dynamic batching', maxBatch], ['--max-batch 1', 1]] as const) {
    const app = await createServer(model, { maxBatch: batch, maxDelayMs: 5, maxQueue: 1024 });
    const url = await app.listen({ port: 0, host: '127.0.0.1' });
    // /readyz turns 200 once every batch size the batcher uses has been compiled.
    while ((await fetch(`${url}/readyz`)).status !== 200) await new Promise((r) => setTimeout(r, 200));
    for (const connections of [1, 8, 64]) rows.push({ mode, ...(await measure(url, image, connections, duration)) });
    await app.close();
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

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
