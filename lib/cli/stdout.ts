/**
 * A reader that stops early (`vgg classify ... | head`) closes the pipe under us; the next write
 * to stdout then fails with EPIPE, asynchronously, as an 'error' event that would otherwise crash
 * with a stack trace. Like `ls | head`, the command ends quietly with status 0: nobody is left to
 * read what it would print, and the reader got what it asked for.
 */
export function endQuietlyOnClosedStdout(): void {
  for (const stream of [process.stdout, process.stderr]) {
    stream.on('error', (e: NodeJS.ErrnoException) => {
      if (e.code === 'EPIPE') {
        // stderr closed as well (`2>&1 | head`): nothing can be said either, so the same ending.
        process.exit(0);
      }
      throw e;
    });
  }
}
