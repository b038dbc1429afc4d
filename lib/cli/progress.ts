import { SingleBar } from 'cli-progress';
import type { Command } from 'commander';

/**
 * The one progress reporter of every long command (extract, classify, calibrate, pack, fetch,
 * job wait), on stderr: on a terminal a bar redrawn in place as each item finishes, with the rate
 * and, once it means something, an ETA; where items finish in groups (extract's batches) the bar
 * also shows, apart, the items under way, which begin one by one; otherwise (a log, CI) a line
 * every LINE_MS. It never
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
  #redrawing: NodeJS.Immediate | undefined;
  /** Items begun, done or not (only for commands that call begin()). */
  #begun: number;
  #lineAt = performance.now();

  /** `label` starts every line: 'vgg extract'. */
  constructor(label: string, options: ProgressOptions = {}) {
    this.#label = label;
    this.#unit = options.unit ?? IMAGES;
    this.#failedUnit = options.failedUnit ?? this.#unit;
    this.#total = options.total;
    this.done = this.#from = this.#begun = options.done ?? 0;
    this.failed = options.failed ?? 0;
    this.#quiet = options.quiet ?? false;
    if (!this.#quiet && onTerminal()) {
      this.#bar = new SingleBar({
        // Not {eta}: cli-progress fills that itself, from the first second on. Not {bar}: it has
        // no room for the items under way.
        format: `${label} [{gauge}] {count} | {rate}{until}{failures}`,
        stream: process.stderr,
        hideCursor: true,
      });
      this.#bar.start(this.#total ?? 0, this.done, this.#barPayload());
    }
  }

  /** One more item finished. */
  tick(failed = false): void {
    this.set(this.done + 1, this.failed + (failed ? 1 : 0));
  }

  /**
   * One more item begun (extract: an image read into the decode-ahead pipeline). The bar shows
   * the items begun but not done as '+', apart from those done ('#'), and counts them: when
   * items finish a batch at a time, this is what moves image by image.
   */
  begin(): void {
    this.#begun++;
    this.#redraw();
  }

  /**
   * `items`, each counted as begun when it is read: the pipeline reads images one by one and
   * gives their records a batch at a time, so these are what the bar shows moving.
   */
  async *beginEach<T>(items: AsyncIterable<T>): AsyncGenerator<T> {
    for await (const item of items) {
      this.begin();
      yield item;
    }
  }

  /** Where the work stands now (job wait and fetch learn totals, not steps), and what is under way besides. */
  set(done: number, failed = this.failed, underWay?: number): void {
    [this.done, this.failed] = [done, failed];
    if (underWay !== undefined) this.#begun = done + underWay;
    if (this.#quiet) return;
    if (this.#bar) {
      this.#redraw();
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
    if (this.#redrawing) {
      clearImmediate(this.#redrawing);
      this.#redrawing = undefined;
      this.#bar?.update(this.done, this.#barPayload());
    }
    this.#bar?.stop();
    this.#bar = undefined;
  }

  /**
   * Redraws once the work of this turn of the event loop is done: the records of a batch arrive
   * in one turn, and a bar drawn after the first of them would show 1 of 32 done for a moment.
   */
  #redraw(): void {
    if (!this.#bar) return; // no terminal: set() writes the lines
    this.#redrawing ??= setImmediate(() => {
      this.#redrawing = undefined;
      this.#bar?.update(this.done, this.#barPayload());
    });
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
    const state = { done: this.done, begun: this.#begun, from: this.#from, total: this.#total, failed: this.failed, ms: performance.now() - this.started };
    return progressFields(state, this.#unit, this.#failedUnit);
  }
}

export interface ProgressState {
  done: number;
  /** Begun, done or not: the ones under way are begun - done. */
  begun?: number;
  /** Done before this run started (not counted in the rate). */
  from: number;
  total?: number;
  failed: number;
  /** Since this run started. */
  ms: number;
}

/** What the bar and the lines show: counts, rate, and the ETA only once it is worth reading. */
export function progressFields(p: ProgressState, u: Unit, failedUnit = u): { gauge: string; count: string; rate: string; eta: string; failures: string } {
  const show = (n: number) => (n * u.scale).toFixed(u.digits);
  const rate = p.ms > 0 ? (p.done - p.from) / (p.ms / 1000) : 0;
  const meaningful = p.total !== undefined && rate > 0 && p.ms >= ETA_AFTER_MS && p.done - p.from >= ETA_AFTER_FRACTION * p.total;
  const underWay = Math.max(0, (p.begun ?? 0) - p.done);
  return {
    gauge: gauge(p.done, p.done + underWay, p.total),
    count: (p.total === undefined ? `${show(p.done)} ${u.name}` : `${show(p.done)}/${show(p.total)} ${u.name}`) + (underWay ? `, ${show(underWay)} under way` : ''),
    rate: `${(rate * u.scale).toFixed(1)} ${u.name}/s`,
    eta: meaningful ? `ETA ${duration(Math.max(0, (p.total! - p.done) / rate))}` : '',
    failures: !p.failed ? '' : failedUnit === u ? ` | ${p.failed} failed` : ` | ${p.failed} failed ${p.failed === 1 ? failedUnit.one ?? failedUnit.name : failedUnit.name}`,
  };
}

const onTerminal = () => process.stderr.isTTY && process.env.TERM !== 'dumb';

/**
 * Progress for work that reports no steps (vgg pack: one native call compiles every shape and
 * arranges the weights): what is being done and the time so far, redrawn every second on a
 * terminal, else a line every LINE_MS. No bar and no ETA: nothing says how far along it is.
 */
export class Elapsed {
  readonly started = performance.now();
  #bar: SingleBar | undefined;
  #timer: NodeJS.Timeout | undefined;

  /** `what` follows the label: 'vgg pack: packing 2 shapes'. */
  constructor(label: string, what: string, quiet = false) {
    if (quiet) return;
    const line = () => `${label}: ${what}, ${duration(this.seconds)}`;
    if (onTerminal()) {
      this.#bar = new SingleBar({ format: '{line}', stream: process.stderr, hideCursor: true });
      this.#bar.start(0, 0, { line: line() });
    }
    this.#timer = setInterval(() => {
      if (this.#bar) this.#bar.update(0, { line: line() });
      else process.stderr.write(`${line()}\n`);
    }, this.#bar ? 1000 : LINE_MS).unref();
  }

  stop(): void {
    clearInterval(this.#timer);
    this.#bar?.stop();
    this.#bar = undefined;
  }

  get seconds(): number {
    return (performance.now() - this.started) / 1000;
  }
}

const GAUGE_WIDTH = 30;

/** '#' done, '+' begun and not done, '-' the rest; all '-' with no total. */
function gauge(done: number, begun: number, total: number | undefined): string {
  const cells = (n: number) => (total ? Math.min(GAUGE_WIDTH, Math.floor((GAUGE_WIDTH * n) / total)) : 0);
  const [d, b] = [cells(done), Math.max(cells(done), cells(begun))];
  return '#'.repeat(d) + '+'.repeat(b - d) + '-'.repeat(GAUGE_WIDTH - b);
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
