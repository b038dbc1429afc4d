import { Command, Option } from 'commander';
import type { Prediction } from '../tasks/classify';
import { checkProtocolOptions, PAPER_SCALES, PROTOCOLS, type Protocol } from '../tasks/protocols';
import { defaultWeights } from '../weights/default-weights';
import { VggError } from '../errors';
import { loadModel } from '../model';
import { PRESETS, type Preset } from '../images/preprocess';
import { type EngineFlags, engineOptions, engineSettings, positiveInt, positiveIntList, protocolFlag } from './common';
import { Progress, progressOptions, type ProgressFlags } from './progress';

interface ClassifyFlags extends EngineFlags, ProgressFlags {
  weights?: string;
  top: number;
  protocol?: Protocol;
  dense?: true;
  scales?: number[];
  flip?: true;
  preset?: Preset;
}

export function registerClassify(program: Command): void {
  const command = program.command('classify')
    .description('print the most probable classes of images')
    .argument('<images...>', 'image files (JPEG, PNG, WebP, TIFF, GIF, AVIF, ...)')
    .option('--weights <file>', 'weights (.safetensors); default: VGG16 with seeded random weights')
    .option('--top <k>', 'classes to print per image', positiveInt, 5)
    .addOption(new Option('--protocol <name>', 'test protocol, as vgg eval\'s (default: center)').choices(PROTOCOLS))
    .option('--dense', 'the same as --protocol dense')
    .option('--scales <Q,...>', `shorter sides Q (default: 256 for center, ${PAPER_SCALES.join(',')} otherwise)`, positiveIntList)
    .option('--flip', 'center and dense: also average the posteriors of the mirrored image')
    .addOption(new Option('--preset <name>', "the preprocessing the weights were trained with (default: the weights' own, torchvision for most)").choices(PRESETS))
    .option('--json', 'print one JSON line per image: {"image", "classes": [{"label", "index", "prob"}]} or {"image", "error": {"code", "message"}}')
    .addHelpText('after', `
An image that cannot be read is reported (a line on stderr, and in --json its own object) and
skipped, as \`file\` or \`identify\` would. With more than one image and stdout not a terminal,
progress is shown on stderr.`);
  progressOptions(engineOptions(command), { json: false }).action(classifyImages);
}

type Outcome = { image: string; classes?: Prediction[]; error?: unknown };

async function classifyImages(images: string[], flags: ClassifyFlags): Promise<void> {
  if (flags.dense && flags.protocol !== undefined && flags.protocol !== 'dense') throw new VggError('E_ARG', `--dense is --protocol dense; it contradicts --protocol ${flags.protocol}`);
  checkProtocolOptions({ protocol: flags.dense ? 'dense' : flags.protocol, scales: flags.scales, flip: flags.flip ?? false }, protocolFlag);
  const model = await loadModel(flags.weights ?? await defaultWeights(), engineSettings(flags));
  const { top, protocol, dense, scales, flip, preset } = flags;
  // The results are the progress when they go to the terminal.
  const progress = new Progress('vgg classify', { total: images.length, quiet: flags.quiet || images.length < 2 || process.stdout.isTTY });
  // Settled rather than rejected: an outcome may wait while the image before it runs.
  const start = (image: string): Promise<Outcome> => model.classify(image, { top, protocol, dense, scales, flip, preset })
    .then((classes) => ({ image, classes }), (error: unknown) => ({ image, error }));
  try {
    // One image ahead: decoding the next overlaps the inference of this one.
    let next = start(images[0]);
    for (let i = 0; i < images.length; i++) {
      const current = next;
      if (i + 1 < images.length) next = start(images[i + 1]);
      const { image, classes, error } = await current;
      if (error === undefined) {
        process.stdout.write(flags.json ? `${JSON.stringify({ image, classes })}\n` : text(image, classes!));
      } else if (error instanceof VggError && (error.code === 'E_IMAGE' || error.code === 'E_IO')) {
        // Recorded per image, as extract does; anything else (a broken model) stops the run.
        progress.log(`vgg classify: ${image}: ${error.code}: ${error.message.replace(/\s*\n\s*/g, ' ')}`);
        if (flags.json) process.stdout.write(`${JSON.stringify({ image, error: { code: error.code, message: error.message } })}\n`);
      } else {
        throw error;
      }
      progress.tick(error !== undefined);
    }
  } finally {
    progress.stop();
    await model.dispose();
  }
  if (images.length > 1 && !flags.quiet) {
    process.stderr.write(`vgg classify: ${images.length} images, ${progress.failed} failed, ${progress.seconds.toFixed(1)} s, ${progress.rate.toFixed(1)} images/s\n`);
  }
  if (progress.failed) process.exitCode = 2;
}

function text(image: string, classes: Prediction[]): string {
  return `${image}\n${classes.map((c) => `  ${c.prob.toFixed(4)}  ${c.label} (${c.index})\n`).join('')}`;
}
