// An app of its own with vggnetPlugin under /vgg, run as a child process by the serve tests:
// `node -r dist/test/modules.js dist/test/fastify-app.js fastify4` mounts it in the fastify
// package named (fastify 5, or fastify 4 installed as fastify4). Prints "VERSION URL", then
// serves until SIGTERM.
import { loadModel } from '../lib/model';
import { vggnetPlugin } from '../lib/serve';
import { fixture } from './helpers';

async function main(fastifyPackage: string): Promise<void> {
  const Fastify = require(fastifyPackage) as typeof import('fastify').default;
  const model = await loadModel(fixture('D.weights.safetensors'), { threads: 1 });
  const app = Fastify();
  app.post('/echo', async (request) => ({ got: request.body }));
  await app.register(vggnetPlugin, { model, prefix: '/vgg', maxBatch: 4 });
  const url = await app.listen({ port: 0, host: '127.0.0.1' });
  process.stdout.write(`${app.version} ${url}\n`);
  process.once('SIGTERM', () => {
    void app.close().then(() => model.dispose());
  });
}

main(process.argv[2]).catch((e: unknown) => {
  process.stderr.write(`${(e as Error).stack}\n`);
  process.exitCode = 1;
});
