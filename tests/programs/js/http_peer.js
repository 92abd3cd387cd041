// An HTTP server and client on Node.js's own http module (libuv underneath: non-blocking connect,
// accept4, epoll), for tests/integration/test_real_hybrid.py.
//
//   node http_peer.js server PORT        echoes each POST body; prints "listening", then at
//                                        SIGTERM "served N"
//   node http_peer.js client PORT N MODE N requests (4 at a time), MODE keepalive or close;
//                                        prints {"ok": .., "bad": .., "sockets": ..} as JSON
//
// Each reply carries the addresses the server's socket reports (x-peer, x-local); the client
// checks them against its own socket's, and every body byte for byte.
'use strict';
const http = require('http');
const crypto = require('crypto');

const [role, portText, countText, mode] = process.argv.slice(2);
const port = Number(portText);

function serve() {
  let served = 0;
  const server = http.createServer((req, res) => {
    const parts = [];
    req.on('data', (c) => parts.push(c));
    req.on('end', () => {
      served++;
      const s = req.socket;
      res.setHeader('x-peer', `${s.remoteAddress}:${s.remotePort}`);
      res.setHeader('x-local', `${s.localAddress}:${s.localPort}`);
      res.end(Buffer.concat(parts));
    });
  });
  server.listen(port, '127.0.0.1', () => console.log('listening'));
  process.on('SIGTERM', () => {
    console.log(`served ${served}`);
    process.exit(0);
  });
}

function request(agent, i, close, sockets, result) {
  // Sizes from empty to 1 MiB, random bytes.
  const body = crypto.randomBytes(i === 0 ? 0 : (i * 104729) % (1 << 20));
  return new Promise((resolve) => {
    const headers = close ? {connection: 'close'} : {};
    const req = http.request(
        {host: '127.0.0.1', port, method: 'POST', path: `/${i}`, agent, headers}, (res) => {
          const s = req.socket;
          sockets.add(`${s.localAddress}:${s.localPort}`);
          const parts = [];
          res.on('data', (c) => parts.push(c));
          res.on('end', () => {
            const same = Buffer.concat(parts).equals(body) &&
                res.headers['x-peer'] === `${s.localAddress}:${s.localPort}` &&
                res.headers['x-local'] === `${s.remoteAddress}:${s.remotePort}`;
            if (same) {
              result.ok++;
            } else {
              result.bad++;
              console.error(`request ${i}: ${res.headers['x-peer']} ${res.headers['x-local']}`);
            }
            resolve();
          });
        });
    req.on('error', (e) => {
      result.bad++;
      console.error(`request ${i}: ${e.code}`);
      resolve();
    });
    req.end(body);
  });
}

async function client() {
  const close = mode === 'close';
  const agent = new http.Agent({keepAlive: !close, maxSockets: 4});
  const result = {ok: 0, bad: 0, sockets: 0};
  const sockets = new Set();
  const all = [];
  for (let i = 0; i < Number(countText); i++) all.push(request(agent, i, close, sockets, result));
  await Promise.all(all);
  agent.destroy();
  result.sockets = sockets.size;
  console.log(JSON.stringify(result));
  process.exitCode = result.bad === 0 ? 0 : 1;
}

if (role === 'server') {
  serve();
} else {
  client();
}
