// Starts `rwkv7 serve --port 0 ...` as a child process for the end-to-end tests and stops it.
// The binary is $RWKV7_CLI or <repo>/build/rwkv7. Every wait is bounded; the server listens on
// 127.0.0.1 only, and the tests talk to nothing else.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const cliPath = process.env.RWKV7_CLI || path.join(repoRoot, 'build', 'rwkv7');

const READY = /rwkv7 serve: listening on (http:\/\/127\.0\.0\.1:(\d+))/;

// True when the binary exists and knows the `serve` subcommand. (Without one, CLI11 answers
// `serve --help` with the top-level help and exit code 0, hence the look for --port.)
export function hasServe() {
  if (!existsSync(cliPath)) return false;
  const r = spawnSync(cliPath, ['serve', '--help'], { timeout: 10_000, encoding: 'utf8' });
  return r.status === 0 && /--port\b/.test(r.stdout + r.stderr);
}

// Resolves with the first of `promise` or a rejection after `ms` naming `what`.
export function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

// Starts the server; resolves to {url, port, proc, stderr(), stop()} once it prints its
// "listening on" line. stop() sends SIGTERM and resolves to the exit code (SIGKILL after 10 s,
// then the code is null and signal tells why).
export async function startServer(extraArgs = [], { readyTimeoutMs = 60_000 } = {}) {
  const proc = spawn(cliPath, ['serve', '--port', '0', ...extraArgs], {
    cwd: repoRoot,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let log = '';
  const exited = new Promise((resolve) => {
    proc.on('exit', (code, signal) => resolve({ code, signal }));
  });
  proc.stdout.on('data', (d) => { log += d; });
  const ready = new Promise((resolve, reject) => {
    proc.stderr.on('data', (d) => {
      log += d;
      const m = READY.exec(log);
      if (m) resolve({ url: m[1], port: Number(m[2]) });
    });
    proc.on('error', reject);
    exited.then(({ code, signal }) =>
      reject(new Error(`rwkv7 serve exited (code ${code}, signal ${signal}) before it was ready:\n${log}`)));
  });
  let where;
  try {
    where = await withTimeout(ready, readyTimeoutMs, `"listening on" from ${cliPath} serve`);
  } catch (e) {
    proc.kill('SIGKILL');
    throw e;
  }

  let stopping = null;
  async function stop() {
    if (!stopping) {
      stopping = (async () => {
        if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGTERM');
        let timer;
        const killer = new Promise((resolve) => {
          timer = setTimeout(() => { proc.kill('SIGKILL'); resolve(); }, 10_000);
        });
        await Promise.race([exited, killer]);
        clearTimeout(timer);
        return withTimeout(exited, 5_000, 'exit after SIGKILL');
      })();
    }
    return stopping;
  }
  return { ...where, proc, stderr: () => log, stop, exited };
}
