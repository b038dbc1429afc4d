// What the fault tests share: the CLI in a child process, small seeded images, a small tmpfs.
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import sharp from 'sharp';
import { prng, tmpDir } from '../helpers';

export const MAIN = path.resolve(__dirname, '../../lib/cli/main.js');

export function vgg(args: string[], options: { timeout?: number } = {}) {
  return spawnSync(process.execPath, [MAIN, ...args], { encoding: 'utf8', env: { ...process.env, VGG_DEBUG: '' }, timeout: options.timeout ?? 60_000 });
}

/** The CLI without blocking the test's event loop (for a server the test talks to, or a FIFO it feeds). */
export function vggAsync(args: string[]) {
  const child = spawn(process.execPath, [MAIN, ...args], { env: { ...process.env, VGG_DEBUG: '' } });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => { stderr += d; });
  const done = new Promise<{ status: number | null; signal: NodeJS.Signals | null; stderr: string }>((resolve) => {
    child.once('close', (status, signal) => resolve({ status, signal, stderr }));
  });
  return { child, done, stderr: () => stderr };
}

/** `count` seeded 40x40 PNGs in a fresh folder. */
export async function images(count: number): Promise<string> {
  const dir = path.join(tmpDir(), 'images');
  fs.mkdirSync(dir);
  for (let i = 0; i < count; i++) {
    const rand = prng(i + 1);
    const pixels = Buffer.from(Array.from({ length: 40 * 40 * 3 }, () => Math.floor(rand() * 256)));
    await sharp(pixels, { raw: { width: 40, height: 40, channels: 3 } }).png().toFile(path.join(dir, `img-${String(i).padStart(3, '0')}.png`));
  }
  return dir;
}

/**
 * A tmpfs of `size` (mount's syntax: 1m) mounted on a fresh folder, or the reason it cannot be
 * (not root, no mount namespace): the caller skips with it.
 */
export function tmpfs(size: string): { dir: string; resize(size: string): void; unmount(): void } | string {
  const dir = path.join(tmpDir(), 'tmpfs');
  fs.mkdirSync(dir);
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', dir], { stdio: 'pipe' });
  } catch (e) {
    return `cannot mount a tmpfs here (${String((e as { stderr?: Buffer }).stderr ?? (e as Error).message).trim()}); the disk-full tests need root`;
  }
  return {
    dir,
    resize: (to) => { execFileSync('mount', ['-o', `remount,size=${to}`, dir]); },
    unmount: () => { execFileSync('umount', [dir]); },
  };
}
