import * as path from 'node:path';
import { Command, InvalidArgumentError, Option } from 'commander';
import { defaultWeights } from '../weights/default-weights';
import { writeAtomic } from '../files';
import { AUGMENTS, SCALE_VIEWS, TRAIN_LAYERS, trainClassifier, type Augment, type EpochLog, type TrainLayers, type TrainSummary } from '../train';
import { type EngineFlags, commaList, engineOptions, engineSettings, positiveInt } from './common';
import { finish, Progress, progressOptions, type ProgressFlags } from './progress';

interface TrainFlags extends EngineFlags, ProgressFlags {
  weights?: string;
  out: string;
  layers: TrainLayers;
  epochs: number;
  batch: number;
  lr: number;
  momentum: number;
  weightDecay: number;
  dropout: number;
  val?: number;
  valDir?: string;
  seed: number;
  augment?: Augment[];
  views?: number;
  cache?: string;
  fcHidden?: number;
  patience: number;
  maxDrops: number;
}

/** A number at least 0 (trainClassifier checks its range and names the option). */
function number(value: string): number {
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n) || n < 0) throw new InvalidArgumentError('Expected a number, like 0.01 or 5e-4.');
  return n;
}

function augments(value: string): Augment[] {
  const list = commaList(value);
  const bad = list.find((a) => !AUGMENTS.includes(a as Augment));
  if (bad) throw new InvalidArgumentError(`Expected ${AUGMENTS.join(', ')} or both, comma-separated; ${bad} is neither.`);
  return list as Augment[];
}

const HELP = `
Labeled images as vgg eval reads them: a folder with one folder of images per class, or a .csv,
.tsv or .txt list of path and label per line. The classes are the folder names (sorted), or the
list's labels (sorted, numerically when all are numbers); they are saved in the new weights, and
vgg classify, eval and serve print them.

The convolutional layers are frozen: their output for each image (pool5 for --layers fc6-fc8,
fc6 for fc7-fc8, fc7 for fc8) is computed once and cached in --cache (default OUT.cache/), by
batches committed every second: a killed run resumes where it stopped, and another run with
the same weights, images and augmentation trains from the cache without the network.

The paper's recipe: mini-batch SGD with momentum, weight decay (L2), dropout on fc6 and fc7's
outputs, a new fc8 (and new fc6, fc7 for --fc-hidden) from N(0, 0.01^2), retrained layers from
the weights; the learning rate is divided by 10 when validation accuracy has not improved for
--patience epochs, and after --max-drops drops the next stall ends training. The best epoch's
weights are written.

--augment flip: each training image and its mirror (2 views). --augment scale: ${SCALE_VIEWS} views
per image (--views): the plain 256/224 center crop and jittered ones, S random in [256, 512]
then a random 224 crop (mirrored at random with flip too). Views are seeded and cached.
Validation uses the plain center crop, as vgg eval does.

Writes OUT (an ordinary torchvision .safetensors file: the convolutions as given, batch norm
folded in; fc6, fc7, fc8; the class names and the preset of the input weights in __metadata__)
and, with --val, OUT.val.tsv: the validation images and their classes, for
vgg eval OUT.val.tsv --weights OUT (its top-1 error is 100% minus the best validation accuracy).
`;

export function registerTrain(program: Command): void {
  const command = program.command('train')
    .description('train a new classifier (fc8, fc7-fc8 or fc6-fc8) on labeled images, over frozen conv layers')
    .argument('<labeled>', 'a folder of class folders, or a .csv, .tsv or .txt list of path and label')
    .option('--weights <file>', 'weights to start from; default: VGG16 with seeded random weights')
    .requiredOption('--out <file>', 'the new weights (.safetensors)')
    .addOption(new Option('--layers <layers>', 'the layers that learn').choices(TRAIN_LAYERS).default('fc8'))
    .option('--epochs <n>', 'at most this many epochs', positiveInt, 30)
    .option('--batch <n>', 'images per SGD step', positiveInt, 64)
    .option('--lr <rate>', 'learning rate', number, 0.01)
    .option('--momentum <m>', 'SGD momentum', number, 0.9)
    .option('--weight-decay <l2>', 'weight decay (L2)', number, 5e-4)
    .option('--dropout <p>', 'dropout probability', number, 0.5)
    .option('--val <fraction>', "share of each class's images held out for validation, seeded (default: 0.1)", number)
    .option('--val-dir <labeled>', 'validation images of their own instead (class folders or a list)')
    .option('--seed <n>', 'seeds the split, new layers, views, shuffling and dropout', (v) => (v === '0' ? 0 : positiveInt(v)), 0)
    .option('--augment <list>', 'flip, scale or flip,scale: the paper\'s augmentations, as cached views', augments)
    .option('--views <n>', `views per image with --augment scale (default: ${SCALE_VIEWS})`, positiveInt)
    .option('--cache <dir>', 'the feature cache (default: OUT.cache)')
    .option('--fc-hidden <n>', 'width of new fc6 and fc7, for weights without them (--layers fc6-fc8)', positiveInt)
    .option('--patience <epochs>', 'epochs without a better validation accuracy before the learning rate drops', positiveInt, 2)
    .option('--max-drops <n>', 'learning-rate drops before a stall ends training', (v) => (v === '0' ? 0 : positiveInt(v)), 3)
    .addHelpText('after', HELP);
  progressOptions(engineOptions(command)).action(train);
}

async function train(input: string, flags: TrainFlags): Promise<void> {
  const weights = flags.weights ?? await defaultWeights();
  let progress: Progress | undefined;
  let epochs = 0;
  const summary = await trainClassifier(weights, input, {
    out: flags.out, layers: flags.layers, epochs: flags.epochs, batchSize: flags.batch, learningRate: flags.lr, momentum: flags.momentum,
    weightDecay: flags.weightDecay, dropout: flags.dropout, seed: flags.seed, patience: flags.patience, maxDrops: flags.maxDrops,
    ...(flags.val !== undefined ? { val: flags.val } : {}), ...(flags.valDir !== undefined ? { valSource: flags.valDir } : {}),
    ...(flags.augment ? { augment: flags.augment } : {}), ...(flags.views !== undefined ? { views: flags.views } : {}),
    ...(flags.cache !== undefined ? { cache: flags.cache } : {}), ...(flags.fcHidden !== undefined ? { fcHidden: flags.fcHidden } : {}),
    load: engineSettings(flags),
    onCache: (done, total) => {
      progress ??= new Progress('vgg train: caching features', { total, done, quiet: flags.quiet || done === total });
      progress.set(done);
    },
    onStep: (done, total) => {
      if (done === Math.min(total, flags.batch)) {
        progress?.stop();
        progress = new Progress(`vgg train: epoch ${++epochs}`, { total, quiet: flags.quiet });
      }
      progress!.set(done);
    },
    onEpoch: (log) => {
      progress?.stop();
      if (flags.json) process.stdout.write(`${JSON.stringify(log)}\n`);
      else if (!flags.quiet) process.stderr.write(`${epochLine(log, flags.epochs)}\n`);
    },
  }).finally(() => progress?.stop());
  const valList = flags.valDir === undefined ? `${flags.out.replace(/\.safetensors$/, '')}.val.tsv` : undefined;
  if (valList) writeValList(valList, summary);
  for (const f of summary.failed) process.stderr.write(`vgg train: ${f.id}: ${f.code}: ${f.message}\n`);
  const { validation: _, ...rest } = summary;
  finish(flags, `vgg train: ${summary.classes.length} classes, ${summary.images.train} training images (${summary.views} view${summary.views > 1 ? 's' : ''} each), `
    + `${summary.images.val} validation; best epoch ${summary.bestEpoch} of ${summary.epochs.length}: validation accuracy ${summary.valAccuracy.toFixed(2)}%, `
    + `${summary.seconds.toFixed(1)} s -> ${summary.out}${valList ? ` (validation images in ${valList})` : ''}`,
  { command: 'train', ...rest, failed: summary.failed.length, ...(valList ? { valList } : {}) });
  if (summary.failed.length) process.exitCode = 2;
}

/** 'epoch 3/30: loss 0.4120, train 86.20%, val 91.00% (best), lr 0.01, 1.2 s' */
function epochLine(e: EpochLog, of: number): string {
  return `vgg train: epoch ${e.epoch}/${of}: loss ${e.loss.toFixed(4)}, train ${e.trainAccuracy.toFixed(2)}%, `
    + `val ${e.valAccuracy.toFixed(2)}% (loss ${e.valLoss.toFixed(4)})${e.best ? ' best' : ''}, lr ${e.learningRate}, ${e.seconds.toFixed(1)} s`
    + `${e.lrDropped ? '; learning rate / 10' : ''}`;
}

/** The validation images with their class names, as a .tsv list that vgg eval reads. */
function writeValList(file: string, summary: TrainSummary): void {
  writeAtomic(file, (out) => {
    out.write('path\tlabel\n');
    for (const { image, label } of summary.validation) out.write(`${path.resolve(String(image))}\t${summary.classes[label]}\n`);
  });
}
