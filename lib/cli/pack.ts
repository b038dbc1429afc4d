import { Command, InvalidArgumentError, Option } from 'commander';
import { packWeights } from '../tasks/pack';
import type { Precision } from '../native';
import type { Head } from '../arch/topology';
import { imageSize, positiveInt, positiveIntList } from './common';
import { Elapsed, finish, progressOptions, type ProgressFlags } from './progress';

interface PackFlags extends ProgressFlags {
  weights: string;
  out: string;
  precision: Precision;
  winograd?: true;
  calibration?: string;
  batch: number[];
  size: [number, number][];
  head: Head[];
  threads?: number;
}

const HELP = `
A packed file holds the weights in the layouts this machine's oneDNN picked for the given
shapes: loading it maps the file and uses it in place (no conversion, and processes that load
one file share its memory). It is tied to this oneDNN version and instruction set; elsewhere,
loading it fails with E_WEIGHTS_FOREIGN. Shapes not packed for still run: their primitives
convert a packed layout at load (an int8 layout may refuse, and a Winograd layout is only used
for the shapes it was packed for; then pack for that shape).
`;

export function registerPack(program: Command): void {
  const command = program.command('pack')
    .description('pre-arrange weights for this machine: fast loads, shared between processes')
    .requiredOption('--weights <file>', 'weights (.safetensors)')
    .requiredOption('--out <file>', 'packed file to write')
    .addOption(new Option('--precision <p>', 'arithmetic').choices(['fp32', 'bf16', 'int8']).default('fp32'))
    .option('--winograd', 'fp32: Winograd convolutions')
    .option('--calibration <file>', 'int8: activation ranges from vgg calibrate (stored in the packed file)')
    .option('--batch <list>', 'batch sizes to pack for', positiveIntList, [1, 8])
    .option('--size <list>', 'input sizes HxW to pack for', (v: string) => v.split(',').map((s) => imageSize(s.trim())), [[224, 224]])
    .option('--head <list>', 'heads to pack for: fixed, dense', headList, ['fixed'])
    .option('--threads <n>', 'oneDNN threads (default: all cores)', positiveInt)
    .addHelpText('after', HELP);
  // No bar: one native call packs every shape (one call per shape would copy all the weights out
  // once per shape); the time so far instead.
  progressOptions(command).action(run);
}

function headList(value: string): Head[] {
  const heads = value.split(',').map((s) => s.trim());
  if (!heads.every((h) => h === 'fixed' || h === 'dense')) throw new InvalidArgumentError('Expected fixed, dense or fixed,dense.');
  return heads as Head[];
}

async function run(flags: PackFlags): Promise<void> {
  const shapes = flags.batch.flatMap((n) => flags.size.flatMap(([h, w]) => flags.head.map((head): [number, number, number, Head] => [n, h, w, head])));
  const elapsed = new Elapsed('vgg pack', `packing ${flags.weights} for ${shapes.length} input shape${shapes.length === 1 ? '' : 's'}`, flags.quiet);
  const r = await packWeights(flags.weights, flags.out, {
    precision: flags.precision, shapes, winograd: flags.winograd, calibration: flags.calibration, threads: flags.threads,
  }).finally(() => elapsed.stop());
  const mb = (r.bytes / 1e6).toFixed(1);
  const seconds = elapsed.seconds;
  finish(flags, `vgg pack: ${r.header.precision}${r.header.winograd ? ' Winograd' : ''} for oneDNN ${r.header.onednn} on ${r.header.isa}, ${r.layouts} layouts, ${mb} MB -> ${flags.out} in ${seconds.toFixed(1)} s`, {
    command: 'pack', precision: r.header.precision, winograd: r.header.winograd, layouts: r.layouts, bytes: r.bytes, seconds: Number(seconds.toFixed(3)), out: flags.out,
  });
}
