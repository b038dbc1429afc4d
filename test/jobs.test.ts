import { strict as assert } from 'node:assert';
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import sharp from 'sharp';
import { jobStatus, mergeJob, runWorker, submitJob, type JobWorker } from '../lib/jobs';
import { fixture, prng } from './helpers';
import { TestRedis } from './redis';

const WEIGHTS = fixture('D.weights.safetensors');
const MAIN = path.resolve(__dirname, '../lib/cli/main.js');
const COUNT = 40;
const BAD = 13; // this image is not an image
const PRE = { size: 40, crop: 32 };
const SHARD = 8;
const BATCH = 4;
/** Short leases, so that a killed worker's shard comes back in about a second. */
const LEASE = { lockDuration: 1000, stalledInterval: 500 };

interface Ran { status: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }

/**
 * The `vgg` a README deployment runs: the package's bin, as npm links it into node_modules/.bin
 * (an executable with a `#!/usr/bin/env node` line), so that signals reach vgg itself.
 */
let bin: string | undefined;
function binDir(): string {
  if (bin === undefined) {
    bin = fs.mkdtempSync(path.join(os.tmpdir(), 'vgg-bin-'));
    fs.chmodSync(MAIN, 0o755); // what npm does to a bin when it links it
    fs.symlinkSync(MAIN, path.join(bin, 'vgg'));
  }
  return bin;
}

function vgg(args: string[], env: Record<string, string> = {}, { asInstalled = false } = {}): { proc: ChildProcess; done: Promise<Ran> } {
  const base = { ...process.env, VGG_DEBUG: '', ...env };
  const proc = asInstalled
    ? spawn('vgg', args, { env: { ...base, PATH: [binDir(), path.dirname(process.execPath), process.env.PATH].join(path.delimiter) } })
    : spawn(process.execPath, [MAIN, ...args], { env: base });
  let stdout = '';
  let stderr = '';
  proc.stdout!.on('data', (d) => { stdout += d; });
  proc.stderr!.on('data', (d) => { stderr += d; });
  const done = new Promise<Ran>((resolve) => proc.on('exit', (status, signal) => resolve({ status, signal, stdout, stderr })));
  return { proc, done };
}

async function until(what: string, check: () => Promise<boolean>, ms = 20000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('distributed jobs (BullMQ on a real redis-server)', function () {
  const redis = new TestRedis();
  let dir: string;
  let images: string;
  let reference: Buffer;
  let referenceErrors: string;
  let workers: JobWorker[] = [];
  let procs: ChildProcess[] = [];
  const workerArgs = () => ['job', 'worker', '--redis', redis.url, '--threads', '2', '--lock-ms', String(LEASE.lockDuration), '--stalled-ms', String(LEASE.stalledInterval)];
  const submitArgs = (out: string, ...more: string[]) => ['job', 'submit', images, '--weights', WEIGHTS, '--out', out, '--redis', redis.url,
    '--shard-size', String(SHARD), '--batch', String(BATCH), '--size', String(PRE.size), '--crop', String(PRE.crop), '--backoff-ms', '100', ...more];
  const submit = (out: string) => submitJob(images, { weights: WEIGHTS, out, redis: redis.url, shardSize: SHARD, batchSize: BATCH, preprocess: PRE, backoffMs: 100 });
  const worker = (extra = {}) => {
    const w = runWorker({ redis: redis.url, threads: 2, ...LEASE, ...extra });
    workers.push(w);
    return w;
  };
  async function mergedEqualsReference(id: string, name: string): Promise<void> {
    const file = path.join(dir, `${name}.safetensors`);
    const r = await mergeJob(id, file, { redis: redis.url });
    assert.equal(r.failed, 1);
    assert.ok(fs.readFileSync(file).equals(reference), `${name}: merged file differs from vgg extract's`);
    assert.equal(fs.readFileSync(`${file}.errors.jsonl`, 'utf8'), referenceErrors);
  }

  before(async function () {
    this.timeout(60000);
    await redis.start();
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vgg-jobs-'));
    images = path.join(dir, 'images');
    fs.mkdirSync(images);
    for (let i = 0; i < COUNT; i++) {
      const name = path.join(images, `img${String(i).padStart(3, '0')}.png`);
      if (i === BAD) {
        fs.writeFileSync(name, 'not an image');
        continue;
      }
      const rand = prng(i + 1);
      const pixels = Buffer.from(Array.from({ length: 48 * 44 * 3 }, () => Math.floor(rand() * 256)));
      await sharp(pixels, { raw: { width: 48, height: 44, channels: 3 } }).png().toFile(name);
    }
    const ref = path.join(dir, 'reference.safetensors');
    const r = await vgg(['extract', images, '--weights', WEIGHTS, '--out', ref, '--batch', String(BATCH), '--size', String(PRE.size), '--crop', String(PRE.crop), '--threads', '2']).done;
    assert.equal(r.status, 2, r.stderr); // one bad image
    reference = fs.readFileSync(ref);
    referenceErrors = fs.readFileSync(`${ref}.errors.jsonl`, 'utf8');
  });

  afterEach(async () => {
    for (const p of procs) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
    procs = [];
    await Promise.all(workers.map((w) => w.close()));
    workers = [];
  });

  after(async () => {
    await redis.close();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
    if (bin) fs.rmSync(bin, { recursive: true, force: true });
  });

  it('runs a job on two worker processes; the merge equals vgg extract byte for byte; resubmitting adds nothing', async () => {
    const out = path.join(dir, 'two');
    const s = await vgg(submitArgs(out)).done;
    assert.equal(s.status, 0, s.stderr);
    const id = s.stdout.trim();
    assert.match(id, /^[0-9a-f]{16}$/);
    assert.match(s.stderr, /submitted: 40 images in 5 shards/);
    const a = vgg(workerArgs());
    const b = vgg(workerArgs());
    procs.push(a.proc, b.proc);
    const w = await vgg(['job', 'wait', id, '--redis', redis.url, '--interval-ms', '100']).done;
    assert.equal(w.status, 0, w.stderr);
    const st = await vgg(['job', 'status', id, '--redis', redis.url, '--json']).done;
    const status = JSON.parse(st.stdout);
    assert.deepEqual([status.done, status.failed, status.imagesDone, status.finished], [5, 0, 40, true]);
    const m = await vgg(['job', 'merge', id, '--redis', redis.url, '--out', path.join(dir, 'two.safetensors')]).done;
    assert.equal(m.status, 2, m.stderr); // one image failed, as with vgg extract
    assert.ok(fs.readFileSync(path.join(dir, 'two.safetensors')).equals(reference));
    assert.equal(fs.readFileSync(path.join(dir, 'two.safetensors.errors.jsonl'), 'utf8'), referenceErrors);
    const manifest = JSON.parse(fs.readFileSync(path.join(out, 'manifest.json'), 'utf8'));
    assert.equal(manifest.shardList.length, 5);
    assert.deepEqual(manifest.shardList.map((x: { first: number }) => x.first), [0, 8, 16, 24, 32]);

    // Resubmission: the same id, nothing enqueued again, no shard rewritten.
    const mtimes = manifest.shardList.map((x: { file: string }) => fs.statSync(path.join(out, x.file)).mtimeMs);
    const again = await vgg(submitArgs(out)).done;
    assert.equal(again.stdout.trim(), id);
    assert.match(again.stderr, /already submitted/);
    await new Promise((r) => setTimeout(r, 500));
    const after = await jobStatus(id, { redis: redis.url });
    assert.deepEqual([after.done, after.waiting, after.running], [5, 0, 0]);
    assert.deepEqual(manifest.shardList.map((x: { file: string }) => fs.statSync(path.join(out, x.file)).mtimeMs), mtimes);
    assert.match(a.proc.exitCode === null ? 'alive' : 'dead', /alive/);
    // SIGTERM on an idle worker: exits 0.
    a.proc.kill('SIGTERM');
    assert.equal((await a.done).status, 0);
  });

  it('redoes the shard of a worker SIGKILLed mid-shard, with no duplicated or missing rows', async () => {
    const out = path.join(dir, 'kill');
    const { id } = await submit(out);
    const slow = vgg([...workerArgs(), '--batch-delay-ms', '400']);
    procs.push(slow.proc);
    await until('a shard to run', async () => (await jobStatus(id, { redis: redis.url })).running > 0);
    await new Promise((r) => setTimeout(r, 300)); // mid-shard: a batch or so in
    slow.proc.kill('SIGKILL');
    await slow.done;
    const active = (await jobStatus(id, { redis: redis.url })).running;
    assert.equal(active, 1, 'the killed worker still holds its lease');
    worker();
    await until('the job to finish', async () => (await jobStatus(id, { redis: redis.url })).finished, 30000);
    const s = await jobStatus(id, { redis: redis.url });
    assert.deepEqual([s.done, s.failed], [5, 0]);
    await mergedEqualsReference(id, 'kill');
  });

  it('retries a shard that keeps failing with backoff, then marks it failed with its error', async () => {
    const out = path.join(dir, 'fail');
    const { id } = await submit(out);
    // Shard 2's errors file cannot be written (a folder is in the way): E_IO every time.
    fs.mkdirSync(path.join(out, 'shards', '000000000002.errors.jsonl', 'x'), { recursive: true });
    const started = Date.now();
    worker();
    await until('the job to finish', async () => (await jobStatus(id, { redis: redis.url })).finished, 30000);
    const s = await jobStatus(id, { redis: redis.url });
    assert.deepEqual([s.done, s.failed], [4, 1]);
    assert.equal(s.failures[0].index, 2);
    assert.equal(s.failures[0].attempts, 3);
    assert.match(s.failures[0].error, /E_IO|cannot write/);
    assert.ok(Date.now() - started >= 300, 'backoff: 100 ms then 200 ms between tries');
    const w = await vgg(['job', 'wait', id, '--redis', redis.url]).done;
    assert.equal(w.status, 2);
    assert.match(w.stderr, /shard 2 failed after 3 attempts/);
    assert.match(w.stderr, /vgg job: 4\/5 shards done, 1 shards failed, 32\/40 images/); // failures in shards, said so
    await assert.rejects(mergeJob(id, path.join(dir, 'fail.safetensors'), { redis: redis.url }), /not finished: 1 of 5/);

    // Once the cause is gone, submitting again retries the failed shard only.
    fs.rmSync(path.join(out, 'shards', '000000000002.errors.jsonl'), { recursive: true });
    const again = await submit(out);
    assert.deepEqual([again.id, again.created, again.retried], [id, false, 1]);
    await until('the retried shard', async () => (await jobStatus(id, { redis: redis.url })).done === 5, 20000);
    await mergedEqualsReference(id, 'fail');
  });

  it('resumes without data loss when Redis restarts mid-job', async function () {
    if (redis.external) this.skip();
    const out = path.join(dir, 'restart');
    const { id } = await submit(out);
    const slow = vgg([...workerArgs(), '--batch-delay-ms', '150']);
    procs.push(slow.proc);
    await until('a shard to finish', async () => (await jobStatus(id, { redis: redis.url })).done > 0);
    assert.ok((await jobStatus(id, { redis: redis.url })).done < 5, 'Redis stops mid-job');
    await redis.stop();
    await new Promise((r) => setTimeout(r, 700));
    await redis.start();
    await until('the job to finish', async () => (await jobStatus(id, { redis: redis.url })).finished, 40000);
    const s = await jobStatus(id, { redis: redis.url });
    assert.deepEqual([s.done, s.failed], [5, 0]);
    await mergedEqualsReference(id, 'restart');
  });

  it("SIGTERM to the README's worker command (the bin itself) finishes its shard, then exits 0; the rest wait for another worker", async () => {
    const out = path.join(dir, 'term');
    const { id } = await submit(out);
    const slow = vgg([...workerArgs(), '--batch-delay-ms', '200'], {}, { asInstalled: true });
    procs.push(slow.proc);
    await until('a shard to run', async () => (await jobStatus(id, { redis: redis.url })).running > 0);
    // A running shard reports its images as it goes (job wait's bar shows them under way), within its size.
    await until('a running shard to report its images', async () => {
      const s = await jobStatus(id, { redis: redis.url });
      return s.imagesRunning > 0 && s.imagesRunning <= SHARD * s.running;
    });
    slow.proc.kill('SIGTERM');
    const r = await slow.done;
    assert.equal(r.status, 0, r.stderr);
    const s = await jobStatus(id, { redis: redis.url });
    assert.equal(s.running, 0, 'no shard left holding a lease');
    assert.ok(s.done >= 1 && s.done < 5, `done ${s.done}`);
    assert.equal(s.done + s.waiting, 5);
    worker();
    await until('the job to finish', async () => (await jobStatus(id, { redis: redis.url })).finished, 30000);
    await mergedEqualsReference(id, 'term');
  });
});

describe('jobs: the tests on a machine without redis-server', () => {
  it('fail with one line that names the package to install, not a stack trace', async function () {
    if (process.env.REDIS_URL) this.skip(); // an external server: nothing is started
    const saved = process.env.REDIS_SERVER;
    process.env.REDIS_SERVER = path.join(os.tmpdir(), 'vggnet-no-such-dir', 'redis-server');
    const redis = new TestRedis();
    try {
      await assert.rejects(redis.start(), (e: Error) => {
        assert.match(e.message, /^\S+redis-server not found: .*apt-get install redis-server/);
        assert.ok(!e.message.includes('\n') && e.stack === '', 'one line, no stack');
        return true;
      });
    } finally {
      if (saved === undefined) delete process.env.REDIS_SERVER;
      else process.env.REDIS_SERVER = saved;
      await redis.close();
    }
  });
});
