import { Command, Option } from 'commander';
import { VggError } from '../errors';
import { loadModel } from '../model';
import { writeSafetensors } from '../weights/safetensors';
import type { Head } from '../arch/topology';
import { type EngineFlags, commaList, engineOptions, engineSettings, readInput } from './common';

interface RunFlags extends EngineFlags {
  weights: string;
  input: string;
  key: string;
  outputs: string[];
  head: Head;
  flip?: true;
  out: string;
}

export function registerRun(program: Command): void {
  const command = program.command('run')
    .description('run a batch, save chosen blobs (fc7, prob, ...)')
    .requiredOption('--weights <file>', 'weights (.safetensors, torchvision or timm names)')
    .requiredOption('--input <file>', 'input batch [n, 3, h, w], normalized, F32/F16/BF16 (.safetensors)')
    .option('--key <name>', 'tensor of --input to run', 'input')
    .requiredOption('--outputs <blobs>', 'comma-separated blob names, e.g. fc7,fc8,prob', commaList)
    .addOption(new Option('--head <head>', 'classifier head').choices(['fixed', 'dense']).default('fixed'))
    .option('--flip', 'average prob with that of the mirrored images')
    .requiredOption('--out <file>', 'where to write the blobs (.safetensors, F32)');
  engineOptions(command).action(run);
}

async function run(flags: RunFlags): Promise<void> {
  const started = performance.now();
  const input = readInput(flags.input, flags.key);
  const model = await loadModel(flags.weights, { head: flags.head, ...engineSettings(flags) });
  try {
    // Checked here as well as in run() so that the message names the flag a CLI user typed.
    const names = model.blobNames();
    const unknown = flags.outputs.filter((o) => !names.includes(o));
    if (unknown.length) {
      throw new VggError('E_ARG', `--outputs names unknown blob ${unknown.join(', ')}; with the ${flags.head} head ${flags.weights} has ${names.join(', ')}`);
    }
    const outputs = await model.run(input, { outputs: flags.outputs, flip: flags.flip ?? false });
    writeSafetensors(flags.out, outputs);
    const written = Object.entries(outputs).map(([name, t]) => `${name} [${t.shape.join(', ')}]`).join(', ');
    process.stderr.write(`vgg run: wrote ${written} to ${flags.out} in ${Math.round(performance.now() - started)} ms\n`);
  } finally {
    await model.dispose();
  }
}
