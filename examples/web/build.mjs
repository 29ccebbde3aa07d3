// `npm run build`, the one command: installs what the example needs (its locked
// dependencies, and the SDK's in clients/js), builds the SDK when its sources are newer
// than its bundle, then bundles the app into dist/ (index.html, style.css, app.js).

import { execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readdirSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = dirname(fileURLToPath(import.meta.url));
const SDK = join(HERE, '../../clients/js');
const npm = (cwd, ...args) => execFileSync('npm', args, { cwd, stdio: 'inherit' });

/** Newest modification time of any file under `dir`. */
function newest(dir) {
  let t = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    t = Math.max(t, e.isDirectory() ? newest(p) : statSync(p).mtimeMs);
  }
  return t;
}

if (!existsSync(join(SDK, 'node_modules/.package-lock.json'))) npm(SDK, 'ci', '--no-audit', '--no-fund');
const bundle = join(SDK, 'dist/switchboard.browser.js');
if (!existsSync(bundle) || statSync(bundle).mtimeMs < newest(join(SDK, 'src'))) npm(SDK, 'run', 'build');
if (!existsSync(join(HERE, 'node_modules/.package-lock.json'))) npm(HERE, 'ci', '--no-audit', '--no-fund');

// esbuild is one of the dependencies just installed.
const { build } = await import('esbuild');
const out = join(HERE, 'dist');
mkdirSync(out, { recursive: true });
await build({
  entryPoints: [join(HERE, 'src/app.js')],
  bundle: true,
  format: 'esm',
  platform: 'browser',
  target: ['es2022'],
  sourcemap: true,
  outfile: join(out, 'app.js'),
  logLevel: 'info',
});
for (const f of ['index.html', 'style.css']) copyFileSync(join(HERE, 'src', f), join(out, f));
console.log(`example built into ${out}`);
