// A TCP front on a free loopback port, standing in for a load balancer or a Service in
// front of socket nodes: each new connection goes to the port `route()` returns.

import { createServer, connect } from 'node:net';

/**
 * Start one. Returns {url, log, cut, close}: `log` records {to, at} per connection,
 * `cut()` drops every open connection (clients reconnect through the front), `close()`
 * drops them and stops listening (resolves once closed).
 */
export async function tcpProxy(route) {
  const log = [];
  const open = new Set();
  const server = createServer((down) => {
    const to = route();
    log.push({ to, at: Date.now() });
    const up = connect(to, '127.0.0.1');
    open.add(down);
    open.add(up);
    const drop = () => {
      down.destroy();
      up.destroy();
      open.delete(down);
      open.delete(up);
    };
    down.on('error', drop).on('close', drop);
    up.on('error', drop).on('close', drop);
    down.pipe(up);
    up.pipe(down);
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address();
  const cut = () => {
    for (const s of open) s.destroy();
  };
  return {
    url: `http://127.0.0.1:${port}`,
    log,
    cut,
    close: () =>
      new Promise((r) => {
        cut();
        server.close(() => r());
      }),
  };
}
