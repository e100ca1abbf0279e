#!/usr/bin/env node
// Load generator for `rwkv7 serve` (OpenAI-compatible HTTP server). Node.js >= 20, standard library only.
//
//   node bench/serve/loadtest.mjs --url http://127.0.0.1:PORT --scenario decode|chat|longprompt|mixed|soak|calibrate [options]
//
// Prints ONE JSON object to stdout; progress goes to stderr. See bench/serve/README.md and --help.
import http from 'node:http';
import { writeFileSync, readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleepMs } from 'node:timers/promises';
import { setMaxListeners } from 'node:events';

const HELP = `usage: node bench/serve/loadtest.mjs --url http://127.0.0.1:PORT [--scenario NAME] [options]

scenarios (default decode):
  calibrate   measure tokens per character of the served vocabulary and exit
  decode      --streams concurrent streams, short distinct prompts, fixed --max-tokens, temperature 0,
              each stream loops for --duration s (at least one request each): aggregate decode tokens/s
  chat        one conversation of --turns turns (~--turn-tokens tokens of new user text each), whole
              history resent every turn; per-turn TTFT, prompt/cached/computed prompt tokens
  longprompt  --streams decode streams; once all stream for --settle s, one ~--long-prompt-tokens prompt;
              the streams' inter-token latency before / while the long prompt is prefilled
  mixed       Poisson arrivals at --rate req/s for --duration s: chats sharing a ~--system-tokens system
              prompt (1-4 turns resending history), short prompts, long prompts (--mix weights)
  soak        --streams closed-loop streams for --duration s (decode and chat streams); RSS sampled every
              --sample-interval s; growth after warm-up

common options:
  --url URL                 server (only http://127.0.0.1, localhost or [::1] are accepted)
  --seed N                  seed for all pseudo-random text and arrivals (1)
  --tokens-per-char X       tokens per character of generated English-like text; default: measured
                            with one /v1/completions request (usage.prompt_tokens / characters)
  --max-tokens N|A-B        completion tokens per request (decode 128, chat 32, longprompt 16 for the long
                            request, mixed/soak range 16-64)
  --temperature X           (0)
  --request-timeout S       per-request limit (300)
  --hard-timeout S          whole-run limit; requests still running are aborted and the partial result
                            printed (default depends on the scenario)
  --pid PID                 server pid: also read VmRSS/VmHWM from /proc/PID/status
  --model NAME              "model" field sent (default: the first id from GET /v1/models; none if that fails)
  --max-connections N       keep-alive connections at most (default: the scenario's concurrency: --streams,
                            --streams + 1 for longprompt, --max-inflight for mixed, 1 otherwise); requests
                            beyond wait in the client (/metrics is read on a connection of its own)
  --out FILE                also write the JSON there
  --quiet                   no progress on stderr
scenario options:
  --streams N               decode 1, longprompt 16, soak 64
  --duration S              decode 20, mixed 60, soak 600
  --prompt-tokens N         decode / longprompt stream prompt size (32)
  --api completions|chat    decode endpoint (completions)
  --turns N                 chat turns (50)
  --turn-tokens N           new user text per chat turn (60)
  --long-prompt-tokens N    longprompt (4096)
  --stream-max-tokens N     longprompt streams' max_tokens; a stream that ends starts again (2048)
  --settle S                longprompt: seconds all streams stream before the long prompt (2)
  --after S                 longprompt: seconds the streams go on after the long prompt's first token (1)
  --rate R                  mixed arrivals per second (1)
  --mix A,B,C               mixed weights of chat,short,long (0.4,0.4,0.2)
  --system-tokens N         mixed/soak shared system prompt (500)
  --short-range A-B         mixed short prompt tokens (20-80)
  --long-range A-B          mixed long prompt tokens (1000-2000)
  --max-inflight N          mixed: arrivals while N jobs are in flight are dropped and counted (64)
  --drain S                 mixed: after --duration wait up to S s for running requests, then abort them (30)
  --warmup S                soak warm-up (min(60, duration/5))
  --sample-interval S       soak/mixed /metrics sampling period (soak 10, mixed 5)
`;

// ------------------------------------------------------------------ options
function parseArgs(argv) {
  const o = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith('--')) die(`unexpected argument ${a}`);
    const eq = a.indexOf('=');
    if (eq > 0) { o[a.slice(2, eq)] = a.slice(eq + 1); continue; }
    const k = a.slice(2);
    if (k === 'help' || k === 'quiet') { o[k] = true; continue; }
    if (i + 1 >= argv.length) die(`--${k} needs a value`);
    o[k] = argv[++i];
  }
  return o;
}
function die(msg, code = 2) {
  process.stderr.write(`loadtest: ${msg}\n`);
  process.exit(code);
}
const KNOWN = new Set(['url', 'scenario', 'seed', 'tokens-per-char', 'max-tokens', 'temperature', 'request-timeout',
  'hard-timeout', 'pid', 'model', 'out', 'quiet', 'help', 'streams', 'duration', 'prompt-tokens', 'api', 'turns',
  'turn-tokens', 'long-prompt-tokens', 'stream-max-tokens', 'settle', 'after', 'rate', 'mix', 'system-tokens',
  'short-range', 'long-range', 'max-inflight', 'drain', 'warmup', 'sample-interval', 'max-connections']);
const args = parseArgs(process.argv.slice(2));
if (args.help) { process.stdout.write(HELP); process.exit(0); }
for (const k of Object.keys(args)) if (!KNOWN.has(k)) die(`unknown option --${k} (see --help)`);
const SCEN = args.scenario ?? 'decode';
if (!['calibrate', 'decode', 'chat', 'longprompt', 'mixed', 'soak'].includes(SCEN)) die(`unknown scenario ${SCEN}`);

function num(name, def, { min = -Infinity, int = false } = {}) {
  if (args[name] === undefined) return def;
  const v = Number(args[name]);
  if (!Number.isFinite(v) || v < min || (int && !Number.isInteger(v))) die(`--${name}: bad value ${args[name]}`);
  return v;
}
function range(name, def) {
  const s = args[name] ?? def;
  const m = /^(\d+)(?:-(\d+))?$/.exec(String(s));
  if (!m) die(`--${name}: expected N or A-B, got ${s}`);
  const a = Number(m[1]), b = m[2] === undefined ? a : Number(m[2]);
  if (b < a || a < 1) die(`--${name}: bad range ${s}`);
  return [a, b];
}

if (!args.url) die('--url is required (see --help)');
let BASE;
try { BASE = new URL(args.url); } catch { die(`--url: not a URL: ${args.url}`); }
if (BASE.protocol !== 'http:' || !['127.0.0.1', 'localhost', '[::1]'].includes(BASE.hostname))
  die(`--url: only http://127.0.0.1, http://localhost or http://[::1] are allowed, not ${args.url}`);
const ORIGIN = BASE.origin;

const defStreams = { decode: 1, longprompt: 16, soak: 64 }[SCEN] ?? 1;
const defDuration = { decode: 20, mixed: 60, soak: 600 }[SCEN] ?? 0;
const defMaxTok = { decode: '128', chat: '32', longprompt: '16' }[SCEN] ?? '16-64';
const cfg = {
  scenario: SCEN,
  url: ORIGIN,
  seed: num('seed', 1, { int: true }),
  streams: num('streams', defStreams, { min: 1, int: true }),
  duration_s: num('duration', defDuration, { min: 0 }),
  max_tokens: range('max-tokens', defMaxTok),
  temperature: num('temperature', 0, { min: 0 }),
  request_timeout_s: num('request-timeout', 300, { min: 1 }),
  model: args.model ?? null, // default: the first id of GET /v1/models
  prompt_tokens: num('prompt-tokens', 32, { min: 1, int: true }),
  api: args.api ?? 'completions',
  turns: num('turns', 50, { min: 1, int: true }),
  turn_tokens: num('turn-tokens', 60, { min: 1, int: true }),
  long_prompt_tokens: num('long-prompt-tokens', 4096, { min: 1, int: true }),
  stream_max_tokens: num('stream-max-tokens', 2048, { min: 1, int: true }),
  settle_s: num('settle', 2, { min: 0 }),
  after_s: num('after', 1, { min: 0 }),
  rate: num('rate', 1, { min: 1e-6 }),
  mix: (args.mix ?? '0.4,0.4,0.2').split(',').map(Number),
  system_tokens: num('system-tokens', 500, { min: 1, int: true }),
  short_range: range('short-range', '20-80'),
  long_range: range('long-range', '1000-2000'),
  max_inflight: num('max-inflight', 64, { min: 1, int: true }),
  drain_s: num('drain', 30, { min: 0 }),
  sample_interval_s: num('sample-interval', SCEN === 'soak' ? 10 : 5, { min: 0.5 }),
  pid: args.pid === undefined ? null : num('pid', 0, { min: 1, int: true }),
};
cfg.max_connections = num('max-connections',
  { decode: cfg.streams, longprompt: cfg.streams + 1, mixed: cfg.max_inflight, soak: cfg.streams }[SCEN] ?? 1, { min: 1, int: true });
cfg.warmup_s = num('warmup', Math.min(60, cfg.duration_s / 5), { min: 0 });
if (cfg.mix.length !== 3 || cfg.mix.some(x => !Number.isFinite(x) || x < 0) || cfg.mix.reduce((a, b) => a + b) <= 0)
  die('--mix: expected three non-negative weights chat,short,long');
if (!['completions', 'chat'].includes(cfg.api)) die('--api: completions or chat');
const defHard = {
  calibrate: 120,
  decode: cfg.duration_s + cfg.request_timeout_s + 30,
  chat: 1800,
  longprompt: 600,
  mixed: cfg.duration_s + cfg.drain_s + 30,
  soak: cfg.duration_s + 180,
}[SCEN];
cfg.hard_timeout_s = num('hard-timeout', defHard, { min: 1 });
const QUIET = !!args.quiet;

// ------------------------------------------------------------------ utilities
const now = () => performance.now(); // ms
const T0 = now();
function log(msg) { if (!QUIET) process.stderr.write(`[loadtest ${((now() - T0) / 1000).toFixed(1)}s] ${msg}\n`); }
const round = (x, d = 3) => (x === null || x === undefined || !Number.isFinite(x)) ? null : +x.toFixed(d);

// Global abort: the hard timeout aborts everything still running; scenarios return what they have.
const HARD = new AbortController();
setMaxListeners(0, HARD.signal);
let hardTimeoutHit = false;
setTimeout(() => { hardTimeoutHit = true; log(`hard timeout (${cfg.hard_timeout_s} s): aborting`); HARD.abort(); },
  cfg.hard_timeout_s * 1000).unref();
setTimeout(() => { // last resort if something does not unwind after the abort
  process.stdout.write(JSON.stringify({ scenario: SCEN, error: 'hard timeout: run did not unwind', config: cfg }) + '\n');
  process.exit(3);
}, (cfg.hard_timeout_s + 20) * 1000).unref();

// One signal that fires when any of `signals` does; call the returned cleanup when done (listeners on the
// long-lived signals would otherwise pile up, one per request).
function anySignal(signals) {
  const ac = new AbortController();
  const undo = [];
  for (const s of signals) {
    if (!s) continue;
    if (s.aborted) { ac.abort(s.reason); break; }
    const f = () => ac.abort(s.reason);
    setMaxListeners(0, s);
    s.addEventListener('abort', f, { once: true });
    undo.push(() => s.removeEventListener('abort', f));
  }
  return [ac.signal, () => { for (const u of undo) u(); }];
}
async function sleep(ms, signal = HARD.signal) {
  if (ms <= 0 || signal?.aborted) return;
  try { await sleepMs(ms, undefined, { signal }); } catch { /* aborted */ }
}

// Seeded PRNG (mulberry32) and English-like text.
function rng(seed) {
  let a = (seed >>> 0) || 0x9e3779b9;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return {
    next,
    int: (lo, hi) => lo + Math.floor(next() * (hi - lo + 1)),
    pick: arr => arr[Math.floor(next() * arr.length)],
    exp: rate => -Math.log(1 - next()) / rate,
  };
}
const mixSeed = (...xs) => xs.reduce((h, x) => Math.imul(h ^ (x >>> 0), 0x01000193) >>> 0, 0x811c9dc5);
const WORDS = (
  'the of and to a in is it you that he was for on are with as his they be at one have this from or had by ' +
  'word but what some we can out other were all there when up use your how said an each she which do their ' +
  'time if will way about many then them write would like so these her long make thing see him two has look ' +
  'more day could go come did number sound no most people my over know water than call first who may down side ' +
  'been now find any new work part take get place made live where after back little only round man year came ' +
  'show every good me give our under name very through just form sentence great think say help low line differ ' +
  'turn cause much mean before move right boy old too same tell does set three want air well also play small end ' +
  'put home read hand port large spell add even land here must big high such follow act why ask men change went ' +
  'light kind off need house picture try us again animal point mother world near build self earth father head ' +
  'stand own page should country found answer school grow study still learn plant cover food sun four between ' +
  'state keep eye never last let thought city tree cross farm hard start might story saw far sea draw left late ' +
  'run while press close night real life few north open seem together next white children begin got walk example ' +
  'ease paper group always music those both mark often letter until mile river car feet care second book carry ' +
  'took science eat room friend began idea fish mountain stop once base hear horse cut sure watch color face wood ' +
  'main enough plain girl usual young ready above ever red list though feel talk bird soon body dog family direct ' +
  'pose leave song measure door product black short numeral class wind question happen complete ship area half ' +
  'rock order fire south problem piece told knew pass since top whole king space heard best hour better true during ' +
  'hundred five remember step early hold west ground interest reach fast verb sing listen six table travel less morning'
).split(' ');
function makeText(r, nChars) {
  let out = '';
  while (out.length < nChars) {
    const n = r.int(6, 14);
    const ws = [];
    for (let i = 0; i < n; i++) ws.push(r.pick(WORDS));
    ws[0] = ws[0][0].toUpperCase() + ws[0].slice(1);
    out += (out ? ' ' : '') + ws.join(' ') + (r.next() < 0.15 ? '?' : '.');
  }
  if (out.length > nChars) { // cut at a word boundary
    const cut = out.lastIndexOf(' ', nChars);
    out = cut > 0 ? out.slice(0, cut) : out.slice(0, nChars);
  }
  return out;
}
let TPC = null; // tokens per character
const textTokens = (r, tokens) => makeText(r, Math.max(1, Math.round(tokens / TPC)));

// Percentiles (linear interpolation between closest ranks) over a bounded reservoir sample.
class Sample {
  constructor(cap = 200000, seed = 7) { this.cap = cap; this.n = 0; this.v = []; this.r = rng(seed); this.max = -Infinity; this.sum = 0; }
  add(x) {
    this.n++; this.sum += x; if (x > this.max) this.max = x;
    if (this.v.length < this.cap) this.v.push(x);
    else { const j = Math.floor(this.r.next() * this.n); if (j < this.cap) this.v[j] = x; }
  }
  summary(d = 2) {
    if (!this.n) return { n: 0, p50: null, p90: null, p99: null, mean: null, max: null };
    const s = Float64Array.from(this.v).sort();
    const q = p => { const i = (s.length - 1) * p, lo = Math.floor(i), hi = Math.ceil(i); return s[lo] + (s[hi] - s[lo]) * (i - lo); };
    return { n: this.n, p50: round(q(0.5), d), p90: round(q(0.9), d), p99: round(q(0.99), d), mean: round(this.sum / this.n, d), max: round(this.max, d) };
  }
}
const sampleOf = xs => { const s = new Sample(); for (const x of xs) s.add(x); return s; };

// ------------------------------------------------------------------ /metrics and /proc
function httpGet(path, timeoutMs = 10000) { // a fresh connection each time (not from the pool)
  return new Promise((resolve, reject) => {
    const req = http.get(ORIGIN + path, { agent: false, signal: AbortSignal.timeout(timeoutMs) }, res => {
      let t = '';
      res.setEncoding('utf8');
      res.on('data', d => { t += d; });
      res.on('end', () => resolve({ status: res.statusCode, text: t }));
      res.on('error', reject);
    });
    req.on('error', reject);
  });
}
async function scrape() {
  try {
    const res = await httpGet('/metrics');
    if (res.status !== 200) return null;
    const m = {};
    for (const line of res.text.split('\n')) {
      if (!line || line[0] === '#') continue;
      const mm = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)/.exec(line);
      if (!mm) continue;
      const v = Number(mm[3]);
      if (!Number.isFinite(v)) continue;
      m[mm[1]] = (m[mm[1]] ?? 0) + v; // labels summed per metric name
    }
    return m;
  } catch { return null; }
}
function procStatus() {
  if (!cfg.pid) return null;
  try {
    const s = readFileSync(`/proc/${cfg.pid}/status`, 'utf8');
    const kb = k => { const m = new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(s); return m ? Number(m[1]) * 1024 : null; };
    return { rss_bytes: kb('VmRSS'), peak_rss_bytes: kb('VmHWM') };
  } catch { return null; }
}
const COUNTERS = ['rwkv7_requests_total', 'rwkv7_prompt_tokens_total', 'rwkv7_prompt_tokens_computed_total',
  'rwkv7_prompt_tokens_cached_total', 'rwkv7_generated_tokens_total', 'rwkv7_cache_hits_total', 'rwkv7_cache_misses_total'];
function serverReport(before, after) {
  const out = { metrics_available: !!(before && after) };
  if (before && after) {
    const d = {};
    for (const k of COUNTERS) if (k in after) d[k.replace(/^rwkv7_/, '')] = after[k] - (before[k] ?? 0);
    out.counters_delta = d;
    const hits = d.cache_hits_total, misses = d.cache_misses_total;
    out.cache_hit_rate = (hits !== undefined && misses !== undefined && hits + misses > 0) ? round(hits / (hits + misses), 4) : null;
    out.prompt_tokens = d.prompt_tokens_total ?? null;
    out.prompt_tokens_computed = d.prompt_tokens_computed_total ?? null;
    out.prompt_tokens_saved_by_cache = d.prompt_tokens_cached_total ??
      (d.prompt_tokens_total !== undefined && d.prompt_tokens_computed_total !== undefined ? d.prompt_tokens_total - d.prompt_tokens_computed_total : null);
    out.generated_tokens = d.generated_tokens_total ?? null;
  }
  if (after) {
    out.rss_bytes = after.rwkv7_process_resident_bytes ?? null;
    out.peak_rss_bytes = after.rwkv7_process_peak_resident_bytes ?? null;
  }
  const p = procStatus();
  if (p) { out.proc_rss_bytes = p.rss_bytes; out.proc_peak_rss_bytes = p.peak_rss_bytes; }
  const pk = out.proc_peak_rss_bytes ?? out.peak_rss_bytes;
  out.peak_rss_mb = pk ? round(pk / 1048576, 1) : null;
  return out;
}

// ------------------------------------------------------------------ one request
// Streams one completion. Each non-empty content delta is one token arrival (the server sends one chunk per
// token); TTFT = first arrival - send; ITL = gap between successive arrivals of the same request.
function parseRetryAfter(v) {
  if (!v) return null;
  if (/^\d+(\.\d+)?$/.test(v.trim())) return Number(v) * 1000;
  const t = Date.parse(v); return Number.isFinite(t) ? Math.max(0, t - Date.now()) : null;
}
// HTTP over node:http with a bounded keep-alive pool (--max-connections, default: the scenario's
// concurrency), so that the number of connections the server sees is known; TCP_NODELAY on.
// An idle socket is closed after 4 s, before the server's keep-alive timeout (5 s): without a
// timeout node's agent ignores the server's `Keep-Alive: timeout=5` hint and keeps idle sockets
// forever, so a request sent on one just as the server closed it failed with ECONNRESET (seen
// once in a one-at-a-time baseline, where sockets sit idle while others wait).
const AGENT = new http.Agent({ keepAlive: true, maxSockets: cfg.max_connections, scheduling: 'fifo', timeout: 4000 });
function post(path, bodyText, signal) {
  return new Promise((resolve, reject) => {
    const req = http.request(ORIGIN + path, {
      method: 'POST', agent: AGENT, signal,
      headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(bodyText), accept: 'text/event-stream' },
    }, resolve);
    req.on('socket', sock => sock.setNoDelay(true));
    req.on('error', reject);
    req.end(bodyText);
  });
}
async function request(path, body, { signal, keepTimes = false, onToken } = {}) {
  const rec = { path, t0: now(), status: 0, ok: false, ttft: null, tFirst: null, tLast: null, latency: null, chunks: 0,
    itls: [], times: keepTimes ? [] : null, content: '', usage: null, finish_reason: null, error: null, aborted: false,
    retry_after_ms: null };
  const ac = new AbortController();
  const timer = setTimeout(() => ac.abort(new Error('timeout')), cfg.request_timeout_s * 1000);
  const [sig, unlisten] = anySignal([ac.signal, signal, HARD.signal]);
  try {
    const res = await post(path, JSON.stringify(cfg.model ? { model: cfg.model, ...body } : body), sig);
    rec.status = res.statusCode;
    const dec = new TextDecoder();
    if (res.statusCode !== 200) {
      rec.retry_after_ms = parseRetryAfter(res.headers['retry-after']);
      rec.error = `http_${res.statusCode}`;
      let t = '';
      for await (const c of res) t += dec.decode(c, { stream: true });
      rec.error_body = t.slice(0, 300);
      return rec;
    }
    let buf = '', done = false;
    const event = (ev, t) => {
      let data = '';
      for (const line of ev.split(/\r?\n/)) if (line.startsWith('data:')) data += (data ? '\n' : '') + line.slice(5).replace(/^ /, '');
      if (!data) return; // comments (": keep-alive") and empty events
      if (data === '[DONE]') { done = true; return; }
      let obj;
      try { obj = JSON.parse(data); } catch { rec.error = 'protocol_bad_json'; return; }
      if (obj.error) { rec.error = 'stream_error'; rec.error_body = JSON.stringify(obj.error).slice(0, 300); return; }
      const ch = obj.choices?.[0];
      const piece = ch?.delta?.content ?? ch?.text;
      if (typeof piece === 'string' && piece.length) {
        rec.content += piece; rec.chunks++;
        if (rec.tFirst === null) { rec.tFirst = t; rec.ttft = t - rec.t0; } else rec.itls.push(t - rec.tLast);
        if (onToken) onToken(t, rec.tLast);
        rec.tLast = t;
        if (rec.times) rec.times.push(t);
      }
      if (ch?.finish_reason) rec.finish_reason = ch.finish_reason;
      if (obj.usage) rec.usage = obj.usage;
    };
    for await (const chunk of res) {
      const t = now();
      buf += dec.decode(chunk, { stream: true });
      let i;
      while ((i = buf.search(/\r?\n\r?\n/)) >= 0) {
        const ev = buf.slice(0, i);
        buf = buf.slice(i + (buf[i] === '\r' ? 4 : 2));
        event(ev, t);
      }
    }
    if (buf.trim()) event(buf, now());
    if (!done && !rec.error) rec.error = 'protocol_no_done';
    rec.ok = done && !rec.error;
  } catch (e) {
    if (ac.signal.aborted) rec.error = 'timeout';
    else if (sig.aborted) { rec.aborted = true; rec.error = 'aborted'; }
    else rec.error = `network: ${e.code ?? e.message}`;
  } finally {
    clearTimeout(timer);
    unlisten();
    rec.latency = now() - rec.t0;
  }
  return rec;
}
const genTokens = r => r.usage?.completion_tokens ?? r.chunks;
const streamBody = (extra) => ({ stream: true, stream_options: { include_usage: true }, temperature: cfg.temperature, ...extra });
const completion = (prompt, maxTokens, seed, opts) => request('/v1/completions', streamBody({ prompt, max_tokens: maxTokens, seed }), opts);
const chatReq = (messages, maxTokens, seed, opts) => request('/v1/chat/completions', streamBody({ messages, max_tokens: maxTokens, seed }), opts);

// Aggregate statistics over request records.
function aggregate(recs, wallS) {
  const ttft = new Sample(), itl = new Sample(), lat = new Sample();
  const errors = {};
  let ok = 0, r429 = 0, aborted = 0, gen = 0, failed = 0;
  for (const r of recs) {
    gen += genTokens(r);
    for (const x of r.itls) itl.add(x);
    if (r.status === 429) { r429++; continue; }
    if (r.aborted) { aborted++; continue; }
    if (!r.ok) { failed++; errors[r.error] = (errors[r.error] ?? 0) + 1; continue; }
    ok++;
    if (r.ttft !== null) ttft.add(r.ttft);
    lat.add(r.latency);
  }
  return {
    requests: recs.length, completed: ok, errors: failed, errors_by_kind: errors, rejected_429: r429, aborted,
    requests_per_s: wallS > 0 ? round(ok / wallS, 3) : null,
    generated_tokens: gen, generated_tokens_per_s: wallS > 0 ? round(gen / wallS, 2) : null,
    ttft_ms: ttft.summary(), itl_ms: itl.summary(), latency_ms: lat.summary(),
  };
}
function progress(getLine, everyMs = 5000) {
  const h = setInterval(() => log(getLine()), everyMs);
  return () => clearInterval(h);
}
async function retryWait(rec) { // closed-loop streams: back off after a 429 as told (capped at 2 s)
  if (rec.status === 429) await sleep(Math.min(rec.retry_after_ms ?? 200, 2000));
  else if (!rec.ok && !rec.aborted) await sleep(200);
}

// ------------------------------------------------------------------ calibration
async function calibrate() {
  const text = makeText(rng(mixSeed(cfg.seed, 0xca11)), 2000);
  const r = await completion(text, 1, 0);
  const pt = r.usage?.prompt_tokens;
  if (r.status >= 400 && r.status < 500 && r.status !== 429)
    die(`calibration request refused: HTTP ${r.status} ${r.error_body ?? ''}`, 1);
  if (!r.ok || !pt) {
    log(`calibration failed (${r.error ?? 'no usage.prompt_tokens'}); assuming 1 token per character`);
    return { tokens_per_char: 1, calibrated: false, error: r.error ?? 'no usage' };
  }
  return { tokens_per_char: round(pt / text.length, 4), calibrated: true, chars: text.length, prompt_tokens: pt };
}

// ------------------------------------------------------------------ scenarios
async function scenDecode() {
  const recs = [], first = [], last = [];
  const [mt] = cfg.max_tokens;
  const t0 = now(), endAt = t0 + cfg.duration_s * 1000;
  const stop = progress(() => `decode: ${recs.length} done, ${recs.reduce((a, r) => a + genTokens(r), 0)} tokens`);
  await Promise.all(Array.from({ length: cfg.streams }, async (_, s) => {
    for (let i = 0; i === 0 || (now() < endAt && !HARD.signal.aborted); i++) {
      const r = rng(mixSeed(cfg.seed, cfg.streams, s, i, 0xdec)); // runs with other --streams get other prompts
      const prompt = textTokens(r, cfg.prompt_tokens);
      const rec = cfg.api === 'chat'
        ? await chatReq([{ role: 'user', content: prompt }], mt, i, { keepTimes: true })
        : await completion(prompt, mt, i, { keepTimes: true });
      recs.push(rec);
      if (rec.ok && rec.tFirst !== null) { if (first[s] === undefined) first[s] = rec.tFirst; last[s] = rec.tLast; }
      await retryWait(rec);
    }
  }));
  stop();
  const wall = (now() - t0) / 1000;
  const out = aggregate(recs, wall);
  // Steady state: from the moment every stream has its first token to the moment the first stream gets its
  // last one, count the token arrivals: aggregate decode tokens/s with all streams decoding.
  let steady = null;
  if (first.filter(x => x !== undefined).length === cfg.streams) {
    const a = Math.max(...first), b = Math.min(...last);
    if (b > a) {
      let n = 0;
      for (const r of recs) if (r.times) for (const t of r.times) if (t > a && t <= b) n++;
      steady = { window_s: round((b - a) / 1000), tokens: n, tokens_per_s: round(n / ((b - a) / 1000), 2) };
    }
  }
  const perStream = new Sample();
  for (const r of recs) if (r.ok && r.chunks > 1) perStream.add((r.chunks - 1) / ((r.tLast - r.tFirst) / 1000));
  return { ...out, decode_steady: steady, per_request_decode_tokens_per_s: perStream.summary(), wall_s: round(wall) };
}

async function scenChat() {
  const r = rng(mixSeed(cfg.seed, 0xc4a7));
  const history = [], turns = [];
  const [mt] = cfg.max_tokens;
  const t0 = now();
  for (let t = 1; t <= cfg.turns && !HARD.signal.aborted; t++) {
    const user = textTokens(r, cfg.turn_tokens);
    const messages = [...history, { role: 'user', content: user }];
    const m0 = await scrape();
    const rec = await chatReq(messages, mt, t);
    const m1 = await scrape();
    const comp = (m0 && m1 && 'rwkv7_prompt_tokens_computed_total' in m1)
      ? m1.rwkv7_prompt_tokens_computed_total - (m0.rwkv7_prompt_tokens_computed_total ?? 0) : null;
    const row = { turn: t, status: rec.status, ok: rec.ok, ttft_ms: round(rec.ttft, 2), latency_ms: round(rec.latency, 2),
      prompt_tokens: rec.usage?.prompt_tokens ?? null, cached_tokens: rec.usage?.prompt_tokens_details?.cached_tokens ?? null,
      prompt_tokens_computed: comp, completion_tokens: genTokens(rec), finish_reason: rec.finish_reason };
    if (!rec.ok) row.error = rec.error;
    turns.push(row);
    if (t % 10 === 0 || !rec.ok) log(`chat turn ${t}: ttft ${row.ttft_ms} ms, prompt ${row.prompt_tokens}, cached ${row.cached_tokens}, computed ${comp}`);
    if (!rec.ok) break; // the history would no longer be what a client has
    history.push({ role: 'user', content: user }, { role: 'assistant', content: rec.content });
  }
  const wall = (now() - t0) / 1000;
  const ok = turns.filter(x => x.ok && x.ttft_ms !== null);
  const at = n => turns.find(x => x.turn === n && x.ok)?.ttft_ms ?? null;
  const lastT = ok.length ? ok[ok.length - 1] : null;
  const sum = k => turns.reduce((a, x) => a + (x[k] ?? 0), 0);
  const med = xs => sampleOf(xs).summary().p50;
  return {
    turns_completed: ok.length, errors: turns.filter(x => !x.ok).length,
    ttft_turn2_ms: at(2), ttft_last_ms: lastT?.ttft_ms ?? null, last_turn: lastT?.turn ?? null,
    ttft_ratio_last_over_turn2: at(2) && lastT ? round(lastT.ttft_ms / at(2), 3) : null,
    ttft_ratio_median_last5_over_turns2to6: ok.length >= 10
      ? round(med(ok.slice(-5).map(x => x.ttft_ms)) / med(ok.filter(x => x.turn >= 2 && x.turn <= 6).map(x => x.ttft_ms)), 3) : null,
    prompt_tokens_total: sum('prompt_tokens'), cached_tokens_total: sum('cached_tokens'),
    prompt_tokens_computed_total: turns.every(x => x.prompt_tokens_computed === null) ? null : sum('prompt_tokens_computed'),
    ttft_ms: sampleOf(ok.map(x => x.ttft_ms)).summary(),
    per_turn: turns, wall_s: round(wall),
  };
}

async function scenLongprompt() {
  const streamStop = new AbortController();
  const gaps = []; // [tPrev, t] of every stream token after the first of its request
  const recs = [];
  const firstSeen = new Array(cfg.streams).fill(null);
  const t0 = now();
  const streams = Promise.all(Array.from({ length: cfg.streams }, async (_, s) => {
    for (let i = 0; !streamStop.signal.aborted && !HARD.signal.aborted; i++) {
      const prompt = textTokens(rng(mixSeed(cfg.seed, s, i, 0x10)), cfg.prompt_tokens);
      const rec = await completion(prompt, cfg.stream_max_tokens, i, {
        signal: streamStop.signal,
        onToken: (t, prev) => { if (firstSeen[s] === null) firstSeen[s] = t; if (prev !== null) gaps.push([prev, t]); },
      });
      recs.push(rec);
      if (!rec.aborted) await retryWait(rec);
    }
  }));
  // wait until every stream streams (bounded), then --settle s
  const waitUntil = now() + cfg.request_timeout_s * 1000;
  while (firstSeen.some(x => x === null) && now() < waitUntil && !HARD.signal.aborted) await sleep(20);
  const allStreaming = firstSeen.every(x => x !== null);
  const tAll = now();
  log(`longprompt: ${firstSeen.filter(x => x !== null).length}/${cfg.streams} streams streaming; settle ${cfg.settle_s} s`);
  await sleep(cfg.settle_s * 1000);
  const longText = textTokens(rng(mixSeed(cfg.seed, 0x1049)), cfg.long_prompt_tokens);
  const tSend = now();
  log(`longprompt: sending the long prompt (${longText.length} chars)`);
  const longP = completion(longText, cfg.max_tokens[0], 0, { keepTimes: true });
  await sleep(100); // is the long prompt running or waiting in the server's queue?
  const mSend = await scrape();
  const longRec = await longP;
  const tFirst = longRec.tFirst ?? now();
  log(`longprompt: long prompt first token after ${round(longRec.ttft, 1)} ms; streams continue ${cfg.after_s} s`);
  await sleep(Math.max(0, tFirst + cfg.after_s * 1000 - now()));
  const tEnd = now();
  streamStop.abort();
  await streams;
  const all = new Sample(), before = new Sample(), during = new Sample(), after = new Sample();
  for (const [a, b] of gaps) {
    if (b > tEnd) continue;
    const d = b - a;
    all.add(d);
    if (b <= tSend) { if (a >= tAll) before.add(d); }
    else if (a < tFirst) during.add(d); // the gap overlaps the prefill window [send, first token]
    else after.add(d);
  }
  const A = all.summary(), B = before.summary(), D = during.summary();
  const streamErrors = aggregate(recs.filter(r => !r.aborted), (tEnd - t0) / 1000);
  return {
    streams: cfg.streams, all_streams_streaming: allStreaming,
    long_prompt: { ok: longRec.ok, status: longRec.status, error: longRec.error, ttft_ms: round(longRec.ttft, 2),
      prompt_tokens: longRec.usage?.prompt_tokens ?? null, cached_tokens: longRec.usage?.prompt_tokens_details?.cached_tokens ?? null,
      chars: longText.length, completion_tokens: genTokens(longRec) },
    prefill_window_s: round((tFirst - tSend) / 1000),
    server_100ms_after_send: mSend ? { running_sequences: mSend.rwkv7_running_sequences ?? null, queue_length: mSend.rwkv7_queue_length ?? null } : null,
    itl_ms_all: A, itl_ms_before: B, itl_ms_during_prefill: D, itl_ms_after: after.summary(),
    itl_p99_over_p50_all: A.p50 ? round(A.p99 / A.p50, 3) : null,
    itl_p99_during_over_p50_before: B.p50 && D.n ? round(D.p99 / B.p50, 3) : null,
    itl_max_during_over_p50_before: B.p50 && D.n ? round(D.max / B.p50, 3) : null,
    stream_requests: { completed: streamErrors.completed, errors: streamErrors.errors, errors_by_kind: streamErrors.errors_by_kind,
      rejected_429: streamErrors.rejected_429 },
    wall_s: round((now() - t0) / 1000),
  };
}

async function scenMixed() {
  const r = rng(mixSeed(cfg.seed, 0x313));
  const system = makeText(rng(mixSeed(cfg.seed, 0x5757)), Math.round(cfg.system_tokens / TPC));
  const drainAc = new AbortController();
  const recs = []; // { type, rec, tEnd }
  const counts = { arrivals: 0, dropped_inflight_cap: 0, jobs: { chat: 0, short: 0, long: 0 } };
  const wsum = cfg.mix.reduce((a, b) => a + b);
  const [mtLo, mtHi] = cfg.max_tokens;
  let inflight = 0, maxInflight = 0;
  const jobs = [];
  const samples = [];
  const t0 = now(), endAt = t0 + cfg.duration_s * 1000;
  const m0 = await scrape();
  const sampler = setInterval(async () => {
    const m = await scrape();
    if (m) samples.push({ t_s: round((now() - t0) / 1000, 1), queue: m.rwkv7_queue_length ?? null, running: m.rwkv7_running_sequences ?? null, inflight });
  }, cfg.sample_interval_s * 1000);
  const stop = progress(() => `mixed: ${counts.arrivals} arrivals, ${recs.length} requests done, ${inflight} in flight`);
  async function job(id, type) {
    const jr = rng(mixSeed(cfg.seed, id, 0x10b));
    const mt = () => jr.int(mtLo, mtHi);
    const opts = { signal: drainAc.signal };
    if (type === 'chat') {
      const k = jr.int(1, 4);
      const msgs = [{ role: 'system', content: system }];
      for (let t = 0; t < k && !drainAc.signal.aborted; t++) {
        msgs.push({ role: 'user', content: textTokens(jr, cfg.turn_tokens) });
        const rec = await chatReq(msgs, mt(), id, opts);
        recs.push({ type, rec, tEnd: now() });
        if (!rec.ok) break;
        msgs.push({ role: 'assistant', content: rec.content });
      }
    } else {
      const [lo, hi] = type === 'short' ? cfg.short_range : cfg.long_range;
      const rec = await completion(textTokens(jr, jr.int(lo, hi)), mt(), id, opts);
      recs.push({ type, rec, tEnd: now() });
    }
  }
  let t = t0;
  for (let id = 0; !HARD.signal.aborted; id++) {
    t += r.exp(cfg.rate) * 1000;
    if (t >= endAt) break;
    await sleep(t - now());
    if (HARD.signal.aborted) break;
    counts.arrivals++;
    let u = r.next() * wsum;
    const type = (u -= cfg.mix[0]) < 0 ? 'chat' : (u -= cfg.mix[1]) < 0 ? 'short' : 'long';
    if (inflight >= cfg.max_inflight) { counts.dropped_inflight_cap++; continue; }
    counts.jobs[type]++;
    inflight++; maxInflight = Math.max(maxInflight, inflight);
    jobs.push(job(id, type).finally(() => inflight--));
  }
  await sleep(endAt - now());
  log(`mixed: arrivals over; draining ${inflight} jobs (up to ${cfg.drain_s} s)`);
  const drainTimer = setTimeout(() => drainAc.abort(), cfg.drain_s * 1000);
  await Promise.all(jobs);
  clearTimeout(drainTimer);
  stop(); clearInterval(sampler);
  const tDone = now();
  const m1 = await scrape();
  const all = recs.map(x => x.rec);
  const inWindow = recs.filter(x => x.rec.ok && x.tEnd <= endAt).length;
  const byType = {};
  for (const ty of ['chat', 'short', 'long']) {
    const rs = recs.filter(x => x.type === ty).map(x => x.rec);
    const a = aggregate(rs, (tDone - t0) / 1000);
    byType[ty] = { requests: a.requests, completed: a.completed, rejected_429: a.rejected_429, errors: a.errors, aborted: a.aborted,
      ttft_ms: a.ttft_ms, latency_ms: a.latency_ms };
  }
  const agg = aggregate(all, (tDone - t0) / 1000);
  return {
    rate: cfg.rate, ...counts, max_inflight_seen: maxInflight,
    ...agg,
    requests_per_s: round(inWindow / cfg.duration_s, 3), // completed by the end of --duration
    requests_per_s_incl_drain: agg.requests_per_s,
    completed_within_duration: inWindow, aborted_at_drain: agg.aborted,
    by_type: byType, queue_samples: samples,
    server: serverReport(m0, m1), drain_s_used: round((tDone - endAt) / 1000), wall_s: round((tDone - t0) / 1000),
    _metrics_done: true,
  };
}

async function scenSoak() {
  const system = makeText(rng(mixSeed(cfg.seed, 0x5757)), Math.round(cfg.system_tokens / TPC));
  const [mtLo, mtHi] = cfg.max_tokens;
  const t0 = now(), endAt = t0 + cfg.duration_s * 1000, warmAt = t0 + cfg.warmup_s * 1000;
  const st = { requests: 0, ok: 0, r429: 0, errors: {}, gen: 0 };
  const ttft = new Sample(), lat = new Sample();
  const samples = [];
  const take = async () => {
    const m = await scrape(); const p = procStatus();
    const s = { t_s: round((now() - t0) / 1000, 1), rss_bytes: p?.rss_bytes ?? m?.rwkv7_process_resident_bytes ?? null,
      peak_rss_bytes: p?.peak_rss_bytes ?? m?.rwkv7_process_peak_resident_bytes ?? null,
      cache_bytes: m?.rwkv7_cache_bytes ?? null,
      running: m?.rwkv7_running_sequences ?? null, queue: m?.rwkv7_queue_length ?? null, requests_ok: st.ok };
    samples.push(s); return s;
  };
  const m0 = await scrape();
  await take();
  const sampler = setInterval(() => { take(); }, cfg.sample_interval_s * 1000);
  const warmTimer = setTimeout(async () => { // the sample that ends the warm-up
    const w = await take(); w.warmup_end = true; log(`soak: warm-up over, RSS ${round(w.rss_bytes / 1048576, 1)} MB`);
  }, cfg.warmup_s * 1000);
  const stop = progress(() => `soak: ${st.ok} ok, ${st.r429} x 429, ${Object.values(st.errors).reduce((a, b) => a + b, 0)} errors`, 10000);
  const note = rec => {
    st.requests++; st.gen += genTokens(rec);
    if (rec.status === 429) st.r429++;
    else if (rec.ok) { st.ok++; if (rec.ttft !== null) ttft.add(rec.ttft); lat.add(rec.latency); }
    else if (!rec.aborted) st.errors[rec.error] = (st.errors[rec.error] ?? 0) + 1;
  };
  await Promise.all(Array.from({ length: cfg.streams }, async (_, s) => {
    for (let i = 0; now() < endAt && !HARD.signal.aborted; i++) {
      const r = rng(mixSeed(cfg.seed, s, i, 0x50a));
      if (s % 2 === 0) { // decode stream: fresh short prompt
        const rec = await completion(textTokens(r, r.int(...cfg.short_range)), r.int(mtLo, mtHi), i);
        note(rec); await retryWait(rec);
      } else { // chat stream: up to 4 turns on the shared system prompt, history resent
        const msgs = [{ role: 'system', content: system }];
        for (let t = 0; t < 4 && now() < endAt && !HARD.signal.aborted; t++) {
          msgs.push({ role: 'user', content: textTokens(r, cfg.turn_tokens) });
          const rec = await chatReq(msgs, r.int(mtLo, mtHi), i);
          note(rec);
          if (!rec.ok) { await retryWait(rec); break; }
          msgs.push({ role: 'assistant', content: rec.content });
        }
      }
    }
  }));
  clearInterval(sampler); clearTimeout(warmTimer); stop();
  const end = await take();
  const warm = samples.find(x => x.warmup_end) ?? null;
  const m1 = await scrape();
  const wall = (now() - t0) / 1000;
  const errs = Object.values(st.errors).reduce((a, b) => a + b, 0);
  return {
    streams: cfg.streams, requests: st.requests, completed: st.ok, rejected_429: st.r429, errors_non_429: errs, errors_by_kind: st.errors,
    requests_per_s: round(st.ok / wall, 3), generated_tokens_per_s: round(st.gen / wall, 2),
    ttft_ms: ttft.summary(), latency_ms: lat.summary(),
    rss_warmup_end_bytes: warm?.rss_bytes ?? null, rss_end_bytes: end.rss_bytes,
    rss_growth_pct: warm?.rss_bytes && end.rss_bytes ? round((end.rss_bytes - warm.rss_bytes) / warm.rss_bytes * 100, 2) : null,
    // the prefix cache grows up to --cache-mb by design: RSS less the cache's bytes (rwkv7_cache_bytes) too
    rss_less_cache_growth_pct: warm?.rss_bytes && end.rss_bytes && warm.cache_bytes !== null && end.cache_bytes !== null
      ? round(((end.rss_bytes - end.cache_bytes) - (warm.rss_bytes - warm.cache_bytes)) / (warm.rss_bytes - warm.cache_bytes) * 100, 2) : null,
    peak_rss_end_bytes: end.peak_rss_bytes, rss_samples: samples,
    server: serverReport(m0, m1), wall_s: round(wall), _metrics_done: true,
  };
}

// ------------------------------------------------------------------ main
async function main() {
  const startedAt = new Date().toISOString();
  const probe = await scrape();
  if (!probe) {
    // /metrics may be missing; make sure the server answers at all
    try { await httpGet('/'); } catch (e) { die(`cannot reach ${ORIGIN}: ${e.code ?? e.message}`, 1); }
    log('warning: GET /metrics failed; server-side numbers will be missing');
  }
  if (!cfg.model) {
    try {
      const r = await httpGet('/v1/models');
      if (r.status === 200) cfg.model = JSON.parse(r.text).data?.[0]?.id ?? null;
    } catch { /* leave it out */ }
  }
  let calib = null;
  if (args['tokens-per-char'] !== undefined) TPC = num('tokens-per-char', 1, { min: 1e-3 });
  else { calib = await calibrate(); TPC = calib.tokens_per_char; log(`tokens per character: ${TPC}`); }
  if (SCEN === 'calibrate') return { scenario: SCEN, url: ORIGIN, ...calib, started_at: startedAt };
  const m0 = await scrape();
  const t0 = now();
  const res = await { decode: scenDecode, chat: scenChat, longprompt: scenLongprompt, mixed: scenMixed, soak: scenSoak }[SCEN]();
  const dur = (now() - t0) / 1000;
  let server;
  if (res._metrics_done) { server = res.server; delete res.server; delete res._metrics_done; }
  else server = serverReport(m0, await scrape());
  return {
    scenario: SCEN, url: ORIGIN, started_at: startedAt, duration_s: round(dur),
    tokens_per_char: TPC, tokens_per_char_source: calib ? 'measured (usage.prompt_tokens / chars of a 2000-char text)' : '--tokens-per-char',
    hard_timeout_hit: hardTimeoutHit,
    result: res, server,
    config: cfg, command: ['node', 'bench/serve/loadtest.mjs', ...process.argv.slice(2)].join(' '),
  };
}

main().then(out => {
  const s = JSON.stringify(out, null, 1);
  if (args.out) writeFileSync(args.out, s + '\n');
  process.stdout.write(s + '\n');
  process.exit(0);
}, e => {
  process.stderr.write(`loadtest: ${e.stack ?? e}\n`);
  process.exit(1);
});
