import { SingleBar } from 'cli-progress';
import type { Command } from 'commander';

/**
 * The one progress reporter of every long command (extract, classify, calibrate, pack, fetch,
 * job wait), on stderr: on a terminal a bar redrawn in place as each item finishes, with the rate
 * and, once it means something, an ETA; otherwise (a log, CI) a line every LINE_MS. It never
 * writes colour. `--quiet` silences it and the closing line; `--json` prints the closing summary
 * as one JSON object on stdout instead.
 */

export interface ProgressFlags {
  quiet?: true;
  json?: true;
}

/** `--quiet`, and `--json` unless the command's --json already means something else. */
export function progressOptions(command: Command, { json = true } = {}): Command {
  command.option('--quiet', 'no progress and no closing line on stderr (errors are still shown)');
  if (json) command.option('--json', 'print one JSON summary object on stdout at the end (counts, failures, seconds, rate, output)');
  return command;
}

export interface Unit {
  /** Shown after counts and rates: 'images', 'shards', 'MB'. */
  name: string;
  /** The name of one, where it differs: 'image'. */
  one?: string;
  /** Display value per counted item (1e-6 for bytes shown as MB). */
  scale: number;
  digits: number;
}

export const IMAGES: Unit = { name: 'images', one: 'image', scale: 1, digits: 0 };
export const SHARDS: Unit = { name: 'shards', one: 'shard', scale: 1, digits: 0 };
export const MEGABYTES: Unit = { name: 'MB', scale: 1e-6, digits: 1 };

/** Without a terminal, a line at most this often. */
const LINE_MS = 5000;
/** An ETA from less than this much of the run is noise (a model still compiling, a cold cache). */
const ETA_AFTER_MS = 3000;
const ETA_AFTER_FRACTION = 0.02;

export interface ProgressOptions {
  /** Total items; unknown (undefined) shows no bar fill and no ETA. */
  total?: number;
  unit?: Unit;
  /** Items done by an earlier run (--resume), which do not count towards this run's rate. */
  done?: number;
  failed?: number;
  /** What `failed` counts when it is not `unit` (job wait: images done, shards failed); then the bar names it. */
  failedUnit?: Unit;
  quiet?: boolean;
}

export class Progress {
  readonly started = performance.now();
  done: number;
  failed: number;
  readonly #label: string;
  readonly #unit: Unit;
  readonly #failedUnit: Unit;
  readonly #total: number | undefined;
  readonly #from: number;
  readonly #quiet: boolean;
  #bar: SingleBar | undefined;
  #lineAt = performance.now();

  /** `label` starts every line: 'vgg extract'. */
  constructor(label: string, options: ProgressOptions = {}) {
    this.#label = label;
    this.#unit = options.unit ?? IMAGES;
    this.#failedUnit = options.failedUnit ?? this.#unit;
    this.#total = options.total;
    this.done = this.#from = options.done ?? 0;
    this.failed = options.failed ?? 0;
    this.#quiet = options.quiet ?? false;
    if (!this.#quiet && process.stderr.isTTY && process.env.TERM !== 'dumb') {
      this.#bar = new SingleBar({
        // Not {eta}: cli-progress fills that itself, from the first second on.
        format: `${label} [{bar}] {count} | {rate}{until}{failures}`,
        stream: process.stderr,
        hideCursor: true,
        barCompleteChar: '#',
        barIncompleteChar: '-',
        barsize: 30,
      });
      this.#bar.start(this.#total ?? 0, this.done, this.#barPayload());
    }
  }

  /** One more item finished. */
  tick(failed = false): void {
    this.set(this.done + 1, this.failed + (failed ? 1 : 0));
  }

  /** Where the work stands now (job wait and fetch learn totals, not steps). */
  set(done: number, failed = this.failed): void {
    [this.done, this.failed] = [done, failed];
    if (this.#quiet) return;
    if (this.#bar) {
      this.#bar.update(done, this.#barPayload());
    } else if (performance.now() - this.#lineAt >= LINE_MS) {
      this.#lineAt = performance.now();
      const p = this.#payload();
      process.stderr.write(`${this.#label}: ${[p.count, p.rate, p.eta, p.failures.replace(' | ', '')].filter(Boolean).join(', ')}\n`);
    }
  }

  /** A line on stderr that stays above the bar (a failed image), or just the line without one. */
  log(line: string): void {
    process.stderr.write(this.#bar ? `\r\x1b[K${line}\n` : `${line}\n`);
  }

  /** Removes the bar (leaving its last state), so that what follows starts on a fresh line. */
  stop(): void {
    this.#bar?.stop();
    this.#bar = undefined;
  }

  get seconds(): number {
    return (performance.now() - this.started) / 1000;
  }

  /** Items per second in this run. */
  get rate(): number {
    return this.seconds > 0 ? (this.done - this.#from) / this.seconds : 0;
  }

  #barPayload() {
    const p = this.#payload();
    return { ...p, until: p.eta ? ` | ${p.eta}` : '' };
  }

  #payload() {
    return progressFields({ done: this.done, from: this.#from, total: this.#total, failed: this.failed, ms: performance.now() - this.started }, this.#unit, this.#failedUnit);
  }
}

export interface ProgressState {
  done: number;
  /** Done before this run started (not counted in the rate). */
  from: number;
  total?: number;
  failed: number;
  /** Since this run started. */
  ms: number;
}

/** What the bar and the lines show: counts, rate, and the ETA only once it is worth reading. */
export function progressFields(p: ProgressState, u: Unit, failedUnit = u): { count: string; rate: string; eta: string; failures: string } {
  const show = (n: number) => (n * u.scale).toFixed(u.digits);
  const rate = p.ms > 0 ? (p.done - p.from) / (p.ms / 1000) : 0;
  const meaningful = p.total !== undefined && rate > 0 && p.ms >= ETA_AFTER_MS && p.done - p.from >= ETA_AFTER_FRACTION * p.total;
  return {
    count: p.total === undefined ? `${show(p.done)} ${u.name}` : `${show(p.done)}/${show(p.total)} ${u.name}`,
    rate: `${(rate * u.scale).toFixed(1)} ${u.name}/s`,
    eta: meaningful ? `ETA ${duration(Math.max(0, (p.total! - p.done) / rate))}` : '',
    failures: !p.failed ? '' : failedUnit === u ? ` | ${p.failed} failed` : ` | ${p.failed} failed ${p.failed === 1 ? failedUnit.one ?? failedUnit.name : failedUnit.name}`,
  };
}

/**
 * The closing word of a command: `line` on stderr, or with --json `summary` as one JSON object on
 * stdout (what a script reads), or nothing with --quiet.
 */
export function finish(flags: ProgressFlags, line: string, summary: Record<string, unknown>): void {
  if (flags.json) process.stdout.write(`${JSON.stringify(summary)}\n`);
  else if (!flags.quiet) process.stderr.write(`${line}\n`);
}

/** 75 -> '75 s', 200 -> '3 min 20 s'. */
export function duration(seconds: number): string {
  return seconds < 90 ? `${Math.round(seconds)} s` : `${Math.floor(seconds / 60)} min ${Math.floor(seconds % 60)} s`;
}
