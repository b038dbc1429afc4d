// Module resolution as another app would see it, for a child process: preloaded with
// `node -r dist/test/modules.js`, VGGNET_TEST_MODULES="a=b,c=" resolves package a as package b
// (fastify 4's @fastify/multipart, installed here under another name) and makes c missing
// (an app that did not install an optional peer dependency).
import Module from 'node:module';

type Resolve = (request: string, ...rest: unknown[]) => string;

/** The child-process environment for `map`: a package name to the one it resolves as, or null for missing. */
export function moduleEnv(map: Record<string, string | null>): Record<string, string> {
  return { VGGNET_TEST_MODULES: Object.entries(map).map(([from, to]) => `${from}=${to ?? ''}`).join(',') };
}

const spec = process.env.VGGNET_TEST_MODULES;
if (spec) {
  const map = new Map(spec.split(',').map((pair) => pair.split('=') as [string, string]));
  const M = Module as unknown as { _resolveFilename: Resolve };
  const resolve = M._resolveFilename;
  M._resolveFilename = function (this: unknown, request: string, ...rest: unknown[]) {
    const to = map.get(request);
    if (to === '') throw Object.assign(new Error(`Cannot find module '${request}'`), { code: 'MODULE_NOT_FOUND' });
    return resolve.call(this, to ?? request, ...rest);
  };
}
