import { Command } from 'commander';
import { calibrate } from '../tasks/calibrate';
import { writeCalibration } from '../weights/calibration';
import { VggError } from '../errors';
import { imageList } from '../images/sources';
import type { Preset } from '../images/preprocess';
import { positiveInt, preprocessOptions, readInput } from './common';
import { finish, Progress, progressOptions, type ProgressFlags } from './progress';

interface CalibrateFlags extends ProgressFlags {
  weights: string;
  input?: string;
  key: string;
  images?: string;
  out: string;
  batch: number;
  threads?: number;
  preset?: Preset;
  size: number;
  crop: number | false;
}

export function registerCalibrate(program: Command): void {
  const command = program.command('calibrate')
    .description('measure the activation ranges int8 needs, from sample inputs or images')
    .requiredOption('--weights <file>', 'weights (.safetensors)')
    .option('--input <file>', 'sample batch [n, 3, h, w], normalized (.safetensors)')
    .option('--key <name>', 'tensor of --input', 'input')
    .option('--images <path>', 'or sample images: a folder, a glob, a .txt list or one image')
    .requiredOption('--out <file>', 'calibration file to write (.json)')
    .option('--batch <n>', 'images per run', positiveInt, 8)
    .option('--threads <n>', 'oneDNN threads (default: all cores)', positiveInt);
  progressOptions(preprocessOptions(command)).action(run);
}

async function run(flags: CalibrateFlags): Promise<void> {
  if ((flags.input === undefined) === (flags.images === undefined)) throw new VggError('E_ARG', 'expected exactly one of --input <file> or --images <path>');
  const input = flags.input !== undefined ? readInput(flags.input, flags.key) : undefined;
  const list = input ? undefined : await imageList(flags.images!);
  let total = input?.shape[0] ?? 0;
  if (list) for await (const _ of list()) total++; // for the bar's end: the same listing calibrate() reads
  const progress = new Progress('vgg calibrate', { total, quiet: flags.quiet });
  const calibration = await calibrate(flags.weights, input ?? progress.beginEach(list!()), {
    batchSize: flags.batch, threads: flags.threads,
    preprocess: { preset: flags.preset, size: flags.size, crop: flags.crop },
    onProgress: (images) => progress.set(images),
  }).finally(() => progress.stop());
  writeCalibration(flags.out, calibration);
  const layers = Object.keys(calibration.max).length;
  finish(flags, `vgg calibrate: ${calibration.images} images, ${layers} layers -> ${flags.out} in ${progress.seconds.toFixed(1)} s`, {
    command: 'calibrate', images: calibration.images, layers, seconds: Number(progress.seconds.toFixed(3)),
    imagesPerSecond: Number(progress.rate.toFixed(1)), out: flags.out,
  });
}
