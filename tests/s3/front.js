#!/usr/bin/env node
// The S3 server of the end-to-end tests: @20minutes/s3rver (it checks SigV4 signatures
// of signed requests) on a private loopback port, behind this front, which adds what
// s3rver lacks and S3 has:
//   - anonymous requests (no Authorization header, no presigned query) get 403
//     AccessDenied; s3rver would serve them;
//   - conditional PutObject: If-None-Match: * on an existing object and If-Match with
//     another ETag get 412 PreconditionFailed, If-Match on a missing object 404
//     NoSuchKey; s3rver ignores both headers on PUT;
//   - every request on one object runs alone (a queue per object), so the check and the
//     write are atomic, as S3's conditional writes are;
//   - it counts requests by method and status: GET /__front/stats (POST
//     /__front/reset clears). These two are the only unsigned paths and are not counted;
//   - with --delay-ms N, every signed request waits N ms before it is handled, as a store
//     far away would (requests still overlap: the wait is outside the per-object queue).
// s3rver's GET already answers If-None-Match with 304 (lib/controllers/object.js), after
// checking the signature; the front passes reads through.
//
// A limitation: the front checks a PUT's precondition before s3rver checks its signature,
// so a PUT that is both wrongly signed and stale gets 412 where S3 says 403. The store
// never sends a PUT without a GET first, which would have failed with 403.
//
// Usage: node front.js --data DIR [--port N] [--bucket NAME] [--delay-ms N]
// Prints one JSON line {"port": N, "backend_port": M} once both listen on 127.0.0.1.
'use strict';

const http = require('http');
const S3rver = require('@20minutes/s3rver');

function arg(name, dflt) {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 && i + 1 < process.argv.length ? process.argv[i + 1] : dflt;
}

const dataDir = arg('data');
const port = Number(arg('port', '0'));
const bucket = arg('bucket', 'heare');
const delayMs = Number(arg('delay-ms', '0'));
if (!Number.isFinite(delayMs) || delayMs < 0) {
  console.error('front.js: --delay-ms takes a number of milliseconds');
  process.exit(2);
}
if (!dataDir) {
  console.error('front.js: --data DIR is required');
  process.exit(2);
}

let backendPort = 0;
let stats = { total: 0, by: {} };
const queues = new Map(); // object path -> tail promise

function count(method, status) {
  stats.total++;
  const k = `${method} ${status}`;
  stats.by[k] = (stats.by[k] || 0) + 1;
}

function xmlError(res, method, status, code, message) {
  count(method, status);
  const body =
    '<?xml version="1.0" encoding="UTF-8"?>\n' +
    `<Error><Code>${code}</Code><Message>${message}</Message></Error>`;
  res.writeHead(status, {
    'Content-Type': 'application/xml',
    'Content-Length': Buffer.byteLength(body),
  });
  res.end(method === 'HEAD' ? undefined : body);
}

function signed(req) {
  if (req.headers.authorization) return true;
  const q = new URL(req.url, 'http://x').searchParams;
  return q.has('X-Amz-Algorithm') || q.has('Signature');
}

// Runs fn(done) after every earlier job on the same key finished.
function serialize(key, fn) {
  const prev = queues.get(key) || Promise.resolve();
  const next = prev.then(() => new Promise((resolve) => fn(resolve)));
  queues.set(key, next);
  next.then(() => {
    if (queues.get(key) === next) queues.delete(key);
  });
}

function backend(method, path, headers, body, cb) {
  const r = http.request(
    { host: '127.0.0.1', port: backendPort, method, path, headers },
    (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => cb(null, res, Buffer.concat(chunks)));
      res.on('error', (e) => cb(e));
    },
  );
  r.on('error', (e) => cb(e));
  r.setTimeout(10000, () => r.destroy(new Error('backend timeout')));
  r.end(body);
}

function relay(req, res, body, done) {
  backend(req.method, req.url, req.headers, body, (err, bres, bbody) => {
    if (err) {
      xmlError(res, req.method, 502, 'InternalError', `backend: ${err.message}`);
      return done();
    }
    count(req.method, bres.statusCode);
    const headers = { ...bres.headers };
    delete headers['transfer-encoding'];
    headers['content-length'] = String(bbody.length);
    res.writeHead(bres.statusCode, headers);
    res.end(req.method === 'HEAD' ? undefined : bbody);
    done();
  });
}

const unquote = (e) => (e || '').replace(/"/g, '');

function conditionalPut(req, res, body, done) {
  const ifMatch = req.headers['if-match'];
  const ifNoneMatch = req.headers['if-none-match'];
  if (!ifMatch && !ifNoneMatch) return relay(req, res, body, done);

  // The current ETag, straight from s3rver (unsigned requests pass there).
  backend('HEAD', new URL(req.url, 'http://x').pathname, {}, undefined, (err, hres) => {
    if (err) {
      xmlError(res, req.method, 502, 'InternalError', `backend: ${err.message}`);
      return done();
    }
    const exists = hres.statusCode === 200;
    if (!exists && hres.statusCode !== 404) {
      xmlError(res, req.method, 500, 'InternalError', `HEAD answered ${hres.statusCode}`);
      return done();
    }
    const etag = exists ? unquote(hres.headers.etag) : null;
    if (ifNoneMatch !== undefined) {
      if (ifNoneMatch.trim() !== '*') {
        xmlError(res, req.method, 501, 'NotImplemented', 'If-None-Match on PUT takes only *');
        return done();
      }
      if (exists) {
        xmlError(res, req.method, 412, 'PreconditionFailed',
          'At least one of the pre-conditions you specified did not hold');
        return done();
      }
    }
    if (ifMatch !== undefined) {
      if (!exists) {
        xmlError(res, req.method, 404, 'NoSuchKey', 'The specified key does not exist.');
        return done();
      }
      if (unquote(ifMatch) !== etag) {
        xmlError(res, req.method, 412, 'PreconditionFailed',
          'At least one of the pre-conditions you specified did not hold');
        return done();
      }
    }
    relay(req, res, body, done);
  });
}

function handle(req, res, body) {
  const url = new URL(req.url, 'http://x');
  if (url.pathname === '/__front/stats' && req.method === 'GET') {
    const text = JSON.stringify(stats);
    res.writeHead(200, { 'Content-Type': 'application/json' });
    return res.end(text);
  }
  if (url.pathname === '/__front/reset' && req.method === 'POST') {
    stats = { total: 0, by: {} };
    res.writeHead(204);
    return res.end();
  }
  if (!signed(req)) {
    return xmlError(res, req.method, 403, 'AccessDenied', 'Anonymous access is forbidden');
  }
  const go = () => serialize(url.pathname, (done) => {
    if (req.method === 'PUT' && !url.search) conditionalPut(req, res, body, done);
    else relay(req, res, body, done);
  });
  if (delayMs > 0) setTimeout(go, delayMs);
  else go();
}

async function main() {
  const s3 = new S3rver({
    address: '127.0.0.1',
    port: 0,
    silent: true,
    directory: dataDir,
    configureBuckets: [{ name: bucket }],
  });
  const addr = await s3.run();
  backendPort = addr.port;

  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => handle(req, res, Buffer.concat(chunks)));
  });
  server.keepAliveTimeout = 30000;
  server.listen(port, '127.0.0.1', () => {
    process.stdout.write(
      JSON.stringify({ port: server.address().port, backend_port: backendPort }) + '\n',
    );
  });
  const stop = () => {
    server.close();
    s3.close().finally(() => process.exit(0));
    setTimeout(() => process.exit(0), 2000).unref();
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main().catch((e) => {
  console.error(`front.js: ${e.stack || e}`);
  process.exit(1);
});
