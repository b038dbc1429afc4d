import { Command, Option } from 'commander';
import { defaultWeights } from '../weights/default-weights';
import { loadModel } from '../model';
import { PRESETS, type Preset } from '../images/preprocess';
import { openLabeled } from '../images/labeled';
import { AtomicWriter } from '../files';
import { evaluate, type EvalRecord, type EvalSummary } from '../tasks/eval';
import { checkProtocolOptions, DEFAULT_BATCH, PAPER_SCALES, PROTOCOLS, type Protocol, type ProtocolOptions } from '../tasks/protocols';
import { Progress, progressOptions, type ProgressFlags } from './progress';
import { type EngineFlags, engineOptions, engineSettings, positiveInt, positiveIntList, protocolFlag } from './common';

interface EvalFlags extends EngineFlags, ProgressFlags {
  weights?: string;
  protocol: Protocol;
  scales?: number[];
  flip?: true;
  batch?: number;
  preset?: Preset;
  out?: string;
}

const HELP = `
Labeled images: a folder with one folder of images per class, or a list file of one image and
its label per line: .csv (path,label), .tsv (path<TAB>label) or .txt (path label, as Caffe's
val.txt). Class folders named by ImageNet synset id (n01440764) or class name are those
classes; otherwise folder i in sorted order is class i, and the output says so. A list's label
is a class index (0-based, the model's order; for ImageNet the sorted synset order, not the
devkit's ILSVRC2012_ID), a synset id or a class name; relative paths are from the list's folder.

Protocols (the image first resized so that its shorter side is Q):
  center           Q = 256 (or the one --scales value), the 224x224 center crop
  dense            the whole image through the dense head, score map averaged, softmax
  multicrop        a 5x5 grid of 224x224 crops and their mirrors (50 per scale)
  dense+multicrop  the mean of dense and multicrop
Posteriors are averaged over crops, --flip mirrors and scales (default ${PAPER_SCALES.join(',')}).

--out FILE.jsonl: one line per image, {"path", "label": index, "top5": [...], "probs": [...]},
and one per skipped entry, {"path", "label": as written, "skipped": "unknown label" |
"empty class" | "unreadable", "error"}.
`;

export function registerEval(program: Command): void {
  const command = program.command('eval')
    .description('top-1 and top-5 error on labeled images, by the paper\'s test protocols')
    .argument('<labeled>', 'a folder of class folders, or a .csv, .tsv or .txt list of path and label')
    .option('--weights <file>', 'weights (.safetensors); default: VGG16 with seeded random weights')
    .addOption(new Option('--protocol <name>', 'test protocol').choices(PROTOCOLS).default('center'))
    .option('--scales <Q,...>', `shorter sides Q (default: 256 for center, ${PAPER_SCALES.join(',')} otherwise)`, positiveIntList)
    .option('--flip', 'center and dense: also average the posteriors of the mirrored image')
    .option('--batch <n>', `224x224 inputs per run: center crops of n images, or multicrop crops (default ${DEFAULT_BATCH})`, positiveInt)
    .addOption(new Option('--preset <name>', "the preprocessing the weights were trained with (default: the weights' own, torchvision for most)").choices(PRESETS))
    .option('--json', 'print the summary as one JSON object (model.evaluate\'s) instead of the table')
    .option('--out <file.jsonl>', 'write each image\'s top-5 classes and probabilities')
    .addHelpText('after', HELP);
  progressOptions(engineOptions(command), { json: false }).action(evalImages);
}

async function evalImages(input: string, flags: EvalFlags): Promise<void> {
  const options: ProtocolOptions = { protocol: flags.protocol, scales: flags.scales, flip: flags.flip ?? false, batchSize: flags.batch };
  checkProtocolOptions(options, protocolFlag); // before loading anything
  const out = flags.out !== undefined ? new AtomicWriter(flags.out) : undefined;
  const model = await loadModel(flags.weights ?? await defaultWeights(), engineSettings(flags)).catch((e: unknown) => {
    out?.abort();
    throw e;
  });
  const interrupted = (signal: NodeJS.Signals) => {
    out?.abort(); // a half-written --out is not left behind; there is nothing to resume
    process.kill(process.pid, signal);
  };
  process.once('SIGINT', interrupted);
  process.once('SIGTERM', interrupted);
  let progress: Progress | undefined;
  try {
    const set = await openLabeled(input, model.info.classes, model.info.classNames);
    let total = 0;
    for await (const _ of set.items()) total++;
    if (set.note) process.stderr.write(`vgg eval: ${set.note}\n`);
    progress = new Progress('vgg eval', { total, quiet: flags.quiet });
    const summary = await evaluate(model, input, {
      ...options,
      preset: flags.preset,
      onRead: () => progress!.begin(),
      onRecord: (record) => {
        progress!.tick(record.skipped !== undefined);
        out?.write(`${JSON.stringify(outLine(record))}\n`);
      },
    });
    progress.stop();
    out?.commit();
    process.stdout.write(flags.json ? `${JSON.stringify(summary)}\n` : table(summary, flags.out));
    const { unknownLabel, emptyClasses, unreadable } = summary.skipped;
    if (unknownLabel + emptyClasses + unreadable > 0) process.exitCode = 2;
  } catch (e) {
    out?.abort();
    throw e;
  } finally {
    progress?.stop();
    process.off('SIGINT', interrupted);
    process.off('SIGTERM', interrupted);
    await model.dispose();
  }
}

/** A record as its --out line. */
function outLine({ id, label, index, top, probs, skipped, error }: EvalRecord): Record<string, unknown> {
  if (!skipped) return { path: id, label: index, top5: top, probs };
  return { path: id, label: index ?? label, skipped, ...(error ? { error: `${error.code}: ${error.message}` } : {}) };
}

function table(s: EvalSummary, out: string | undefined): string {
  const percent = (v: number | null) => (v === null ? '-' : `${v.toFixed(2)}%`);
  const skipped = s.skipped.unknownLabel + s.skipped.emptyClasses + s.skipped.unreadable;
  const rows = [
    ['protocol', 'scales', 'flip', 'images', 'skipped', 'top-1 error', 'top-5 error', 'images/s'],
    [s.protocol, s.scales.join(','), s.flip ? 'yes' : 'no', String(s.images), String(skipped), percent(s.top1Error), percent(s.top5Error), s.imagesPerSecond.toFixed(2)],
  ];
  const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => r[c].length)));
  const lines = rows.map((r) => r.map((v, c) => (c < 3 ? v.padEnd(widths[c]) : v.padStart(widths[c]))).join('  ').trimEnd());
  if (skipped) {
    const { unknownLabel, emptyClasses, unreadable } = s.skipped;
    lines.push(`skipped: ${unknownLabel} unknown label, ${emptyClasses} empty class, ${unreadable} unreadable${out ? ` (listed in ${out})` : ''}`);
  }
  return `${lines.join('\n')}\n`;
}
