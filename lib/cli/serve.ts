import { Command, InvalidArgumentError, Option } from 'commander';
import { defaultWeights } from '../weights/default-weights';
import { loadModel } from '../model';
import { PRESETS, type Preset } from '../images/preprocess';
import { createServer } from '../serve/server';
import { VggError, checkPeers } from '../errors';
import { type EngineFlags, engineOptions, engineSettings, positiveInt, positiveIntList, reportError } from './common';

interface ServeFlags extends EngineFlags {
  weights?: string;
  port: number;
  host: string;
  maxBatch: number;
  maxDelayMs: number;
  maxQueue: number;
  maxLatencyMs?: number;
  timeoutMs: number;
  bodyLimitMb: number;
  maxResponseMb: number;
  clientTimeoutMs: number;
  maxConnections: number;
  preset?: Preset;
  warmup?: number[];
}

function port(value: string): number {
  const n = Number(value);
  if (!/^\d+$/.test(value) || n > 65535) throw new InvalidArgumentError('Expected a port number from 0 to 65535 (0: any free port).');
  return n;
}

function nonNegativeInt(value: string): number {
  const n = Number(value);
  if (!/^\d+$/.test(value) || !Number.isSafeInteger(n)) throw new InvalidArgumentError('Expected an integer ≥ 0.');
  return n;
}

export function registerServe(program: Command): void {
  const command = program.command('serve')
    .description('serve features and classes over HTTP, batching concurrent requests')
    .option('--weights <file>', 'weights (.safetensors); default: VGG16 with seeded random weights')
    .option('--port <n>', 'TCP port (0: any free one)', port, 8080)
    .option('--host <addr>', 'address to listen on', '127.0.0.1')
    .option('--max-batch <n>', 'most images in one engine batch', positiveInt, 32)
    .option('--max-delay-ms <ms>', 'how long an image that finds the engine idle waits for more to batch with (those queued behind a running batch go as it ends)', nonNegativeInt, 5)
    .option('--max-queue <n>', 'most images admitted and not yet running; past it requests get 503', positiveInt, 256)
    .option('--max-latency-ms <ms>', 'admission control: refuse at once (503 with Retry-After) a request whose answer is estimated to take longer, from the queue ahead and the measured run times (default: none, every request waits its turn)', positiveInt)
    .option('--timeout-ms <ms>', 'per-request limit; past it 504', positiveInt, 30000)
    .option('--body-limit-mb <mb>', 'largest request body in MiB; past it 413', positiveInt, 20)
    .option('--max-response-mb <mb>', 'largest answer in MiB (JSON counted at 24 bytes a float); past it 400 before the run', positiveInt, 64)
    .option('--client-timeout-ms <ms>', 'a client must send its whole request within this; idle sockets close after it', positiveInt, 10000)
    .option('--max-connections <n>', 'most open sockets; more are closed at once', positiveInt, 512)
    .option('--warmup <n,...>', 'batch sizes run once before /readyz says ready (default: every size the batcher pads to, 1, 2, 4, ... --max-batch)', positiveIntList)
    .addOption(new Option('--preset <name>', "the preprocessing the weights were trained with (default: the weights' own, torchvision for most)").choices(PRESETS));
  engineOptions(command).action(serve);
}

async function serve(flags: ServeFlags): Promise<void> {
  checkPeers('serve'); // before the model loads
  const model = await loadModel(flags.weights ?? await defaultWeights(), engineSettings(flags));
  const app = createServer(model, {
    maxBatch: flags.maxBatch,
    maxDelayMs: flags.maxDelayMs,
    maxQueue: flags.maxQueue,
    maxLatencyMs: flags.maxLatencyMs,
    timeoutMs: flags.timeoutMs,
    bodyLimit: flags.bodyLimitMb * 1024 * 1024,
    maxResponseBytes: flags.maxResponseMb * 1024 * 1024,
    clientTimeoutMs: flags.clientTimeoutMs,
    maxConnections: flags.maxConnections,
    preset: flags.preset,
    warmup: flags.warmup,
  });
  let stopping: Promise<void> | undefined;
  // SIGTERM / SIGINT: stop accepting, finish what is in flight, free the model, exit 0.
  const stop = (signal: string) => {
    stopping ??= (async () => {
      process.stderr.write(`vgg serve: ${signal}: finishing requests in flight\n`);
      try {
        await app.close();
        await model.dispose();
        process.stderr.write('vgg serve: stopped\n');
      } catch (e) {
        reportError(e);
      }
    })();
  };
  process.once('SIGTERM', () => stop('SIGTERM'));
  process.once('SIGINT', () => stop('SIGINT'));
  try {
    const address = await app.listen({ port: flags.port, host: flags.host });
    process.stderr.write(`vgg serve: listening on ${address}\n`);
  } catch (e) {
    await model.dispose();
    throw new VggError('E_IO', `cannot listen on ${flags.host}:${flags.port}: ${(e as Error).message}`, { cause: e });
  }
  app.vggnet.warm().then(
    () => process.stderr.write('vgg serve: ready\n'),
    (e: unknown) => reportError(e),
  );
}
