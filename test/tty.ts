// Preloaded (node -r) by tests that read what a command draws on a terminal: stderr, a pipe to the
// test, says it is one, so the progress bar is drawn (its frames separated by cursor moves).
Object.assign(process.stderr, { isTTY: true, columns: 200 });
