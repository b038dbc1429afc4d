import { Command, Option } from 'commander';
import { jobStatus, mergeJob, runWorker, submitJob, type JobStatus } from '../jobs';
import type { Preset } from '../images/preprocess';
import { VggError } from '../errors';
import { type EngineFlags, commaList, engineOptions, engineSettings, positiveInt, preprocessOptions, reportError } from './common';
import { finish, Progress, progressOptions, type ProgressFlags, SHARDS } from './progress';

const redisOption = () => new Option('--redis <url>', 'Redis URL').env('REDIS_URL').default('redis://127.0.0.1:6379');

const HELP = `
A job splits the images into shards of --shard-size images and puts one BullMQ job per shard in
Redis (queue "vggnet-shards"). \`vgg job worker\` on any number of machines takes shards, extracts
them like \`vgg extract\` and writes DIR/shards/<n>.safetensors (+ .errors.jsonl), atomically;
DIR must be a folder every worker can write (a shared file system), and image paths must be
readable from every worker (they are stored absolute). \`vgg job merge JOB --out FILE\` joins the
shards in input order into FILE (.safetensors, .npy or .jsonl), the same bytes as \`vgg extract\`.
Submitting the same images with the same options again is the same job: nothing is added.
`;

export function registerJob(program: Command): void {
  const job = program.command('job').description('distributed extraction on Redis/BullMQ: submit, worker, status, wait, merge').addHelpText('after', HELP);

  const submit = job.command('submit')
    .description('split images into shards and enqueue them; prints the job id')
    .argument('<images>', 'a folder, a glob, a .txt list of paths, or one image')
    .requiredOption('--weights <file>', 'weights (.safetensors), at the same path on every worker')
    .option('--outputs <blobs>', 'comma-separated blob names', commaList, ['fc7'])
    .requiredOption('--out <dir>', 'output folder for the manifest and the shards')
    .option('--shard-size <n>', 'images per shard', positiveInt, 1000)
    .option('--batch <n>', 'images per run of the network', positiveInt, 32)
    .option('--attempts <n>', 'tries per shard before it fails for good', positiveInt, 3)
    .option('--backoff-ms <n>', 'delay before the first retry, doubling after', positiveInt, 5000)
    .addOption(redisOption());
  preprocessOptions(submit)
    .action(async (images: string, f: { weights: string; outputs: string[]; out: string; shardSize: number; batch: number; preset?: Preset; size: number; crop: number | false; attempts: number; backoffMs: number; redis: string }) => {
      const r = await submitJob(images, {
        weights: f.weights, outputs: f.outputs, out: f.out, shardSize: f.shardSize, batchSize: f.batch,
        preprocess: { preset: f.preset, size: f.size, crop: f.crop }, attempts: f.attempts, backoffMs: f.backoffMs, redis: f.redis,
      });
      process.stderr.write(`vgg job: ${r.created ? 'submitted' : 'already submitted'}: ${r.images} images in ${r.shards} shards -> ${r.out}${r.retried ? `; ${r.retried} failed shards retried` : ''}\n`);
      process.stdout.write(`${r.id}\n`);
    });

  const worker = job.command('worker')
    .description('take shards from Redis and extract them until SIGTERM/SIGINT (which finish the current shards first)')
    .option('--concurrency <n>', 'shards at once', positiveInt, 1)
    .option('--lock-ms <n>', 'lease on a shard; a dead worker\'s shard is redone after it', positiveInt, 30000)
    .option('--stalled-ms <n>', 'how often to look for shards whose lease expired', positiveInt, 30000)
    // A slow worker on purpose, for tests of leases and shutdown.
    .addOption(new Option('--batch-delay-ms <n>').argParser(positiveInt).hideHelp())
    .addOption(redisOption());
  engineOptions(worker).action(async (f: EngineFlags & { concurrency: number; lockMs: number; stalledMs: number; batchDelayMs?: number; redis: string }) => {
    const w = runWorker({
      redis: f.redis, concurrency: f.concurrency, lockDuration: f.lockMs, stalledInterval: f.stalledMs,
      ...(f.batchDelayMs ? { batchDelayMs: f.batchDelayMs } : {}),
      ...engineSettings(f),
      onShard: (e) => process.stderr.write(`vgg job worker: job ${e.job} shard ${e.index}: ${e.skipped ? 'already done' : `${e.images} images, ${e.failed} failed, ${e.seconds.toFixed(2)} s`}\n`),
    });
    w.worker.on('failed', (j, err) => process.stderr.write(`vgg job worker: shard ${j?.id}: ${err.message}\n`));
    process.stderr.write(`vgg job worker: waiting for shards on ${f.redis}\n`);
    await new Promise<void>((resolve) => {
      let stopping = false;
      const stop = (signal: NodeJS.Signals) => {
        if (stopping) process.kill(process.pid, 'SIGKILL'); // a second signal: leave now; the leases expire
        stopping = true;
        process.stderr.write(`vgg job worker: ${signal}: finishing the current shard(s), then exiting\n`);
        w.close().then(resolve, (e) => { reportError(e); resolve(); });
      };
      process.on('SIGTERM', stop);
      process.on('SIGINT', stop);
    });
  });

  job.command('status')
    .description('shards done, failed, running, waiting; images/s and ETA')
    .argument('<job>', 'job id')
    .option('--json', 'as JSON')
    .addOption(redisOption())
    .action(async (id: string, f: { json?: true; redis: string }) => {
      const s = await jobStatus(id, { redis: f.redis });
      if (f.json) process.stdout.write(`${JSON.stringify(s)}\n`);
      else process.stdout.write(statusText(s));
    });

  const wait = job.command('wait')
    .description('block until every shard is done or failed for good, with progress; exit 2 if any failed')
    .argument('<job>', 'job id')
    .option('--interval-ms <n>', 'poll interval', positiveInt, 1000)
    .addOption(redisOption());
  progressOptions(wait).action(async (id: string, f: ProgressFlags & { intervalMs: number; redis: string }) => {
    let s = await jobStatus(id, { redis: f.redis });
    // Done counted in images of finished shards, with those the running shards report as under way;
    // failed in shards, and named so: the status knows which shards failed, not which of their images.
    const progress = new Progress('vgg job', { total: s.images, done: s.imagesDone, failed: s.failed, failedUnit: SHARDS, quiet: f.quiet });
    while (!s.finished) {
      await new Promise((r) => setTimeout(r, f.intervalMs));
      try {
        s = await jobStatus(id, { redis: f.redis });
      } catch (e) {
        // Redis restarting: keep waiting (the workers reconnect too); a job it lost will not come back.
        if (e instanceof VggError && e.code === 'E_JOB_LOST') throw e;
        if (!f.quiet) process.stderr.write(`vgg job: ${(e as Error).message}; retrying\n`);
      }
      progress.set(s.imagesDone, s.failed, s.imagesRunning);
    }
    progress.stop();
    for (const x of s.failures) process.stderr.write(`vgg job: shard ${x.index} failed after ${x.attempts} attempts: ${x.error}\n`);
    finish(f, `vgg job: ${s.done}/${s.shards} shards done, ${s.failed} shards failed, ${s.imagesDone}/${s.images} images -> ${s.out}`, {
      command: 'job wait', job: s.id, shards: s.shards, done: s.done, failed: s.failed, images: s.images, imagesDone: s.imagesDone,
      seconds: Number(progress.seconds.toFixed(3)), imagesPerSecond: Number(s.imagesPerSecond.toFixed(1)), out: s.out,
    });
    if (s.failed) process.exitCode = 2;
  });

  job.command('merge')
    .description('join the shards of a finished job into one features file, in input order')
    .argument('<job>', 'job id, or the job\'s output folder')
    .requiredOption('--out <file>', 'features file: .safetensors, .npy or .jsonl')
    .addOption(redisOption())
    .action(async (id: string, f: { out: string; redis: string }) => {
      const r = await mergeJob(id, f.out, { redis: f.redis });
      process.stderr.write(`vgg job merge: ${r.rows} rows, ${r.failed} failed images -> ${f.out}${r.errorsFile ? `; failures in ${r.errorsFile}` : ''}\n`);
      if (r.failed) process.exitCode = 2;
    });
}

function statusText(s: JobStatus): string {
  const eta = s.etaSeconds === undefined ? '?' : `${Math.round(s.etaSeconds)} s`;
  let text = `job       ${s.id}\nout       ${s.out}\nshards    ${s.shards}: ${s.done} done, ${s.failed} failed, ${s.running} running, ${s.waiting} waiting\n`
    + `images    ${s.imagesDone}/${s.images}${s.imagesRunning ? ` (+${s.imagesRunning} in running shards)` : ''}\nrate      ${s.imagesPerSecond.toFixed(1)} images/s\nETA       ${s.finished ? 'finished' : eta}\n`;
  for (const x of s.failures) text += `failed    shard ${x.index} after ${x.attempts} attempts: ${x.error}\n`;
  return text;
}
