'use strict';
// Anchor for `plugbox bench`: the transport of the system plugbox is modelled on. OpenWA runs each
// untrusted plugin in a Node worker_thread and talks to it over a MessagePort (structured clone).
// This script measures that transport on this machine, in the same `plugbox bench` invocation, so
// plugbox's numbers can be read as ratios against it.
//
//   node --expose-gc node_anchor.js RTT_N PIPELINED_TOTAL IDLE_WORKERS STARTS
//   node node_anchor.js serve
//
// `serve` keeps one measured worker and answers commands on stdin, one JSON line each, so the
// bench can interleave short bursts of this transport with bursts of plugbox's bridge:
//   rtt N   -> {"lat_ns": [...]}   N round trips, one request in flight
//   pipe N  -> {"per_s": x}        N requests, 64 in flight
// It prints {"ready": true} once the worker is up and warm, and exits at the end of stdin.
// Prints one JSON object on stdout:
//   startup_ms        median over STARTS fresh workers, new Worker() -> 'online'
//   startup_ready_ms  the same workers, new Worker() -> first reply received (closer to plugbox's
//                     enable -> enabled, which needs several round trips)
//   rtt_p50_us/p99_us request/reply with one message in flight (after a warm-up)
//   pipelined_per_s   replies per second with 64 requests in flight
//   rss_per_worker_mb process RSS growth / IDLE_WORKERS idle workers (threads share one process)
const { Worker } = require('node:worker_threads');

const arg = (i, dflt) => (process.argv[i] === undefined ? dflt : Number(process.argv[i]));
const RTT_N = arg(2, 20000);
const PIPELINED_TOTAL = arg(3, 100000);
const IDLE_WORKERS = arg(4, 20);
const STARTS = arg(5, 20);
const IN_FLIGHT = 64;

// The plugin side: answer every request with its arguments, as a host service would answer a call.
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
if (workerData && workerData.reportTid) {
  // --placement split: say which kernel thread this worker is, so the main thread can move it.
  parentPort.postMessage({ tid: Number(require('node:fs').readlinkSync('/proc/thread-self').split('/').pop()) });
}
parentPort.on('message', (req) => parentPort.postMessage({ id: req.id, ok: true, value: req.args }));
`;
const SIDE_B_CPU = process.env.PLUGBOX_BENCH_SIDE_B_CPU;

// Shaped like a plugin's storage.get on OpenWA's bridge: a verb and its arguments.
const request = (id) => ({ id, kind: 'call', verb: 'storage.get', args: { key: 'bench:key' } });

const now = () => process.hrtime.bigint();
const msSince = (t0) => Number(now() - t0) / 1e6;
const spawn = (reportTid = false) =>
  new Worker(WORKER_SOURCE, { eval: true, workerData: { reportTid }, resourceLimits: { maxOldGenerationSizeMb: 256 } });

// The measured worker: with --placement split, its thread goes to the other CPU (the main thread
// stays on the one the bench gave this process), as plugbox's workers do.
async function measuredWorker() {
  const worker = spawn(SIDE_B_CPU !== undefined);
  await next(worker, 'online');
  if (SIDE_B_CPU !== undefined) {
    const { tid } = await next(worker, 'message');
    require('node:child_process').execFileSync('taskset', ['-p', '-c', SIDE_B_CPU, String(tid)], { stdio: 'ignore' });
  }
  return worker;
}
const next = (worker, event) => new Promise((resolve) => worker.once(event, resolve));

function percentile(sorted, q) {
  const rank = Math.max(1, Math.ceil(sorted.length * q)); // nearest rank, as plugbox's side does
  return sorted[rank - 1];
}

function median(values) {
  return percentile([...values].sort((a, b) => a - b), 0.5);
}

async function startups(count) {
  const online = [];
  const ready = [];
  for (let i = 0; i < count; i++) {
    const t0 = now();
    const worker = spawn();
    await next(worker, 'online');
    online.push(msSince(t0));
    worker.postMessage(request(0));
    await next(worker, 'message');
    ready.push(msSince(t0));
    await worker.terminate();
  }
  return { online: median(online), ready: median(ready) };
}

// One request in flight; latency of each round trip in nanoseconds.
function roundTrips(worker, n) {
  return new Promise((resolve) => {
    const lat = new Array(n);
    let i = 0;
    let t0 = now();
    const onReply = () => {
      lat[i] = Number(now() - t0);
      if (++i === n) {
        worker.off('message', onReply);
        resolve(lat);
        return;
      }
      t0 = now();
      worker.postMessage(request(i));
    };
    worker.on('message', onReply);
    worker.postMessage(request(0));
  });
}

// A window of IN_FLIGHT requests: every reply lets one more request go.
function pipelined(worker, total) {
  return new Promise((resolve) => {
    let sent = 0;
    let received = 0;
    const t0 = now();
    const onReply = () => {
      if (++received === total) {
        worker.off('message', onReply);
        resolve(total / (Number(now() - t0) / 1e9));
      } else if (sent < total) {
        worker.postMessage(request(sent++));
      }
    };
    worker.on('message', onReply);
    while (sent < Math.min(IN_FLIGHT, total)) worker.postMessage(request(sent++));
  });
}

async function idleRssPerWorker(count) {
  if (global.gc) global.gc();
  const before = process.memoryUsage().rss;
  const workers = [];
  for (let i = 0; i < count; i++) {
    const worker = spawn();
    await next(worker, 'online');
    workers.push(worker);
  }
  await new Promise((resolve) => setTimeout(resolve, 1000)); // idle, as plugbox's workers are measured
  const perWorker = (process.memoryUsage().rss - before) / count / (1 << 20);
  await Promise.all(workers.map((w) => w.terminate()));
  return perWorker;
}

async function main() {
  const start = await startups(STARTS);
  const worker = await measuredWorker();
  await roundTrips(worker, Math.min(RTT_N, 2000)); // warm-up: JIT, caches
  const lat = (await roundTrips(worker, RTT_N)).sort((a, b) => a - b);
  await pipelined(worker, Math.min(PIPELINED_TOTAL, 5000));
  const perSecond = await pipelined(worker, PIPELINED_TOTAL);
  await worker.terminate();
  const rss = await idleRssPerWorker(IDLE_WORKERS);
  const round1 = (x) => Math.round(x * 10) / 10;
  process.stdout.write(JSON.stringify({
    anchor: 'node-worker_threads',
    node: process.version,
    startup_ms: round1(start.online),
    startup_ready_ms: round1(start.ready),
    rtt_p50_us: round1(percentile(lat, 0.5) / 1000),
    rtt_p99_us: round1(percentile(lat, 0.99) / 1000),
    pipelined_per_s: Math.round(perSecond),
    rss_per_worker_mb: round1(rss),
    params: { rtt_n: RTT_N, pipelined_total: PIPELINED_TOTAL, in_flight: IN_FLIGHT, idle_workers: IDLE_WORKERS, starts: STARTS },
  }) + '\n');
}

async function serve() {
  const worker = await measuredWorker();
  await roundTrips(worker, 2000); // warm-up: JIT, caches
  await pipelined(worker, 5000);
  const say = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');
  say({ ready: true, node: process.version });
  const lines = require('node:readline').createInterface({ input: process.stdin });
  for await (const line of lines) {
    const [cmd, arg] = line.trim().split(/\s+/);
    const n = Number(arg);
    if (!Number.isInteger(n) || n < 1) {
      say({ error: `bad command ${JSON.stringify(line)}` });
    } else if (cmd === 'rtt') {
      say({ lat_ns: await roundTrips(worker, n) });
    } else if (cmd === 'pipe') {
      say({ per_s: await pipelined(worker, n) });
    } else {
      say({ error: `unknown command ${JSON.stringify(cmd)}` });
    }
  }
  await worker.terminate();
}

(process.argv[2] === 'serve' ? serve() : main()).catch((err) => {
  process.stderr.write(String(err && err.stack ? err.stack : err) + '\n');
  process.exit(1);
});
