import { Command } from 'commander';
import { calibrate } from '../tasks/calibrate';
import { writeCalibration } from '../weights/calibration';
import { VggError } from '../errors';
import { imageList } from '../images/sources';
import type { Preset } from '../images/preprocess';
import { positiveInt, preprocessOptions, readInput } from './common';

interface CalibrateFlags {
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
  preprocessOptions(command).action(run);
}

async function run(flags: CalibrateFlags): Promise<void> {
  if ((flags.input === undefined) === (flags.images === undefined)) throw new VggError('E_ARG', 'expected exactly one of --input <file> or --images <path>');
  const started = performance.now();
  const samples = flags.input !== undefined ? readInput(flags.input, flags.key) : (await imageList(flags.images!))();
  const calibration = await calibrate(flags.weights, samples, {
    batchSize: flags.batch, threads: flags.threads,
    preprocess: { preset: flags.preset, size: flags.size, crop: flags.crop },
  });
  writeCalibration(flags.out, calibration);
  process.stderr.write(`vgg calibrate: ${calibration.images} images, ${Object.keys(calibration.max).length} layers -> ${flags.out} in ${((performance.now() - started) / 1000).toFixed(1)} s\n`);
}
