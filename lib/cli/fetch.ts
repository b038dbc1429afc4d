import { Argument, Command } from 'commander';
import { fetchWeights, HUB_REPOS } from '../weights/hub';
import { finish, MEGABYTES, Progress, progressOptions, type ProgressFlags } from './progress';

interface FetchFlags extends ProgressFlags {
  endpoint?: string;
  cacheDir?: string;
}

export function registerFetch(program: Command): void {
  const command = program.command('fetch')
    .description('download pretrained ImageNet weights (timm\'s copies of torchvision\'s) into the Hugging Face cache; prints the path')
    .addArgument(new Argument('<name>', 'network').choices(Object.keys(HUB_REPOS)))
    .option('--endpoint <url>', 'Hugging Face Hub address (default: $HF_ENDPOINT, else https://huggingface.co)')
    .option('--cache-dir <dir>', 'Hugging Face hub cache (default: $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub)')
    .addHelpText('after', `
A file huggingface_hub (Python) or another vgg already put in the cache is used without any
network. Downloads go through HTTPS_PROXY / HTTP_PROXY, except for hosts in NO_PROXY.`);
  progressOptions(command).action(fetchCommand);
}

async function fetchCommand(name: string, flags: FetchFlags): Promise<void> {
  let progress: Progress | undefined;
  const result = await fetchWeights(name, {
    endpoint: flags.endpoint,
    cacheDir: flags.cacheDir,
    onProgress: (p) => {
      if (!progress) {
        if (!flags.quiet) process.stderr.write(`vgg fetch: ${name}: ${p.url}${p.resumedFrom > 0 ? `, resuming at ${(p.resumedFrom / 1e6).toFixed(1)} MB` : ''}\n`);
        progress = new Progress(`vgg fetch ${name}`, { total: p.total, unit: MEGABYTES, done: p.resumedFrom, quiet: flags.quiet });
      }
      progress.set(p.received);
    },
  }).finally(() => progress?.stop());
  const seconds = progress?.seconds ?? 0;
  const bytes = progress?.done ?? 0;
  const checked = result.sha256 ? `sha256 ${result.sha256} verified` : 'the server sent no sha256 to verify';
  const cached = result.reused
    ? `reusing ${result.reused} from an earlier vgg fetch${result.path === result.reused ? '' : ', linked into the Hugging Face cache'}; nothing downloaded`
    : 'already downloaded';
  finish(flags, result.cached ? `vgg fetch: ${name}: ${cached}` : `vgg fetch: ${name}: ${(bytes / 1e6).toFixed(1)} MB in ${seconds.toFixed(1)} s, ${checked}`, {
    command: 'fetch', name, path: result.path, cached: result.cached, bytes, seconds: Number(seconds.toFixed(3)),
    ...(result.sha256 ? { sha256: result.sha256 } : {}), ...(result.reused ? { reused: result.reused } : {}),
  });
  // The path is what a script wants ("$(vgg fetch vgg16)"); with --json it is in the object.
  if (!flags.json) process.stdout.write(`${result.path}\n`);
}
