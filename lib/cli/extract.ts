import * as fs from 'node:fs';
import * as path from 'node:path';
import { SingleBar } from 'cli-progress';
import { Command } from 'commander';
import { defaultWeights } from '../weights/default-weights';
import { IMAGE_EXTENSIONS, imageList } from '../images/sources';
import { VggError } from '../errors';
import { loadModel, type Model } from '../model';
import type { Preset } from '../images/preprocess';
import { Journal, journalRecords, writeJournal, writerFor } from '../outputs';
import { type EngineFlags, commaList, engineOptions, engineSettings, positiveInt, preprocessOptions, reportError } from './common';

interface ExtractFlags extends EngineFlags {
  weights?: string;
  outputs: string[];
  out: string;
  batch: number;
  resume?: true;
  preset?: Preset;
  size: number;
  crop: number | false;
}

/** Finished batches are committed to the journal at least this often, so a crash loses little. */
const COMMIT_MS = 1000;
/** Without a terminal, a progress line at most this often, or every this many images. */
const LINE_MS = 5000;
const LINE_IMAGES = 1000;

const HELP = `
Inputs: a folder (every image in it and its subfolders, by extension: ${IMAGE_EXTENSIONS.join(' ')}),
a glob in quotes ('photos/**/*.jpg'), a .txt file with one image path per line, or one image.
Folders and globs are read in sorted order, each folder's entries by name.

Outputs (one row per image that could be read, in input order):
  .safetensors  one F32 tensor [N, ...] per blob; __metadata__.ids is the JSON list of row ids
  .npy          one blob [N, ...]; the row ids in FILE.ids.txt, one per line
  .jsonl        one {"id": ..., "<blob>": [...]} per line, each blob flattened
Images that fail are listed in FILE.errors.jsonl ({"id", "code", "message"} per line).

Progress is journaled in FILE.partial/ as it goes; after a crash or Ctrl-C, the same command
with --resume skips the images already done and writes the same FILE as an uninterrupted run.

Exit status: 0 every image done; 1 an error stopped the run (one line on stderr); 2 FILE was
written but some images failed; 130 interrupted (143 on SIGTERM), continue with --resume.
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
    .addHelpText('after', HELP);
  engineOptions(preprocessOptions(command)).action(extractImages);
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
    if (journal.items) process.stderr.write(`vgg extract: resuming: ${journal.items} images already done in ${journal.dir}\n`);

    const done = await extractInto(journal, model, unjournaled(list(), journal), flags, total);
    const errorsFile = `${flags.out}.errors.jsonl`;
    writeJournal(journal, flags.out, write, errorsFile);
    journal.remove();

    const seconds = (performance.now() - started) / 1000;
    process.stderr.write(`vgg extract: ${journal.items} images, ${journal.failed} failed, ${seconds.toFixed(1)} s, `
      + `${(done / seconds).toFixed(1)} images/s -> ${flags.out}${journal.failed ? `; failures in ${errorsFile}` : ''}\n`);
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
  const progress = new Progress(total, journal.items, journal.failed);
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
    const records = model.extract(images, { outputs: flags.outputs, batchSize: flags.batch, preprocess });
    return await journalRecords(records, journal, {
      batchSize: flags.batch, commitMs: COMMIT_MS, onRecord: (record) => progress.tick(record.error !== undefined),
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

// ---- progress -------------------------------------------------------------------

/** A bar with images/s and ETA on a terminal; otherwise a line every LINE_MS or LINE_IMAGES. */
class Progress {
  thisRun = 0;
  #bar: SingleBar | undefined;
  #total: number;
  #done: number;
  #failed: number;
  #started = performance.now();
  #line = { at: performance.now(), done: 0 };

  constructor(total: number, done: number, failed: number) {
    [this.#total, this.#done, this.#failed] = [total, done, failed];
    this.#line.done = done;
    if (process.stderr.isTTY) {
      this.#bar = new SingleBar({
        format: 'vgg extract [{bar}] {value}/{total} images | {rate} images/s | ETA {eta_formatted} | {failed} failed',
        stream: process.stderr,
        hideCursor: true,
        etaBuffer: 200,
      });
      this.#bar.start(total, done, this.#payload());
    }
  }

  tick(failed: boolean): void {
    this.#done++;
    this.thisRun++;
    if (failed) this.#failed++;
    const now = performance.now();
    if (this.#bar) {
      this.#bar.update(this.#done, this.#payload());
    } else if (now - this.#line.at >= LINE_MS || this.#done - this.#line.done >= LINE_IMAGES) {
      const { rate } = this.#payload();
      const eta = Number(rate) > 0 ? `${Math.round((this.#total - this.#done) / Number(rate))} s` : '?';
      process.stderr.write(`vgg extract: ${this.#done}/${this.#total} images, ${this.#failed} failed, ${rate} images/s, ETA ${eta}\n`);
      this.#line = { at: now, done: this.#done };
    }
  }

  stop(): void {
    this.#bar?.stop();
  }

  #payload() {
    const seconds = (performance.now() - this.#started) / 1000;
    return { rate: seconds > 0 ? (this.thisRun / seconds).toFixed(1) : '0.0', failed: this.#failed };
  }
}
