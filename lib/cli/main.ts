#!/usr/bin/env node
import { CommanderError } from 'commander';
import { reportError } from './common';
import { buildProgram } from './program';
import { endQuietlyOnClosedStdout } from './stdout';

endQuietlyOnClosedStdout();
buildProgram().parseAsync(process.argv).catch((e: unknown) => {
  if (e instanceof CommanderError && e.code === 'commander.help') {
    // `vgg` alone: commander has already printed the help to stderr.
    process.exitCode = e.exitCode;
  } else if (e instanceof CommanderError && e.exitCode === 0) {
    return; // --help, --version
  } else {
    reportError(e);
  }
});
