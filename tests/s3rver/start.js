// Starts a local S3 server for Shoal's tests and benchmarks.
//
//   node start.js --dir DIR [--port 0] [--address 127.0.0.1] [--bucket NAME]... [--legacy]
//
// Prints one JSON line {"port":N,"address":"..."} on stdout once it listens, then serves until
// SIGTERM/SIGINT or until stdin closes (so a crashed test never leaves a server behind).
// --legacy runs s3rver 3.7.1 (no SigV4 checks; for benchmarks beside s3fs), the default is
// @20minutes/s3rver 4.0.4, which verifies SigV4 signatures.
//
// GET /_shoal/stats answers the requests the server has seen, by method and in total, and the
// bytes of response bodies it sent (bytesOut), as JSON; POST /_shoal/stats/reset zeroes them.
// Bucket names cannot start with '_', so no bucket is hidden.
// With SHOAL_S3_LOG=FILE every request is also logged to FILE, one line each: time (s), method,
// the local address it reached (a client that dials 127.0.0.N names itself), URL, Range or "-".
'use strict';
const path = require('path');

const opts = { port: 0, address: '127.0.0.1', dir: null, buckets: [], legacy: false };
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i++) {
  const a = argv[i];
  if (a === '--port') opts.port = Number(argv[++i]);
  else if (a === '--address') opts.address = argv[++i];
  else if (a === '--dir') opts.dir = argv[++i];
  else if (a === '--bucket') opts.buckets.push(argv[++i]);
  else if (a === '--legacy') opts.legacy = true;
  else {
    console.error(`start.js: unknown argument '${a}'`);
    process.exit(2);
  }
}
if (!opts.dir) {
  console.error('start.js: --dir is required');
  process.exit(2);
}

const S3rver = require(opts.legacy ? 's3rver' : '@20minutes/s3rver');
if (!opts.legacy) makeObjectWritesAtomic(require('@20minutes/s3rver/lib/stores/filesystem'));

// S3 makes a new object version visible whole or not at all. s3rver 4.0.4 writes an object's bytes
// in place and its ETag and metadata after them, and a HEAD or GET in between answers from the
// half-written file (it even stores the ETag of that half as the object's). A client that polls
// HEAD until a PUT shows then reads a short object, and a reader of the key gets a wrong ETag for
// good. This wrapper writes the bytes to a temporary file beside the object and, under a lock per
// key that every read of the key's metadata also takes, renames it into place and stores the ETag
// and metadata: each request sees one whole version. (The legacy 3.7.1, for benchmarks only, is
// left as it is.)
function makeObjectWritesAtomic(Store) {
  const fs = require('fs');
  const tails = new Map();
  async function locked(k, fn) {
    const prev = tails.get(k) || Promise.resolve();
    let release;
    const mine = new Promise((r) => { release = r; });
    const tail = prev.then(() => mine);
    tails.set(k, tail);
    await prev;
    try {
      return await fn();
    } finally {
      release();
      if (tails.get(k) === tail) tails.delete(k);
    }
  }
  const P = Store.prototype;
  const raw = { getMetadata: P.getMetadata, getObject: P.getObject, copyObject: P.copyObject, deleteObject: P.deleteObject };
  // The original methods call this.getMetadata themselves: inside the lock they get the raw one.
  const unlockedView = (store) => Object.create(store, { getMetadata: { value: raw.getMetadata } });
  let seq = 0;
  P.getMetadata = function (bucket, key) {
    return locked(`${bucket}/${key}`, () => raw.getMetadata.call(this, bucket, key));
  };
  P.getObject = function (bucket, key, options) {
    return locked(`${bucket}/${key}`, () => raw.getObject.call(unlockedView(this), bucket, key, options));
  };
  P.copyObject = function (srcBucket, srcKey, destBucket, destKey, meta) {
    return locked(`${destBucket}/${destKey}`, () =>
      raw.copyObject.call(unlockedView(this), srcBucket, srcKey, destBucket, destKey, meta));
  };
  P.deleteObject = function (bucket, key) {
    return locked(`${bucket}/${key}`, () => raw.deleteObject.call(this, bucket, key));
  };
  P.putObject = async function (object) {
    const objectPath = this.getResourcePath(object.bucket, object.key, 'object');
    await fs.promises.mkdir(path.dirname(objectPath), { recursive: true, mode: 0o755 });
    const tmp = path.join(path.dirname(objectPath), `.${path.basename(objectPath)}.tmp-${process.pid}-${seq++}`);
    let size, md5;
    try {
      if (Buffer.isBuffer(object.content)) { // putContent answers before a buffer is on disk
        await fs.promises.writeFile(tmp, object.content);
        [size, md5] = [object.content.length, require('crypto').createHash('md5').update(object.content).digest('hex')];
      } else {
        [size, md5] = await this.putContent(tmp, object.content);
      }
    } catch (err) {
      await fs.promises.rm(tmp, { force: true });
      throw err;
    }
    await locked(`${object.bucket}/${object.key}`, async () => {
      await fs.promises.rename(tmp, objectPath);
      await this.putMetadata(object.bucket, object.key, object.metadata, md5);
    });
    return { size, md5 };
  };
}
const server = new S3rver({
  port: opts.port,
  address: opts.address,
  directory: path.resolve(opts.dir),
  silent: true,
  configureBuckets: opts.buckets.map((name) => ({ name })),
});

// bytesOut: body bytes of every answer; getBytes: of those, the answers to object GETs (ranged or
// whole), the bytes a reader's fetches cost.
const stats = { total: 0, byMethod: {}, gets: 0, rangedGets: 0, getBytes: 0, puts: 0, heads: 0, lists: 0, deletes: 0, posts: 0, bytesOut: 0 };
const reqLog = process.env.SHOAL_S3_LOG ? require('fs').createWriteStream(process.env.SHOAL_S3_LOG) : null;
function count(req, res) {
  stats.total++;
  if (reqLog) reqLog.write(`${Date.now() / 1000} ${req.method} ${req.socket.localAddress} ${req.url} ${req.headers.range || "-"}\n`);
  const url = new URL(req.url, 'http://x');
  const parts = url.pathname.split('/').filter((p) => p.length);
  const objectGet = req.method === 'GET' && parts.length >= 2;
  // Body bytes as written to the response (objects are piped into it, errors are ended with it).
  const bodyBytes = (chunk, encoding) => (chunk == null || typeof chunk === 'function' ? 0
    : Buffer.byteLength(chunk, typeof encoding === 'string' ? encoding : undefined));
  const add = (n) => {
    stats.bytesOut += n;
    if (objectGet) stats.getBytes += n;
  };
  const write = res.write, end = res.end;
  res.write = function (chunk, encoding) {
    add(bodyBytes(chunk, encoding));
    return write.apply(this, arguments);
  };
  res.end = function (chunk, encoding) {
    add(bodyBytes(chunk, encoding));
    return end.apply(this, arguments);
  };
  stats.byMethod[req.method] = (stats.byMethod[req.method] || 0) + 1;
  if (objectGet) {
    stats.gets++;
    if (req.headers.range) stats.rangedGets++;
  } else if (req.method === 'GET') stats.lists++;
  else if (req.method === 'HEAD') stats.heads++;
  else if (req.method === 'PUT') stats.puts++;
  else if (req.method === 'DELETE') stats.deletes++;
  else if (req.method === 'POST') stats.posts++;
}

server.run().then((addr) => {
  const http = server.httpServer;
  const handlers = http.listeners('request');
  http.removeAllListeners('request');
  http.on('request', (req, res) => {
    if (req.url.startsWith('/_shoal/stats')) {
      if (req.method === 'POST') {
        for (const k of Object.keys(stats)) stats[k] = k === 'byMethod' ? {} : 0;
      }
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify(stats));
      return;
    }
    count(req, res);
    for (const h of handlers) h(req, res);
  });
  process.stdout.write(JSON.stringify({ port: addr.port, address: addr.address }) + '\n');
}, (err) => {
  console.error(`start.js: cannot start the S3 server: ${err.message}`);
  process.exit(1);
});

function stop() {
  server.close().finally(() => process.exit(0));
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
process.stdin.on('end', stop);
process.stdin.resume();
