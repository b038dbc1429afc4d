import { Argument, Command } from 'commander';
import { fetchWeights, HUB_REPOS, type FetchProgress } from '../weights/hub';

interface FetchFlags {
  endpoint?: string;
}

export function registerFetch(program: Command): void {
  program.command('fetch')
    .description('download pretrained ImageNet weights (timm\'s copies of torchvision\'s) into the cache; prints the path')
    .addArgument(new Argument('<name>', 'network').choices(Object.keys(HUB_REPOS)))
    .option('--endpoint <url>', 'Hugging Face Hub address (default: $HF_ENDPOINT, else https://huggingface.co)')
    .action(fetchCommand);
}

async function fetchCommand(name: string, flags: FetchFlags): Promise<void> {
  const started = performance.now();
  const progress = new ProgressLine(`vgg fetch: ${name}`);
  const result = await fetchWeights(name, { endpoint: flags.endpoint, onProgress: (p) => progress.update(p) })
    .finally(() => progress.end());
  if (result.cached) {
    process.stderr.write(`vgg fetch: ${name}: already downloaded\n`);
  } else {
    const checked = result.sha256 ? `sha256 ${result.sha256} verified` : 'the server sent no sha256 to verify';
    process.stderr.write(`vgg fetch: ${name}: ${mb(progress.received)} MB in ${seconds((performance.now() - started) / 1000)}, ${checked}\n`);
  }
  process.stdout.write(`${result.path}\n`);
}

const TTY_EVERY_MS = 200;
const LOG_EVERY_MS = 5000;
const BAR_WIDTH = 30;

/**
 * Download progress on stderr: a bar redrawn in place on a terminal, a line every few seconds
 * otherwise (logs and CI would keep every redraw).
 */
class ProgressLine {
  readonly #tty = process.stderr.isTTY === true;
  #started = 0;
  #shown = 0;
  #drawn = false;
  received = 0;

  constructor(readonly prefix: string) {}

  update(p: FetchProgress): void {
    const now = performance.now();
    this.received = p.received;
    if (this.#started === 0) {
      this.#started = now;
      this.#shown = now;
      const resumed = p.resumedFrom > 0 ? `, resuming at ${mb(p.resumedFrom)} MB` : '';
      process.stderr.write(`${this.prefix}: ${p.url}${resumed}\n`);
      return;
    }
    if (now - this.#shown < (this.#tty ? TTY_EVERY_MS : LOG_EVERY_MS)) return;
    this.#shown = now;
    const rate = (p.received - p.resumedFrom) / ((now - this.#started) / 1000);
    const done = p.total ? `${mb(p.received)}/${mb(p.total)} MB (${Math.floor((100 * p.received) / p.total)}%)` : `${mb(p.received)} MB`;
    const eta = p.total && rate > 0 ? `, ETA ${seconds((p.total - p.received) / rate)}` : '';
    const stats = `${done}, ${mb(rate)} MB/s${eta}`;
    if (this.#tty) {
      const filled = p.total ? Math.round((BAR_WIDTH * p.received) / p.total) : 0;
      process.stderr.write(`\r[${'#'.repeat(filled)}${'.'.repeat(BAR_WIDTH - filled)}] ${stats}\x1b[K`);
      this.#drawn = true;
    } else {
      process.stderr.write(`${this.prefix}: ${stats}\n`);
    }
  }

  /** Ends the bar's line, so that what follows starts on a fresh one. */
  end(): void {
    if (this.#drawn) process.stderr.write('\n');
    this.#drawn = false;
  }
}

const mb = (bytes: number) => (bytes / 1e6).toFixed(1);
const seconds = (s: number) => (s < 90 ? `${Math.round(s)} s` : `${Math.floor(s / 60)} min ${Math.floor(s % 60)} s`);
