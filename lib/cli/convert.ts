import { Command } from 'commander';
import { writeSafetensors } from '../weights/safetensors';
import { countParams } from '../arch/topology';
import { archMetadata, bindWeights } from '../weights/binding';
import { thousands } from './common';

export function registerConvert(program: Command): void {
  program.command('convert')
    .description('convert Caffe, Keras, ONNX or PyTorch weights to safetensors with torchvision names')
    .argument('<in>', 'a .caffemodel (V1 or V2), Keras .h5, .onnx, or .pth state_dict; recognised by content')
    .argument('<out>', 'safetensors file to write (F32; architecture and preprocessing preset in its metadata)')
    .action(convert);
}

async function convert(input: string, output: string): Promise<void> {
  // Loaded on demand: the container readers are only needed by this command and by loading such a file.
  const { openContainer } = await import('../weights/containers');
  const converted = await openContainer(input);
  // Bound like any weights file, so only a valid VGG gets written.
  const bound = bindWeights({ source: input, ...converted });
  const metadata = { ...archMetadata(bound.arch, bound.naming), 'vgg.preset': bound.preset, 'vgg.container': converted.container };
  writeSafetensors(output, Object.fromEntries(converted.tensors), metadata);
  const { arch } = bound;
  process.stderr.write(`vgg convert: ${input} (${converted.container}): VGG ${arch.arch}${arch.batchNorm ? ' with batch norm' : ''} (${bound.naming} names), `
    + `${converted.tensors.size} tensors, ${thousands(countParams(arch))} parameters, ${bound.preset} preprocessing -> ${output}\n`);
}
