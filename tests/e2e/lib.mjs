// What the end-to-end tests share: the node binary and how to start and stop
// it, the Express example, Debian's Chromium with the flags this machine
// needs, the session cookie as the browser keeps it, and the steps the
// test files share: a work directory and its removal, a fresh page, a
// page's heading and the login form's fields.
//
//   EDGE_SESSION_BIN=...   node binary (default ../../target/debug/edge-session)
//   CHROMIUM=...           browser (default /usr/bin/chromium)

import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const here = dirname(fileURLToPath(import.meta.url));
export const BIN = process.env.EDGE_SESSION_BIN ?? resolve(here, '../../target/debug/edge-session');
export const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
export const EXPRESS_APP = resolve(here, '../../examples/express-gateway');
export const COOKIE = '__Host-sid';

// Exactly the flags this machine needs (no internet: without them Chromium
// floods refused connections) and a fresh profile; Playwright's own
// defaults are off, so the only flag added is its control pipe.
const CHROMIUM_FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

/**
 * Start `command`; resolves once a line of its stdout matches `listening`
 * (whose first group is the URL) with `{ child, url, stderr() }`.
 */
export function startProcess(name, command, args, { env = {}, cwd, listening }) {
  return new Promise((resolveUrl, reject) => {
    const child = spawn(command, args, {
      cwd,
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    const timer = setTimeout(() => reject(new Error(`${name}: no listening line in 60 s:\n${out}${err}`)), 60_000);
    child.stderr.on('data', (d) => { err += d; });
    child.stdout.on('data', (d) => {
      out += d;
      const m = out.match(listening);
      if (m) {
        clearTimeout(timer);
        resolveUrl({ child, url: m[1], stderr: () => err });
      }
    });
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(new Error(`${name}: ${e.message}`));
    });
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${name} exited (${code}) before listening:\n${err}`));
    });
  });
}

/** The node on a free loopback port with `config`; `env` on top. */
export function startNode(config, env = {}) {
  return startProcess('node', BIN, ['serve', '--config', config], {
    env: { EDGE_SESSION__SERVER__LISTEN: '127.0.0.1:0', RUST_LOG: 'warn', ...env },
    listening: /^edge-session listening on (http:\/\/\S+)$/m,
  });
}

/** The Express example on a free loopback port. */
export function startExpressApp(env) {
  return startProcess('express app', process.execPath, ['app.js'], {
    cwd: EXPRESS_APP,
    env: { PORT: '0', ...env },
    listening: /^listening on (http:\/\/\S+)$/m,
  });
}

/** SIGTERM; the node must exit 0 (a clean shutdown). */
export async function stopNode(node) {
  if (!node || node.child.exitCode !== null) return;
  const exited = new Promise((r) => node.child.on('exit', (code, signal) => r({ code, signal })));
  node.child.kill('SIGTERM');
  const { code } = await exited;
  assert.equal(code, 0, `node exit status after SIGTERM:\n${node.stderr()}`);
}

export async function stopProcess(proc) {
  if (!proc || proc.child.exitCode !== null) return;
  const exited = new Promise((r) => proc.child.on('exit', r));
  proc.child.kill('SIGTERM');
  await exited;
}

/** The argon2id hash the node itself makes of `password`. */
export function hashPassword(password) {
  const hashed = spawnSync(BIN, ['hash-password'], { input: `${password}\n`, encoding: 'utf8' });
  assert.equal(hashed.status, 0, `hash-password failed: ${hashed.stderr ?? hashed.error}`);
  return hashed.stdout.trim();
}

/** A config file in `work`: a data_dir there, two workers, `lines` after. */
export function writeConfig(work, lines, name = 'config.toml') {
  const path = join(work, name);
  writeFileSync(path, [
    `data_dir = "${join(work, 'data')}"`,
    '[server]', 'workers = 2', 'shutdown_timeout_secs = 5',
    ...lines,
    '',
  ].join('\n'));
  return path;
}

/** Headless Chromium with a fresh profile in `work`. */
export function launchBrowser(work) {
  return chromium.launch({
    executablePath: CHROMIUM,
    ignoreDefaultArgs: true,
    args: [...CHROMIUM_FLAGS, `--user-data-dir=${join(work, 'chromium-profile')}`, '--remote-debugging-pipe'],
  });
}

/** The session cookie in the context's cookie store. (All cookies, filtered
 * here: some Playwright versions leave Secure cookies out of
 * `cookies(url)` for an http://127.0.0.1 URL, though Chromium sends them.) */
export async function sessionCookie(context, base) {
  const host = new URL(base).hostname;
  const cookies = await context.cookies();
  return cookies.find((c) => c.name === COOKIE && c.domain === host);
}

/** The session token a response sets, or undefined. */
export function setSessionToken(res) {
  for (const line of res.headers.getSetCookie()) {
    const [pair] = line.split(';');
    const eq = pair.indexOf('=');
    if (pair.slice(0, eq).trim() === COOKIE) return pair.slice(eq + 1).trim();
  }
  return undefined;
}

/** A fresh temporary directory for one test file's node, config and profile. */
export function workDir(name) {
  return mkdtempSync(join(tmpdir(), `edge-session-${name}-`));
}

/** Close the browser, stop the nodes and other processes, remove `work`:
 * each only if it was started, so a failed `before` still cleans up. */
export async function tearDown({ browser, nodes = [], processes = [], work }) {
  await browser?.close();
  for (const node of nodes) await stopNode(node);
  for (const proc of processes) await stopProcess(proc);
  if (work) rmSync(work, { recursive: true, force: true });
}

/** A new browser context (960 by 720) and a page in it. */
export async function newPage(browser) {
  const context = await browser.newContext({ viewport: { width: 960, height: 720 } });
  return { context, page: await context.newPage() };
}

/** The page's first heading, trimmed. */
export async function heading(page) {
  return (await page.locator('h1').textContent()).trim();
}

/** Fill a sign-in form's username and password (without sending it). */
export async function fillSignIn(page, username, password) {
  await page.getByLabel('Username').fill(username);
  await page.getByLabel('Password').fill(password);
}
