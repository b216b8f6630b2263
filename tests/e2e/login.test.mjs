// The login flow in a real browser: Debian's headless Chromium, driven by
// playwright-core, against the edge-session binary (embedded mode, port 0,
// a temporary data_dir, one user whose argon2id hash the binary makes).
//
//   npm test                       (in tests/e2e/, after `npm ci`)
//   EDGE_SESSION_BIN=...           node binary (default ../../target/debug/edge-session)
//   CHROMIUM=...                   browser (default /usr/bin/chromium)
//   E2E_SCREENSHOT_DIR=...         where the screenshots go (default ../../docs/screenshots)
//
// Chromium's flags and the node's start are in lib.mjs, shared with the
// gateway tests.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { randomBytes } from 'node:crypto';
import * as lib from './lib.mjs';
import { COOKIE } from './lib.mjs';

const SHOTS = resolve(process.env.E2E_SCREENSHOT_DIR ?? join(lib.here, '../../docs/screenshots'));
const USER = 'alice';
const PASSWORD = `e2e-${randomBytes(12).toString('hex')}`;
const API_KEY = `e2e-${randomBytes(16).toString('hex')}`;

let work, node, base, browser;

before(async () => {
  work = lib.workDir('e2e');
  const config = lib.writeConfig(work, [
    '[api]', `keys = ["${API_KEY}"]`,
    '[[auth.users]]', `user_id = "${USER}"`, `password_hash = "${lib.hashPassword(PASSWORD)}"`, 'role = "admin"',
  ]);
  node = await lib.startNode(config);
  base = node.url;
  browser = await lib.launchBrowser(work);
  mkdirSync(SHOTS, { recursive: true });
});

after(() => lib.tearDown({ browser, nodes: [node], work }));

const newPage = () => lib.newPage(browser);
const sessionCookie = (context) => lib.sessionCookie(context, base);
const { heading } = lib;

async function signIn(page) {
  await lib.fillSignIn(page, USER, PASSWORD);
  await Promise.all([page.waitForURL(`${base}/`), page.getByRole('button', { name: 'Sign in' }).click()]);
  assert.equal(await heading(page), 'Signed in');
}

/** `GET /whoami` with the page's cookies (same origin, so they go along). */
async function whoamiStatus(page) {
  return page.evaluate(async () => (await fetch('/whoami')).status);
}

/** A real pre-login session from the service API (`POST /v1/sessions`):
 * what an attacker obtains to plant in a victim's browser. */
async function preLoginSession() {
  const res = await fetch(`${base}/v1/sessions`, { method: 'POST', headers: { authorization: `Bearer ${API_KEY}` } });
  assert.equal(res.status, 201);
  return (await res.json()).token;
}

/** `GET /v1/session` for `token`: 200 while it names a live session. */
async function serviceStatus(token) {
  const res = await fetch(`${base}/v1/session`, {
    headers: { authorization: `Bearer ${API_KEY}`, 'x-session-token': token },
  });
  return res.status;
}

function sessionRows(page) {
  return page.locator('table tbody tr');
}

test('login, session listing, revocation and logout in a real browser', { timeout: 180_000 }, async () => {
  // 1. An anonymous visit: the login page, and no cookie at all (nothing is
  //    stored for a visitor with nothing to keep).
  const a = await newPage();
  const first = await a.page.goto(`${base}/`);
  assert.equal(first.status(), 200);
  assert.match(first.headers()['cache-control'], /no-store/);
  assert.equal(first.headers()['set-cookie'], undefined, 'GET / sets no cookie');
  assert.equal(await heading(a.page), 'Sign in');
  assert.equal(await sessionCookie(a.context), undefined, 'no session before login');
  assert.equal(await a.page.evaluate(() => document.activeElement?.id), 'username', 'the username field has focus');
  await a.page.screenshot({ path: join(SHOTS, 'login.png') });

  //    Fixation: an attacker obtains a real pre-login session and plants its
  //    token in the victim's browser (here, in context a).
  const planted = await preLoginSession();
  assert.equal(await serviceStatus(planted), 200, 'the planted session is live before login');
  const host = new URL(base).hostname;
  await a.context.addCookies([
    { name: COOKIE, value: planted, domain: host, path: '/', secure: true, httpOnly: true, sameSite: 'Strict' },
  ]);
  await a.page.reload();
  assert.equal(await heading(a.page), 'Sign in');
  const anonymous = await sessionCookie(a.context);
  assert.equal(anonymous?.value, planted, `the browser carries the planted ${COOKIE} (an http://127.0.0.1 origin counts as secure)`);

  // 2. Sign in through the form: a new cookie value, invisible to scripts,
  //    with the __Host- attributes.
  await signIn(a.page);
  const signedIn = await sessionCookie(a.context);
  assert.ok(signedIn);
  assert.notEqual(signedIn.value, anonymous.value, 'signing in issues a new session token');
  assert.ok(!(await a.page.evaluate(() => document.cookie)).includes(COOKIE), 'document.cookie cannot see the session cookie');
  assert.equal(signedIn.name, '__Host-sid');
  assert.equal(signedIn.secure, true, 'Secure');
  assert.equal(signedIn.httpOnly, true, 'HttpOnly');
  assert.equal(signedIn.sameSite, 'Strict', 'SameSite=Strict');
  assert.equal(signedIn.path, '/', 'Path=/');
  assert.equal(signedIn.domain, new URL(base).hostname, 'host-only: no Domain attribute');
  assert.equal(signedIn.expires, -1, 'a browser-session cookie');
  assert.equal(await whoamiStatus(a.page), 200);

  // 3. The planted pre-login token, replayed by the attacker from a second
  //    browser context, is dead: it signs nobody in, anywhere.
  const b = await newPage();
  await b.context.addCookies([
    { ...anonymous, domain: host, path: '/' },
  ]);
  await b.page.goto(`${base}/`);
  assert.equal(await heading(b.page), 'Sign in', 'the old token does not sign anyone in');
  assert.equal(await whoamiStatus(b.page), 401);
  assert.equal(await serviceStatus(planted), 404, 'the planted session is gone');
  assert.equal((await sessionCookie(b.context)).value, planted, 'a read route issues nothing in its place');

  // 4. The second context signs in: both list both sessions, each marking its own.
  await signIn(b.page);
  await a.page.reload();
  for (const { page } of [a, b]) {
    await assert.doesNotReject(sessionRows(page).first().waitFor());
    assert.equal(await sessionRows(page).count(), 2, 'my sessions lists both browsers');
    assert.equal(await page.locator('tbody .tag', { hasText: 'This browser' }).count(), 1);
  }
  // Each row says which device it is: this browser's own row names the
  // browser and OS Chromium's User-Agent says it is.
  const agent = await a.page.evaluate(() => navigator.userAgent);
  const major = agent.match(/Chrome\/(\d+)/)[1];
  const here = sessionRows(a.page).filter({ has: a.page.locator('.tag', { hasText: 'This browser' }) });
  assert.match(await here.locator('td.device').innerText(), new RegExp(`Chrome ${major} on Linux · 127\\.0\\.0\\.1`));
  const listed = async (page) => page.evaluate(async () => (await fetch('/me/sessions')).json());
  const [fromA, fromB] = [await listed(a.page), await listed(b.page)];
  assert.deepEqual(fromA.map((s) => s.handle).sort(), fromB.map((s) => s.handle).sort());
  const currentA = fromA.find((s) => s.current).handle;
  const currentB = fromB.find((s) => s.current).handle;
  assert.notEqual(currentA, currentB);
  await a.page.screenshot({ path: join(SHOTS, 'signed-in.png') });

  // 5. Revoke the other browser's session from the page: that browser is signed out.
  const otherRow = sessionRows(a.page).filter({ hasNot: a.page.locator('.tag') });
  await Promise.all([a.page.waitForURL(`${base}/`), otherRow.getByRole('button', { name: /Sign out/ }).click()]);
  assert.equal(await heading(a.page), 'Signed in');
  assert.equal(await sessionRows(a.page).count(), 1, 'one session left');
  assert.equal((await listed(a.page))[0].handle, currentA, 'the one left is this browser');
  await b.page.reload();
  assert.equal(await heading(b.page), 'Sign in', 'the revoked browser is signed out');
  assert.equal(await whoamiStatus(b.page), 401);

  // 6. Sign out; the back button does not bring the signed-in page back.
  //    (The page to go back to is at a URL of its own: the logout's redirect
  //    to `/` would invalidate a cached `/` even without no-store.)
  const signedInPage = await a.page.goto(`${base}/?view=sessions`);
  assert.equal(await heading(a.page), 'Signed in');
  assert.match(signedInPage.headers()['cache-control'], /no-store/);
  await Promise.all([
    a.page.waitForURL(`${base}/`),
    a.page.locator('form[action="/logout"] button').click(),
  ]);
  assert.equal(await heading(a.page), 'Sign in');
  assert.equal(await whoamiStatus(a.page), 401);
  // 'commit': a page restored from the back/forward cache fires no load event.
  await a.page.goBack({ waitUntil: 'commit' });
  assert.equal(a.page.url(), `${base}/?view=sessions`);
  assert.equal(await heading(a.page), 'Sign in', 'the back button shows no signed-in page');
  assert.equal(await a.page.getByText(USER, { exact: true }).count(), 0);

  await a.context.close();
  await b.context.close();
});

test('the login page works with JavaScript turned off', { timeout: 60_000 }, async () => {
  const context = await browser.newContext({ javaScriptEnabled: false });
  const page = await context.newPage();
  await page.goto(`${base}/`);
  assert.equal(await heading(page), 'Sign in');
  await lib.fillSignIn(page, USER, 'not the password');
  await Promise.all([page.waitForURL(`${base}/login`), page.getByRole('button', { name: 'Sign in' }).click()]);
  assert.equal(await page.getByRole('alert').textContent(), 'Wrong username or password.');
  await signIn(page);
  await Promise.all([page.waitForURL(`${base}/`), page.locator('form[action="/logout"] button').click()]);
  assert.equal(await heading(page), 'Sign in');
  await context.close();
});
