import { Command, Option } from 'commander';
import { DENSE_SCALES, type Prediction } from '../tasks/classify';
import { defaultWeights } from '../weights/default-weights';
import { VggError } from '../errors';
import { loadModel } from '../model';
import { PRESETS, type Preset } from '../images/preprocess';
import { type EngineFlags, engineOptions, engineSettings, positiveInt, positiveIntList, reportError } from './common';

interface ClassifyFlags extends EngineFlags {
  weights?: string;
  top: number;
  dense?: true;
  scales?: number[];
  flip?: true;
  preset?: Preset;
  json?: true;
}

export function registerClassify(program: Command): void {
  const command = program.command('classify')
    .description('print the most probable classes of images')
    .argument('<images...>', 'image files (JPEG, PNG, WebP, TIFF, GIF, AVIF, ...)')
    .option('--weights <file>', 'weights (.safetensors); default: VGG16 with seeded random weights')
    .option('--top <k>', 'classes to print per image', positiveInt, 5)
    .option('--dense', "the paper's dense evaluation over several scales instead of one 224x224 center crop")
    .option('--scales <Q,...>', `shorter sides for --dense (default: ${DENSE_SCALES.join(',')})`, positiveIntList)
    .option('--flip', 'also average the posteriors of the mirrored image')
    .addOption(new Option('--preset <name>', "the preprocessing the weights were trained with (default: the weights' own, torchvision for most)").choices(PRESETS))
    .option('--json', 'print one JSON line per image: {"image", "classes": [{"label", "index", "prob"}]}');
  engineOptions(command).action(classifyImages);
}

type Outcome = { image: string; classes?: Prediction[]; error?: unknown };

async function classifyImages(images: string[], flags: ClassifyFlags): Promise<void> {
  if (flags.scales && !flags.dense) throw new VggError('E_ARG', '--scales applies only with --dense');
  const model = await loadModel(flags.weights ?? await defaultWeights(), engineSettings(flags));
  const { top, dense, scales, flip, preset } = flags;
  // Settled rather than rejected: an outcome may wait while the image before it runs.
  const start = (image: string): Promise<Outcome> => model.classify(image, { top, dense, scales, flip, preset })
    .then((classes) => ({ image, classes }), (error: unknown) => ({ image, error }));
  try {
    // One image ahead: decoding the next overlaps the inference of this one.
    let next = start(images[0]);
    for (let i = 0; i < images.length; i++) {
      const current = next;
      if (i + 1 < images.length) next = start(images[i + 1]);
      const { image, classes, error } = await current;
      if (error !== undefined) {
        // An unreadable image is reported and skipped, as `file` or `identify` would; exit status 1 tells.
        if (error instanceof VggError && (error.code === 'E_IMAGE' || error.code === 'E_IO')) reportError(error);
        else throw error;
      } else {
        process.stdout.write(flags.json ? `${JSON.stringify({ image, classes })}\n` : text(image, classes!));
      }
    }
  } finally {
    await model.dispose();
  }
}

function text(image: string, classes: Prediction[]): string {
  return `${image}\n${classes.map((c) => `  ${c.prob.toFixed(4)}  ${c.label} (${c.index})\n`).join('')}`;
}
