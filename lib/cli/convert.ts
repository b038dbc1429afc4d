import { Command } from 'commander';
import { encodeSafetensors, parseSafetensors, writeSafetensors } from '../weights/safetensors';
import { countParams } from '../arch/topology';
import { archMetadata, bindWeights } from '../weights/binding';
import { thousands } from './common';

export function registerConvert(program: Command): void {
  program.command('convert')
    .description('convert a .pth state_dict to safetensors')
    .argument('<in.pth>', 'checkpoint written by torch.save(model.state_dict(), f)')
    .argument('<out>', 'safetensors file to write (F32, architecture in its metadata)')
    .action(convert);
}

async function convert(input: string, output: string): Promise<void> {
  // Loaded on demand: the zip and pickle readers are only needed by this command.
  const { readPth } = await import('../weights/pth');
  const tensors = Object.fromEntries(await readPth(input));
  // Bound through the same parser as any weights file, so only a valid VGG gets written.
  const bytes = Buffer.concat(encodeSafetensors(tensors));
  const bound = bindWeights(parseSafetensors(new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength), input));
  writeSafetensors(output, tensors, archMetadata(bound.arch, bound.naming));
  const { arch } = bound;
  process.stderr.write(`vgg convert: ${input}: VGG ${arch.arch}${arch.batchNorm ? ' with batch norm' : ''} (${bound.naming} names), `
    + `${Object.keys(tensors).length} tensors, ${thousands(countParams(arch))} parameters -> ${output}\n`);
}
