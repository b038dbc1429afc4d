import * as fs from 'node:fs';
import * as path from 'node:path';
import { Command, Option } from 'commander';
import { defaultWeights } from '../weights/default-weights';
import { IMAGE_EXTENSIONS, imageList } from '../images/sources';
import { VggError } from '../errors';
import { loadModel, type Model } from '../model';
import type { Preset } from '../images/preprocess';
import { Journal, journalRecords, writeJournal, writerFor } from '../outputs';
import { type EngineFlags, commaList, engineOptions, engineSettings, positiveInt, preprocessOptions, reportError } from './common';
import { finish, Progress, progressOptions, type ProgressFlags } from './progress';

interface ExtractFlags extends EngineFlags, ProgressFlags {
  weights?: string;
  outputs: string[];
  out: string;
  batch: number;
  resume?: true;
  batchDelayMs?: number;
  preset?: Preset;
  size: number;
  crop: number | false;
}

/** Finished batches are committed to the journal at least this often, so a crash loses little. */
const COMMIT_MS = 1000;

const HELP = `
Inputs: a folder (every image in it and its subfolders, by extension: ${IMAGE_EXTENSIONS.join(' ')}),
a glob in quotes ('photos/**/*.jpg'), a .txt file with one image path per line, or one image.
Folders and globs are read in sorted order, each folder's entries by name.

Outputs (one row per image that could be read, in input order):
  .safetensors  one F32 tensor [N, ...] per blob; __metadata__.ids is the JSON list of row ids
  .npy          one blob [N, ...]; the row ids in FILE.ids.txt, one per line
  .jsonl        one {"id": ..., "<blob>": [...]} per line, each blob flattened
Images that fail are listed in FILE.errors.jsonl ({"id", "code", "message"} per line).

On a terminal the bar shows the images done (#), which a batch finishes together, and apart
the images under way (+): read, decoding, waiting for their batch or in the network.

Progress is journaled in FILE.partial/ as it goes; after a crash or Ctrl-C, the same command
with --resume skips the images already done and writes the same FILE as an uninterrupted run.
`;

export function registerExtract(program: Command): void {
  const command = program.command('extract')
    .description('stream a folder, glob or list of images to a features file (fc7, pool5, ...)')
    .argument('<images>', 'a folder, a glob, a .txt list of paths, or one image')
    .option('--weights <file>', 'weights (.safetensors); default: VGG16 with seeded random weights')
    .option('--outputs <blobs>', 'comma-separated blob names', commaList, ['fc7'])
    .requiredOption('--out <file>', 'features file: .safetensors, .npy or .jsonl')
    .option('--batch <n>', 'images per run of the network', positiveInt, 32)
    .option('--resume', 'continue an interrupted run of the same command')
    // For tests: a run slow enough to interrupt (a FIFO among the images no longer stalls one).
    .addOption(new Option('--batch-delay-ms <n>').argParser(positiveInt).hideHelp())
    .addHelpText('after', HELP);
  progressOptions(engineOptions(preprocessOptions(command))).action(extractImages);
}

async function extractImages(input: string, flags: ExtractFlags): Promise<void> {
  const started = performance.now();
  const write = writerFor(flags.out, flags.outputs); // a bad --out fails now, not after the run
  const list = await imageList(input);
  let total = 0;
  for await (const _ of list()) total++;
  if (!total) throw new VggError('E_ARG', `${input} names no images`);
  const weights = flags.weights ?? await defaultWeights();
  const model = await loadModel(weights, engineSettings(flags));
  try {
    const names = model.blobNames();
    const unknown = flags.outputs.filter((o) => !names.includes(o));
    if (unknown.length) throw new VggError('E_ARG', `--outputs names unknown blob ${unknown.join(', ')}; ${weights} has ${names.join(', ')}`);
    const journal = Journal.open(`${flags.out}.partial`, flags.outputs, await jobOf(input, weights, flags), flags.resume ?? false);
    if (journal.items && !flags.quiet) process.stderr.write(`vgg extract: resuming: ${journal.items} images already done in ${journal.dir}\n`);

    const done = await extractInto(journal, model, unjournaled(list(), journal), flags, total);
    const errorsFile = `${flags.out}.errors.jsonl`;
    writeJournal(journal, flags.out, write, errorsFile);
    journal.remove();

    const seconds = (performance.now() - started) / 1000;
    const rate = Number((done / seconds).toFixed(1));
    finish(flags, `vgg extract: ${journal.items} images, ${journal.failed} failed, ${seconds.toFixed(1)} s, `
      + `${rate.toFixed(1)} images/s -> ${flags.out}${journal.failed ? `; failures in ${errorsFile}` : ''}`, {
      command: 'extract', images: journal.items, failed: journal.failed, seconds: Number(seconds.toFixed(3)), imagesPerSecond: rate,
      out: flags.out, ...(journal.failed ? { errors: errorsFile } : {}),
    });
    if (journal.failed) process.exitCode = 2;
  } finally {
    await model.dispose();
  }
}

/** What a resumed run must share with the interrupted one for its output to be the same. */
async function jobOf(input: string, weights: string, flags: ExtractFlags): Promise<Record<string, unknown>> {
  const { size, mtimeMs } = await fs.promises.stat(weights);
  return {
    input: path.resolve(input), weights: path.resolve(weights), weightsBytes: size, weightsModified: mtimeMs,
    outputs: flags.outputs, batch: flags.batch, preset: flags.preset, size: flags.size, crop: flags.crop,
  };
}

/**
 * Runs the images through the model into the journal, whole batches at a time, and returns how
 * many it did. A timer commits finished batches every COMMIT_MS; on SIGINT or SIGTERM they are
 * committed and the process ends, leaving the journal for --resume.
 */
async function extractInto(journal: Journal, model: Model, images: AsyncIterable<string>, flags: ExtractFlags, total: number): Promise<number> {
  const progress = new Progress('vgg extract', { total, done: journal.items, failed: journal.failed, quiet: flags.quiet });
  const interrupted = (signal: NodeJS.Signals) => {
    progress.stop();
    stopListening();
    void journal.flush().catch(reportError).finally(() => {
      process.stderr.write(`vgg extract: ${signal}: ${journal.items} of ${total} images are done and kept in ${journal.dir}; the same command with --resume finishes the run\n`);
      // Dying of the signal itself, as the default handler would, tells the shell (status 130 or 143)
      // and does not wait for a decode stuck in a read the way a normal exit would.
      process.kill(process.pid, signal);
    });
  };
  const stopListening = () => {
    process.off('SIGINT', interrupted);
    process.off('SIGTERM', interrupted);
  };
  process.once('SIGINT', interrupted);
  process.once('SIGTERM', interrupted);
  try {
    const preprocess = { preset: flags.preset, size: flags.size, crop: flags.crop };
    const records = model.extract(progress.beginEach(images), { outputs: flags.outputs, batchSize: flags.batch, preprocess });
    return await journalRecords(records, journal, {
      batchSize: flags.batch, commitMs: COMMIT_MS, onRecord: (record) => progress.tick(record.error !== undefined),
      ...(flags.batchDelayMs ? { afterBatch: () => new Promise<void>((r) => setTimeout(r, flags.batchDelayMs)) } : {}),
    });
  } finally {
    stopListening();
    progress.stop();
  }
}

/** The images after those the journal has, which must be the same images in the same order. */
async function* unjournaled(images: AsyncIterable<string>, journal: Journal): AsyncGenerator<string> {
  const done = journal.itemIds();
  let index = 0;
  for await (const file of images) {
    const next = done.next();
    if (next.done) yield file;
    else if (next.value !== file) {
      throw new VggError('E_ARG', `--resume: image ${index} is ${file} but was ${next.value} in the interrupted run; the inputs changed, so delete ${journal.dir} to start over`);
    }
    index++;
  }
  if (!done.next().done) throw new VggError('E_ARG', `--resume: there are fewer images (${index}) than the interrupted run did (${journal.items}); delete ${journal.dir} to start over`);
}
