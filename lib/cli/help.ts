import type { Command, Option } from 'commander';

/**
 * What every command's help ends with: an example a user can copy, and the exit statuses a script
 * can test. Keyed by the command's path after `vgg`; test/unit/cli-help.test.ts fails for a
 * command missing here, so a new command cannot ship without them.
 */
const FAILED = '1 an error stopped it (one line on stderr: vgg: E_CODE: message)';
const EXTRAS: Record<string, { example: string; exit: string }> = {
  run: {
    example: 'vgg run --weights vgg16.safetensors --input batch.safetensors --outputs fc7,prob --out blobs.safetensors',
    exit: `0 written; ${FAILED}`,
  },
  info: { example: 'vgg info --arch vgg16 --size 224x224', exit: `0 printed; ${FAILED}` },
  convert: { example: 'vgg convert vgg16.pth vgg16.safetensors', exit: `0 written; ${FAILED}` },
  calibrate: {
    example: 'vgg calibrate --weights vgg16.safetensors --images samples/ --out vgg16.calib.json',
    exit: `0 written; ${FAILED}`,
  },
  pack: {
    example: 'vgg pack --weights vgg16.safetensors --precision bf16 --batch 1,8 --size 224x224 --out vgg16.packed',
    exit: `0 written; ${FAILED}`,
  },
  fetch: { example: 'vgg fetch vgg16', exit: `0 the path is on stdout; ${FAILED}` },
  classify: {
    example: "vgg classify photos/*.jpg --weights \"$(vgg fetch vgg16)\" --top 3",
    exit: `0 every image classified; ${FAILED}; 2 some images failed (one line each on stderr)`,
  },
  extract: {
    example: 'vgg extract photos/ --weights vgg16.safetensors --outputs fc7 --out features.safetensors',
    exit: `0 every image done; ${FAILED}; 2 FILE was written but some images failed; `
      + '130 interrupted (143 on SIGTERM): continue with --resume',
  },
  eval: {
    example: 'vgg eval val.csv --weights VGG_ILSVRC_16_layers.caffemodel --protocol dense+multicrop --flip',
    exit: `0 every image scored; ${FAILED}; 2 done, but some entries were skipped (unknown labels, empty classes, unreadable images)`,
  },
  train: {
    example: 'vgg train photos/ --weights vgg16.safetensors --out birds.safetensors --augment flip --json',
    exit: `0 written; ${FAILED}; 2 written, but some images could not be read (one line each on stderr, left out)`,
  },
  serve: { example: 'vgg serve --weights vgg16.safetensors --port 8080 --max-latency-ms 1000', exit: `0 stopped by SIGTERM or SIGINT; ${FAILED}` },
  job: { example: 'vgg job submit photos/ --weights /shared/vgg16.safetensors --out /shared/job', exit: "the subcommand's (vgg job <command> --help)" },
  'job submit': {
    example: 'vgg job submit photos/ --weights /shared/vgg16.safetensors --out /shared/job --redis redis://queue:6379',
    exit: `0 submitted (the job id is on stdout); ${FAILED}`,
  },
  'job worker': {
    example: 'vgg job worker --redis redis://queue:6379 --device cuda:0',
    exit: `0 stopped by SIGTERM or SIGINT after finishing its shards; ${FAILED}`,
  },
  'job status': { example: 'vgg job status JOB --json', exit: `0 printed; ${FAILED}` },
  'job wait': { example: 'vgg job wait JOB', exit: `0 every shard done; ${FAILED}; 2 some shards failed for good` },
  'job merge': {
    example: 'vgg job merge JOB --out features.safetensors',
    exit: `0 every image done; ${FAILED}; 2 FILE was written but some images failed`,
  },
};

/** The path of a command after `vgg`: 'extract', 'job worker'. */
export function commandPath(command: Command): string {
  const names: string[] = [];
  for (let c: Command | null = command; c?.parent; c = c.parent) names.unshift(c.name());
  return names.join(' ');
}

/** Every command under `program`, depth first, in the order they were added. */
export function allCommands(program: Command): Command[] {
  return program.commands.flatMap((c) => [c, ...allCommands(c)]);
}

/**
 * Gives every command's help the conventions above: defaults shown as a user types them
 * (`fc7,prob`, `224x224`, `torchvision`: commander would print JSON), then the example and the
 * exit statuses.
 */
export function applyHelpConventions(program: Command): void {
  for (const command of allCommands(program)) {
    for (const option of command.options) typedDefault(option);
    const extras = EXTRAS[commandPath(command)];
    if (!extras) continue;
    // One status a line: '0 written; 1 an error ...' -> '  0  written' ...
    const statuses = extras.exit.split('; ').map((s) => `  ${s.replace(/^(\d+) /, '$1  ')}`).join('\n');
    command.addHelpText('after', `\nExample:\n  ${extras.example}\n\nExit status:\n${statuses}\n`);
  }
}

export function hasHelpExtras(command: Command): boolean {
  return Object.hasOwn(EXTRAS, commandPath(command));
}

function typedDefault(option: Option): void {
  if (option.defaultValue === undefined || option.defaultValueDescription !== undefined) return;
  option.defaultValueDescription = typed(option.defaultValue);
}

/** [[224, 224]] -> '224x224', ['fc7', 'prob'] -> 'fc7,prob', 'torchvision' -> 'torchvision'. */
function typed(value: unknown): string {
  if (Array.isArray(value)) {
    return value.map((v) => (Array.isArray(v) ? v.join('x') : typed(v))).join(',');
  }
  return String(value);
}
