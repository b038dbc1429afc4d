import * as fs from 'node:fs';
import * as path from 'node:path';
import { Command } from 'commander';
import { applyHelpConventions } from './help';
import { registerCalibrate } from './calibrate';
import { registerClassify } from './classify';
import { registerConvert } from './convert';
import { registerEval } from './eval';
import { registerExtract } from './extract';
import { registerFetch } from './fetch';
import { registerInfo } from './info';
import { registerJob } from './job';
import { registerPack } from './pack';
import { registerRun } from './run';
import { registerServe } from './serve';
import { registerTrain } from './train';

// package.json sits three levels above this file once compiled to dist/lib/cli/.
const { version } = JSON.parse(fs.readFileSync(path.resolve(__dirname, '../../../package.json'), 'utf8')) as { version: string };

/** The `vgg` command with every subcommand registered; main.ts runs it, docs.ts prints its help. */
export function buildProgram(): Command {
  const program = new Command('vgg')
    .description('VGG networks on oneDNN: run, inspect and convert weights')
    .version(version)
    // Commander would print its own "error: ..." and exit; reportError prints ours instead.
    // Set before the commands are added, which inherit both settings.
    .exitOverride()
    .configureOutput({ outputError: () => {} });

  registerRun(program);
  registerInfo(program);
  registerConvert(program);
  registerCalibrate(program);
  registerPack(program);
  registerFetch(program);
  registerClassify(program);
  registerExtract(program);
  registerEval(program);
  registerTrain(program);
  registerServe(program);
  registerJob(program);
  applyHelpConventions(program);
  return program;
}
