// The chat page at GET / driven in headless Chromium (playwright-core + Debian's /usr/bin/chromium):
// a streamed reply, Stop during a long reply, a second turn keeping the first, a screenshot.
// The shipped model writes thousands of tokens/s and chat replies end at a blank line, so the
// streaming tests slow the browser's network (DevTools throttling) to see the text grow and to
// press Stop while the reply is still coming; greedy sampling (temperature 0) fixes the replies.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { startServer, hasServe } from './server_harness.mjs';

const CHROMIUM = process.env.RWKV7_CHROMIUM || '/usr/bin/chromium';
const skip = hasServe() ? false : 'the rwkv7 binary has no `serve` subcommand (not built yet)';
const T = { timeout: 30_000 };
const artifacts = process.env.RWKV7_TEST_ARTIFACTS || os.tmpdir();

// Resolves after `ms`.
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Chromium with a fresh profile, allowed to reach `url` only; returns {browser, page, profile}.
async function openBrowser(url) {
  const profile = mkdtempSync(path.join(os.tmpdir(), 'rwkv7-chromium-'));
  const browser = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM, headless: true, timeout: 30_000,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    viewport: { width: 1000, height: 720 },
  });
  await browser.route('**/*', (route) => (route.request().url().startsWith(url)
    ? route.continue() : route.abort()));
  const page = browser.pages()[0] ?? await browser.newPage();
  page.setDefaultTimeout(15_000);
  return { browser, page, profile };
}

describe('chat page in headless Chromium', { skip }, () => {
  let server, browser, page, profile, cdp;
  const errors = [];
  before(async () => {
    server = await startServer();
    ({ browser, page, profile } = await openBrowser(server.url));
    cdp = await browser.newCDPSession(page);
    await cdp.send('Network.enable');
    page.on('pageerror', (e) => errors.push(String(e)));
    page.on('console', (m) => {  // a 4xx answer is logged by Chromium itself: expected in one test
      if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) errors.push(m.text());
    });
  });
  after(async () => {
    await browser?.close();
    if (profile) rmSync(profile, { recursive: true, force: true });
    await server?.stop();
  });

  // Lengths of the last assistant message's text, sampled at every DOM change while it streams.
  async function watchLastReply() {
    await page.evaluate(() => {
      window.__lengths = [];
      const obs = new MutationObserver(() => {
        const all = document.querySelectorAll('#messages .msg.assistant');
        const last = all[all.length - 1];
        if (last) window.__lengths.push(last.textContent.length);
      });
      obs.observe(document.getElementById('messages'), { childList: true, subtree: true, characterData: true });
    });
  }
  const lengths = () => page.evaluate(() => window.__lengths);
  // Bytes per second the page may receive; -1: no limit. An SSE chunk of one token is ~230 bytes.
  const throttle = (bytesPerSecond) => cdp.send('Network.emulateNetworkConditions', {
    offline: false, latency: 0, downloadThroughput: bytesPerSecond, uploadThroughput: -1 });
  const assistants = () => page.locator('#messages .msg.assistant');
  const users = () => page.locator('#messages .msg.user');
  const idle = () => page.waitForFunction(() => !document.getElementById('send').disabled
    && document.getElementById('stop').disabled && !document.querySelector('.msg.streaming'));

  test('GET / serves the page; it learns the model id', T, async () => {
    const r = await page.goto(`${server.url}/`);
    assert.equal(r.status(), 200);
    assert.match(r.headers()['content-type'], /^text\/html/);
    await page.waitForFunction(() => /rwkv7-/.test(document.getElementById('model').textContent));
    for (const id of ['messages', 'input', 'send', 'stop', 'stats', 'new-chat', 'settings',
      'temperature', 'max-tokens']) {
      assert.equal(await page.locator(`#${id}`).count(), 1, `#${id}`);
    }
    assert.ok(await page.locator('#stop').isDisabled());
  });

  test('a message gets a streamed reply and stats', T, async () => {
    await page.locator('#settings summary').click();
    await page.fill('#temperature', '0');
    await page.fill('#max-tokens', '200');
    await throttle(8 * 1024);
    await watchLastReply();
    await page.fill('#input', 'Good morrow, sweet prince.');
    await page.click('#send');
    await idle();
    assert.equal(await users().count(), 1);
    assert.equal(await users().first().textContent(), 'Good morrow, sweet prince.');
    const reply = await assistants().last().textContent();
    assert.ok(reply.length > 0, 'empty reply');
    const seen = new Set((await lengths()).filter((n) => n > 0));
    assert.ok(seen.size >= 2, `text did not grow while streaming: lengths ${[...seen]}`);
    assert.match(await page.textContent('#stats'), /\d+ tokens/);
    assert.equal(await page.locator('.msg.error').count(), 0);
  });

  test('Stop ends a long reply and the page is ready again', T, async () => {
    await page.fill('#max-tokens', '4096');
    await throttle(2 * 1024);  // a reply of 40 tokens then takes ~5 s to arrive
    await page.fill('#input', 'What say you?');
    await page.click('#send');
    await page.waitForFunction(() => {
      const all = document.querySelectorAll('#messages .msg.assistant');
      return all.length === 2 && all[1].textContent.length > 0;
    });
    assert.ok(await page.locator('#stop').isEnabled());
    await page.click('#stop');
    await idle();
    const stopped = (await assistants().last().textContent()).length;
    assert.ok(stopped > 0);
    await sleep(1_000);
    assert.equal((await assistants().last().textContent()).length, stopped, 'text grew after Stop');
    assert.match(await page.textContent('#stats'), /stopped/);
    assert.ok(await page.locator('#send').isEnabled());
    await throttle(-1);
  });

  test('a further turn keeps the conversation and sends it whole', T, async () => {
    await page.fill('#max-tokens', '30');
    const sent = page.waitForRequest((r) => r.url().endsWith('/v1/chat/completions'));
    await page.fill('#input', 'And then?');
    await page.press('#input', 'Enter');
    const body = (await sent).postDataJSON();
    await idle();
    assert.deepEqual(body.messages.map((m) => m.role), ['user', 'assistant', 'user', 'assistant', 'user']);
    assert.equal(body.messages[4].content, 'And then?');
    assert.equal(body.stream, true);
    assert.equal(body.max_tokens, 30);
    assert.match(body.model, /^rwkv7-/);
    assert.deepEqual(await users().allTextContents(),
      ['Good morrow, sweet prince.', 'What say you?', 'And then?']);
    assert.equal(await assistants().count(), 3);
    assert.ok((await assistants().last().textContent()).length > 0);
    mkdirSync(artifacts, { recursive: true });
    await page.screenshot({ path: path.join(artifacts, 'rwkv7-chat-page.png') });
  });

  test('a server error is shown in the conversation', T, async () => {
    await page.fill('#temperature', '-3');  // rejected by the server: 400
    await page.fill('#input', 'Hello?');
    await page.click('#send');
    await idle();
    const err = page.locator('.msg.error');
    assert.equal(await err.count(), 1);
    assert.match(await err.textContent(), /Error 400/);
    await page.fill('#temperature', '0');
  });

  test('New chat clears the conversation', T, async () => {
    await page.click('#new-chat');
    assert.equal(await page.locator('#messages .msg').count(), 0);
    await page.fill('#max-tokens', '10');
    const sent = page.waitForRequest((r) => r.url().endsWith('/v1/chat/completions'));
    await page.fill('#input', 'Anew.');
    await page.click('#send');
    assert.deepEqual((await sent).postDataJSON().messages, [{ role: 'user', content: 'Anew.' }]);
    await idle();
    assert.deepEqual(errors, [], 'errors in the page console');
  });
});

describe('chat page with --api-key', { skip }, () => {
  let server, browser, page, profile;
  before(async () => {
    server = await startServer(['--api-key', 'secret']);
    ({ browser, page, profile } = await openBrowser(server.url));
  });
  after(async () => {
    await browser?.close();
    if (profile) rmSync(profile, { recursive: true, force: true });
    await server?.stop();
  });

  test('shows the 401, then works with the key from the settings', T, async () => {
    await page.goto(`${server.url}/`);
    await page.waitForFunction(() => /401/.test(document.getElementById('model').textContent));
    await page.locator('#settings summary').click();
    await page.fill('#api-key', 'secret');
    await page.press('#api-key', 'Tab');  // "change" fires on leaving the field
    await page.waitForFunction(() => /rwkv7-/.test(document.getElementById('model').textContent));
    await page.fill('#max-tokens', '8');
    await page.fill('#input', 'Who goes there?');
    await page.click('#send');
    await page.waitForFunction(() => !document.querySelector('.msg.streaming')
      && document.querySelector('.msg.assistant'));
    assert.equal(await page.locator('.msg.error').count(), 0);
    assert.ok((await page.locator('.msg.assistant').textContent()).length > 0);
    // The key is kept in this browser for the next visit.
    await page.reload();
    assert.equal(await page.inputValue('#api-key'), 'secret');
    await page.waitForFunction(() => /rwkv7-/.test(document.getElementById('model').textContent));
  });
});
