import { VggError } from './errors';

/** The fastify versions vggnetPlugin mounts in (4 and 5 are tested); package.json's peer range says the same. */
export const FASTIFY_VERSIONS = '^4.26.0 || ^5.0.0';

/**
 * The optional peer dependencies, by the part of vggnet that needs them, each with what to
 * install (inside package.json's peer range): an app that only extracts features installs
 * none of them, and vggnet loads them on first use. They are the app's own, so that vggnetPlugin
 * registers in the app's fastify with the multipart plugin of the same fastify major.
 */
const PEERS: Record<PeerFeature, { what: string; packages: Record<string, () => string> }> = {
  serve: {
    what: 'the HTTP service (vgg serve, createServer, vggnetPlugin)',
    packages: {
      'fastify': () => 'fastify@5',
      '@fastify/multipart': () => (fastifyMajor() === 4 ? '@fastify/multipart@8' : '@fastify/multipart@10'),
      'prom-client': () => 'prom-client@15',
    },
  },
  jobs: {
    what: 'jobs on Redis (vgg job, submitJob, runWorker, jobStatus, mergeJob)',
    packages: { bullmq: () => 'bullmq@5' },
  },
};

export type PeerFeature = 'serve' | 'jobs';

/** Throws E_MISSING_DEPENDENCY naming every package of `feature` the app lacks, with the command that adds them. */
export function checkPeers(feature: PeerFeature): void {
  const { what, packages } = PEERS[feature];
  const missing = Object.keys(packages).filter((name) => !resolvable(name));
  if (missing.length === 0) return;
  const install = missing.map((name) => packages[name]()).join(' ');
  throw new VggError('E_MISSING_DEPENDENCY', `${what} needs ${missing.join(' and ')} (optional peer dependencies of vggnet): npm install ${install}`);
}

function resolvable(name: string): boolean {
  try {
    require.resolve(name);
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'MODULE_NOT_FOUND') return false;
    throw e;
  }
}

/** The major version of the app's fastify; undefined when it has none (or hides its package.json). */
function fastifyMajor(): number | undefined {
  try {
    return Number((require('fastify/package.json') as { version: string }).version.split('.')[0]);
  } catch {
    return undefined;
  }
}
