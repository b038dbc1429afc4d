import { Command, Option } from 'commander';
import { VggError } from '../errors';
import { archInfo, type ModelInfo } from '../engine';
import { openWeights } from '../weights';
import { layerTable, presetArch, type LayerRow } from '../arch/topology';
import { imageSize, thousands } from './common';

interface InfoFlags {
  weights?: string;
  arch?: string;
  size: [number, number];
  json?: true;
}

export function registerInfo(program: Command): void {
  program.command('info')
    .description('parameters, MACs and layer table of a network')
    .option('--weights <file>', 'a weights file to describe (safetensors, packed, .pth, .caffemodel, Keras .h5, .onnx)')
    .option('--arch <name>', 'a preset instead: A, A-LRN, B, C, D, E, vgg11..vgg19, with _bn for batch norm')
    .addOption(new Option('--size <HxW>', 'input size for output shapes and MACs').argParser(imageSize).default([224, 224], '224x224'))
    .option('--json', 'print JSON instead of text')
    .action(info);
}

async function info(flags: InfoFlags): Promise<void> {
  if ((flags.weights === undefined) === (flags.arch === undefined)) {
    throw new VggError('E_ARG', 'expected exactly one of --weights <file> or --arch <name>');
  }
  const described = flags.weights !== undefined ? await fromWeights(flags.weights) : archInfo(presetArch(flags.arch!));
  const [h, w] = flags.size;
  const layers = layerTable(described, h, w);
  const macs = layers.reduce((s, r) => s + r.macs, 0);
  if (flags.json) {
    process.stdout.write(`${JSON.stringify({ ...described, macs, layers }, null, 2)}\n`);
  } else {
    process.stdout.write(text(described, flags, macs, layers));
  }
}

/** Binding maps the file, validates it as a VGG and infers its architecture; no executor is started. */
async function fromWeights(file: string): Promise<ModelInfo> {
  const weights = await openWeights(file);
  return archInfo(weights.arch, weights);
}

function text(d: ModelInfo, flags: InfoFlags, macs: number, layers: LayerRow[]): string {
  const [h, w] = flags.size;
  const head = [
    ['arch', d.arch],
    ['batch norm', d.batchNorm ? 'yes (folded into the convolutions)' : 'no'],
    ['parameters', thousands(d.params)],
    ['MACs', `${(macs / 1e9).toFixed(2)} GMAC at ${h}x${w}`],
    ...(flags.weights !== undefined ? [['weights', `${flags.weights} (${d.container}, ${d.naming} names)`], ['preset', `${d.preset} preprocessing`]] : []),
    ...(d.classNames ? [['classes', d.classNames.join(', ')]] : []),
  ];
  const rows = layers.map((r) => [
    r.name, r.type, r.kernel, String(r.stride), String(r.padding), r.shape.join('x'), r.params ? thousands(r.params) : '-',
  ]);
  const [header, ...body] = columns([['layer', 'type', 'kernel', 'stride', 'pad', 'output', 'params'], ...rows], [3, 4, 6]);
  // Stages as in the paper's Table 1: a blank line after every max-pool.
  const stages = body.map((line, i) => (layers[i].type === 'maxpool' ? `${line}\n` : line));
  return [...columns(head, []), '', header, ...stages, ''].join('\n');
}

/** Pads cells into aligned columns, those in `right` right-aligned. */
function columns(rows: string[][], right: number[]): string[] {
  const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => r[c].length)));
  return rows.map((r) => r.map((cell, c) => (right.includes(c) ? cell.padStart(widths[c]) : cell.padEnd(widths[c]))).join('  ').trimEnd());
}
