// Bundle the SDK for browsers (one ES module with socket.io-client inside) after tsc
// has written dist/ (Node and bundlers use dist/index.js and its .d.ts files).

import { build } from 'esbuild';

await build({
  entryPoints: ['src/index.ts'],
  bundle: true,
  format: 'esm',
  platform: 'browser',
  target: ['es2020'],
  sourcemap: true,
  minify: true,
  outfile: 'dist/switchboard.browser.js',
  logLevel: 'info',
});
