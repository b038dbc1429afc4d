// What the job queue costs: images/s of `vgg extract` alone against a `vgg job` with 1 and 2
// worker processes on this machine (Redis on loopback), same images, weights and options. Each
// figure is the wall time from start to the finished output: for extract the command itself, for
// a job submit + wait + merge, with the workers already started (idle) and their model load
// included (it happens on the first shard). With 2 workers each gets half the threads, so on one
// machine the figure shows the overhead, not a speed-up; on many machines the workers add up.
//
// usage: npm run build:ts && node dist/bench/jobs.js [--images 64 --shard 16 --batch 8 --threads N
//        --size 256 --crop 224 --weights W]   (REDIS_URL, or a redis-server on PATH is started)
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import sharp from 'sharp';
import { defaultWeights } from '../lib/weights/default-weights';
import { jobStatus, submitJob } from '../lib/jobs';
import { TestRedis } from '../test/redis';

const MAIN = path.resolve(__dirname, '../lib/cli/main.js');
const flag = (name: string, fallback: string) => {
  const at = process.argv.indexOf(`--${name}`);
  return at > 0 ? process.argv[at + 1] : fallback;
};

function vgg(args: string[]): { kill: () => void; done: Promise<number | null> } {
  const proc = spawn(process.execPath, [MAIN, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  proc.stderr!.on('data', (d) => { err += d; });
  return {
    kill: () => proc.kill('SIGTERM'),
    done: new Promise((resolve) => proc.on('exit', (code) => {
      if (code !== 0 && code !== null && code !== 2) process.stderr.write(err);
      resolve(code);
    })),
  };
}

async function main(): Promise<void> {
  const images = Number(flag('images', '64')), shard = flag('shard', '16'), batch = flag('batch', '8');
  const threads = Number(flag('threads', String(os.availableParallelism())));
  const size = flag('size', '256'), crop = flag('crop', '224');
  const weights = flag('weights', '') || await defaultWeights({ quiet: true });
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vggnet-bench-jobs-'));
  const samples = path.resolve(__dirname, '../../samples');
  const sources = fs.readdirSync(samples).map((f) => path.join(samples, f));
  const imgDir = path.join(dir, 'images');
  fs.mkdirSync(imgDir);
  await Promise.all(Array.from({ length: images }, (_, i) =>
    sharp(sources[i % sources.length]).resize(640, 480, { fit: 'fill' }).rotate(i % 2 ? 0 : 180).jpeg({ quality: 88 }).toFile(path.join(imgDir, `${String(i).padStart(5, '0')}.jpg`))));
  const redis = new TestRedis();
  await redis.start();
  const common = ['--weights', weights, '--batch', batch, '--size', size, '--crop', crop];
  const rows: [string, number][] = [];
  try {
    // Once untimed, so that the weights are in the page cache for every timed run alike.
    await vgg(['extract', imgDir, '--out', path.join(dir, 'warm.safetensors'), '--threads', String(threads), ...common]).done;
    let t = performance.now();
    await vgg(['extract', imgDir, '--out', path.join(dir, 'extract.safetensors'), '--threads', String(threads), ...common]).done;
    rows.push(['vgg extract', images / ((performance.now() - t) / 1000)]);

    for (const n of [1, 2]) {
      const workers = Array.from({ length: n }, () => vgg(['job', 'worker', '--redis', redis.url, '--threads', String(Math.max(1, Math.floor(threads / n)))]));
      await new Promise((r) => setTimeout(r, 1000)); // let them connect
      t = performance.now();
      const { id } = await submitJob(imgDir, {
        weights, out: path.join(dir, `job${n}`), redis: redis.url, shardSize: Number(shard), batchSize: Number(batch),
        preprocess: { size: Number(size), crop: crop === 'none' ? false : Number(crop) },
      });
      while (!(await jobStatus(id, { redis: redis.url })).finished) await new Promise((r) => setTimeout(r, 50));
      await vgg(['job', 'merge', id, '--redis', redis.url, '--out', path.join(dir, `job${n}.safetensors`)]).done;
      rows.push([`vgg job, ${n} worker${n > 1 ? 's' : ''} (${Math.max(1, Math.floor(threads / n))} threads each)`, images / ((performance.now() - t) / 1000)]);
      for (const w of workers) w.kill();
      await Promise.all(workers.map((w) => w.done));
      if (!fs.readFileSync(path.join(dir, `job${n}.safetensors`)).equals(fs.readFileSync(path.join(dir, 'extract.safetensors')))) {
        console.log(`note: the ${n}-worker merge differs from extract's output (other thread counts may change the last bits)`);
      }
    }
  } finally {
    await redis.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
  console.log(`\n${path.basename(weights)}, ${images} JPEGs 640x480 -> ${size}/${crop}, batch ${batch}, shards of ${shard}, ${threads} threads in all\n`);
  console.log('| run | images/s | vs extract |');
  console.log('|---|---|---|');
  for (const [name, rate] of rows) console.log(`| ${name} | ${rate.toFixed(2)} | ${(rate / rows[0][1]).toFixed(2)}x |`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
