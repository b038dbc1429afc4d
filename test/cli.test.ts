import { strict as assert } from 'node:assert';
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { loadModel } from '../lib/model';
import { readF32, readSafetensorsFile, type SafetensorsFile } from '../lib/weights/safetensors';
import { fixture, relError } from './helpers';

const main = path.resolve(__dirname, '../lib/cli/main.js');

function vgg(...args: string[]) {
  const r = spawnSync(process.execPath, [main, ...args], { encoding: 'utf8', env: { ...process.env, VGG_DEBUG: '' } });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Runs vgg with its stdout read by nobody: the pipe is closed before vgg writes, as `| head` does after its lines. */
function vggClosedStdout(...args: string[]): Promise<{ status: number | null; stderr: string }> {
  const proc = spawn(process.execPath, [main, ...args], { env: { ...process.env, VGG_DEBUG: '' }, stdio: ['ignore', 'pipe', 'pipe'] });
  proc.stdout!.destroy();
  let stderr = '';
  proc.stderr!.on('data', (d) => { stderr += d; });
  return new Promise((resolve) => proc.on('close', (status) => resolve({ status, stderr })));
}

function tensor(file: SafetensorsFile, name: string): { data: Float32Array; shape: number[] } {
  const entry = file.tensors.get(name);
  assert.ok(entry, `${file.source} has no tensor ${name}`);
  return { data: readF32(file, entry), shape: entry.shape };
}

/** Max abs error over max abs value: the project's fp32 bar against the float64 reference (README's precisions table). */
function assertClose(actual: { data: Float32Array; shape: number[] }, expected: { data: Float32Array; shape: number[] }, what: string) {
  assert.deepEqual(actual.shape, expected.shape, `${what}: shape`);
  const err = relError(actual.data, expected.data);
  assert.ok(err <= 1e-4, `${what}: relative error ${err}`);
}

/** A failure is one stderr line `vgg: CODE: ...` and exit status 1. */
function assertFails(r: ReturnType<typeof vgg>, code: string) {
  assert.equal(r.status, 1, r.stderr);
  const lines = r.stderr.split('\n').filter((l) => l !== '');
  assert.equal(lines.length, 1, r.stderr);
  assert.ok(lines[0].startsWith(`vgg: ${code}: `), r.stderr);
}

describe('vgg CLI', function () {
  let tmp: string;
  before(() => { tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'vgg-cli-')); });
  after(() => fs.rmSync(tmp, { recursive: true, force: true }));

  describe('run', () => {
    it('writes fc7 and prob matching PyTorch at 224x224', () => {
      const out = path.join(tmp, 'fixed.safetensors');
      const r = vgg('run', '--weights', fixture('D.weights.safetensors'), '--input', fixture('input-224.safetensors'),
        '--outputs', 'fc7,prob', '--threads', '2', '--out', out);
      assert.equal(r.status, 0, r.stderr);
      assert.match(r.stderr, /^vgg run: wrote fc7 \[2, 256\], prob \[2, 10\] to .* in \d+ ms\n$/);
      const got = readSafetensorsFile(out);
      assert.deepEqual([...got.tensors.keys()], ['fc7', 'prob']);
      const io = readSafetensorsFile(fixture('D.io.safetensors'));
      assertClose(tensor(got, 'fc7'), tensor(io, '224.fc7'), 'fc7');
      assertClose(tensor(got, 'prob'), tensor(io, '224.prob'), 'prob');
    });

    it('averages the dense head over flips at 256x320', () => {
      const out = path.join(tmp, 'dense.safetensors');
      const r = vgg('run', '--weights', fixture('D.weights.safetensors'), '--input', fixture('input-256x320.safetensors'),
        '--outputs', 'prob', '--head', 'dense', '--flip', '--out', out);
      assert.equal(r.status, 0, r.stderr);
      const io = readSafetensorsFile(fixture('D.io.safetensors'));
      assertClose(tensor(readSafetensorsFile(out), 'prob'), tensor(io, '256x320.dense.flip.prob'), 'dense flip prob');
    });

    const base = () => ['run', '--weights', fixture('D.weights.safetensors'), '--input', fixture('input-224.safetensors'), '--out', path.join(tmp, 'x.safetensors')];

    it('says E_IO for a missing weights file', () => {
      const args = base();
      args[2] = path.join(tmp, 'missing.safetensors');
      assertFails(vgg(...args, '--outputs', 'prob'), 'E_IO');
    });

    it('says E_ARG for an unknown blob, naming it', () => {
      const r = vgg(...base(), '--outputs', 'fc7,fc9');
      assertFails(r, 'E_ARG');
      assert.match(r.stderr, /fc9/);
    });

    it('says E_ARG for a missing --key, listing the keys present', () => {
      const r = vgg(...base(), '--outputs', 'prob', '--key', 'image');
      assertFails(r, 'E_ARG');
      assert.match(r.stderr, /input-224\.safetensors has no tensor "image".*it has input/);
    });

    it('checks --threads and --head', () => {
      for (const bad of ['0', '-1', '1.5', 'many']) assert.match(vgg(...base(), '--outputs', 'prob', '--threads', bad).stderr, /^vgg: E_ARG: .*--threads/);
      assertFails(vgg(...base(), '--outputs', 'prob', '--head', 'sparse'), 'E_ARG');
    });

    it('turns usage errors into E_ARG', () => {
      assertFails(vgg(...base(), '--outputs', 'prob', '--bogus'), 'E_ARG');
      assertFails(vgg(...base()), 'E_ARG'); // --outputs is required
      assertFails(vgg('frobnicate'), 'E_ARG');
    });
  });

  describe('info', () => {
    it('gives torchvision parameter counts and MACs for the presets', () => {
      const vgg16 = JSON.parse(vgg('info', '--arch', 'vgg16', '--json').stdout);
      assert.equal(vgg16.params, 138357544);
      assert.ok(Math.abs(vgg16.macs / 15.47e9 - 1) < 0.005, `macs ${vgg16.macs}`);
      assert.equal(vgg16.arch, 'D');
      assert.equal(vgg16.batchNorm, false);
      assert.equal(vgg16.layers.find((l: { name: string }) => l.name === 'conv5_3').params, 2359808);
      const counts: Record<string, number> = { vgg11: 132863336, vgg13: 133047848, vgg19: 143667240 };
      for (const [name, params] of Object.entries(counts)) {
        assert.equal(JSON.parse(vgg('info', '--arch', name, '--json').stdout).params, params, name);
      }
    });

    it('prints the text summary and the layer table in stages', () => {
      const r = vgg('info', '--arch', 'vgg16');
      assert.equal(r.status, 0, r.stderr);
      assert.match(r.stdout, /138,357,544/);
      assert.match(r.stdout, /15\.47 GMAC at 224x224/);
      assert.match(r.stdout, /pool1 .*\n\nconv2_1/);
      assert.match(vgg('info', '--arch', 'D', '--size', '256x320').stdout, /conv5_3 .* 512x16x20 /);
    });

    it('describes a weights file without running it', () => {
      const r = vgg('info', '--weights', fixture('D.weights.safetensors'));
      assert.equal(r.status, 0, r.stderr);
      assert.match(r.stdout, /conv5_3/);
      assert.match(r.stdout, /pool5/);
      const json = JSON.parse(vgg('info', '--weights', fixture('D-timm.weights.safetensors'), '--json').stdout);
      assert.equal(json.naming, 'timm');
      assert.equal(json.fcHidden, 256);
    });

    it('needs exactly one of --weights and --arch', () => {
      assertFails(vgg('info'), 'E_ARG');
      assertFails(vgg('info', '--arch', 'D', '--weights', fixture('D.weights.safetensors')), 'E_ARG');
      assertFails(vgg('info', '--arch', 'F'), 'E_ARG');
    });
  });

  describe('convert', () => {
    it('turns D.pth into safetensors that run like the original', async () => {
      const out = path.join(tmp, 'D.converted.safetensors');
      const r = vgg('convert', fixture('D.pth'), out);
      assert.equal(r.status, 0, r.stderr);
      assert.match(r.stderr, /VGG D .*32 tensors/);
      assert.equal(readSafetensorsFile(out).metadata['vgg.arch'], 'D');

      const input = tensor(readSafetensorsFile(fixture('input-224.safetensors')), 'input');
      const fc8 = async (file: string) => {
        const model = await loadModel(file, { threads: 2 });
        try {
          return (await model.run(input, { outputs: ['fc8'] })).fc8;
        } finally {
          await model.dispose();
        }
      };
      assert.deepEqual(await fc8(out), await fc8(fixture('D.weights.safetensors')));
    });

    it('says E_WEIGHTS_FORMAT for a file that is not a checkpoint', () => {
      assertFails(vgg('convert', fixture('D.weights.safetensors'), path.join(tmp, 'y.safetensors')), 'E_WEIGHTS_FORMAT');
    });
  });

  it('lists the commands and prints the version', () => {
    const help = vgg('--help');
    assert.equal(help.status, 0);
    for (const command of ['run', 'info', 'convert']) assert.match(help.stdout, new RegExp(`^  ${command} `, 'm'));
    const pkg = JSON.parse(fs.readFileSync(path.resolve(__dirname, '../../package.json'), 'utf8'));
    assert.equal(vgg('--version').stdout.trim(), pkg.version);
  });

  describe('a closed stdout', () => {
    const coffee = fixture('images/coffee.png');
    // Every command that prints on stdout, and every help.
    const printing = () => [
      ['--help'], ['help', 'extract'], ...['run', 'info', 'convert', 'calibrate', 'pack', 'fetch', 'classify', 'extract', 'eval', 'serve', 'job',
        'job submit', 'job worker', 'job status', 'job wait', 'job merge'].map((c) => [...c.split(' '), '--help']),
      ['--version'], ['info', '--arch', 'vgg16'], ['info', '--arch', 'vgg16', '--json'],
      ['classify', ...Array(6).fill(coffee), '--weights', fixture('D.weights.safetensors'), '--threads', '2'],
      ['classify', ...Array(6).fill(coffee), '--weights', fixture('D.weights.safetensors'), '--threads', '2', '--json'],
      ['extract', coffee, '--weights', fixture('D.weights.safetensors'), '--threads', '2', '--out', path.join(tmp, 'epipe.jsonl'), '--json'],
      ['eval', labeled(), '--weights', fixture('D.weights.safetensors'), '--threads', '2'],
      ['calibrate', '--weights', fixture('D.weights.safetensors'), '--images', coffee, '--threads', '2', '--out', path.join(tmp, 'epipe.calib.json'), '--json'],
      ['pack', '--weights', fixture('D.weights.safetensors'), '--batch', '1', '--threads', '2', '--out', path.join(tmp, 'epipe.packed'), '--json'],
    ];
    /** Two class folders of one image each. */
    const labeled = () => {
      const root = path.join(tmp, 'labeled');
      for (const c of ['0', '1']) {
        fs.mkdirSync(path.join(root, c), { recursive: true });
        fs.copyFileSync(coffee, path.join(root, c, 'coffee.png'));
      }
      return root;
    };

    it('ends each command quietly with status 0, as ls | head does', async function () {
      this.timeout(120000);
      for (const args of printing()) {
        const r = await vggClosedStdout(...args);
        assert.equal(r.status, 0, `vgg ${args.join(' ')}: ${r.stderr}`);
        assert.doesNotMatch(r.stderr, /EPIPE|Error|at /, `vgg ${args.join(' ')}`);
      }
    });
  });
});
