import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';

/**
 * A redis-server for tests: REDIS_URL when set (then restart() is not possible and the tests
 * that need it skip), otherwise one started here on a free loopback port, with append-only
 * persistence (fsync always) in a temporary folder, so that a restart keeps every write.
 */
export class TestRedis {
  url = '';
  port = 0;
  readonly external: boolean;
  #dir = '';
  #proc: ChildProcess | undefined;

  constructor() {
    this.external = !!process.env.REDIS_URL;
    if (this.external) this.url = process.env.REDIS_URL!;
  }

  async start(): Promise<void> {
    if (this.external) return;
    if (!this.port) {
      this.port = await freePort();
      this.#dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vgg-redis-'));
      this.url = `redis://127.0.0.1:${this.port}`;
    }
    const bin = process.env.REDIS_SERVER ?? 'redis-server';
    const proc = spawn(bin, ['--port', String(this.port), '--bind', '127.0.0.1', '--dir', this.#dir, '--appendonly', 'yes',
      '--appendfsync', 'always', '--save', '', '--daemonize', 'no', '--maxmemory-policy', 'noeviction'], { stdio: ['ignore', 'pipe', 'pipe'] });
    this.#proc = proc;
    let log = '';
    let failed: NodeJS.ErrnoException | undefined;
    proc.once('error', (e) => { failed = e; });
    proc.stdout!.on('data', (d) => { log += d; });
    proc.stderr!.on('data', (d) => { log += d; });
    const deadline = Date.now() + 10000;
    while (!/Ready to accept connections/.test(log)) {
      if (failed?.code === 'ENOENT') throw missing(bin);
      if (failed || proc.exitCode !== null || Date.now() > deadline) throw new Error(`${bin} did not start: ${failed?.message ?? log}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  /** Stops the server (SIGTERM: it finishes its writes); start() brings it back on the same port and data. */
  async stop(): Promise<void> {
    const proc = this.#proc;
    if (!proc || proc.exitCode !== null) return;
    const exited = new Promise((r) => proc.once('exit', r));
    proc.kill('SIGTERM');
    await exited;
    this.#proc = undefined;
  }

  async close(): Promise<void> {
    await this.stop();
    if (this.#dir) fs.rmSync(this.#dir, { recursive: true, force: true });
  }
}

/** A machine without redis-server: one line that says what to install, no stack trace to read. */
function missing(bin: string): Error {
  const e = new Error(`${bin} not found: the job tests need a Redis server (apt-get install redis-server, or REDIS_URL=redis://host:port for one already running)`);
  e.stack = '';
  return e;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}
