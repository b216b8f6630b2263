// The gateway in a real browser: the node with `gateway.upstream` in front of
// the Express example (examples/express-gateway, which keeps no sessions),
// Debian's headless Chromium signing in and out through the app's own pages.
// Then, without a browser, what the node forwards and strips, and which
// signed actions it carries out.
//
//   npm test                       (in tests/e2e/, after `npm ci` here and in ../../examples/express-gateway)
//   EDGE_SESSION_BIN=...           node binary (default ../../target/debug/edge-session)
//   CHROMIUM=...                   browser (default /usr/bin/chromium)

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import * as lib from './lib.mjs';
import { COOKIE } from './lib.mjs';

const SECRET = randomBytes(32).toString('hex');
const ALICE = `alice-${randomBytes(12).toString('hex')}`;
const BOB = `bob-${randomBytes(12).toString('hex')}`;
// 128 bits, base64url (unpadded, or padded to 24).
const NONCE = /^[A-Za-z0-9_-]{22}(==)?$/;

let work, app, node, base, browser;

before(async () => {
  work = lib.workDir('gateway');
  app = await lib.startExpressApp({
    EDGE_ACTION_SECRET: SECRET,
    EXAMPLE_USERS: `alice:admin:${ALICE},bob:member:${BOB}`,
    EXAMPLE_TEST_ROUTES: '1',
  });
  const config = lib.writeConfig(work, ['[gateway]', `upstream = "${app.url}"`, 'protect = ["/admin"]']);
  // The secret from the environment, as the example's README has it.
  node = await lib.startNode(config, { EDGE_SESSION__GATEWAY__ACTION_SECRET: SECRET });
  base = node.url;
  browser = await lib.launchBrowser(work);
});

after(() => lib.tearDown({ browser, nodes: [node], processes: [app], work }));

const newPage = () => lib.newPage(browser);
const sessionCookie = (context) => lib.sessionCookie(context, base);
const { heading } = lib;

/** The app's one-line account of who is signed in. */
async function status(page) {
  return (await page.locator('p').first().textContent()).trim();
}

/** The request headers the app received for `GET /headers` from the page. */
function seenFromPage(page) {
  return page.evaluate(async () => (await fetch('/headers')).json());
}

/** `GET /.edge/whoami` from the page: the node's own route, moved. */
function whoamiFromPage(page) {
  return page.evaluate(async () => {
    const res = await fetch('/.edge/whoami');
    return { status: res.status, body: res.ok ? await res.json() : null };
  });
}

/** Open a WebSocket to the app's /ws from the page; the first two messages. */
function webSocketFromPage(page) {
  return page.evaluate(() => new Promise((resolve, reject) => {
    const ws = new WebSocket(`${location.origin.replace(/^http/, 'ws')}/ws`);
    const got = [];
    ws.onmessage = (e) => {
      got.push(e.data);
      if (got.length === 1) ws.send('echo: ü');
      else { ws.close(); resolve(got); }
    };
    ws.onerror = () => reject(new Error('WebSocket error'));
    setTimeout(() => reject(new Error(`WebSocket: only ${JSON.stringify(got)} in 10 s`)), 10_000);
  }));
}

/** A request to the node outside the browser; `token` as the session cookie. */
function call(path, { token, method = 'GET', headers = {}, body } = {}) {
  return fetch(`${base}${path}`, {
    method,
    redirect: 'manual',
    headers: { ...headers, ...(token === undefined ? {} : { cookie: `${COOKIE}=${token}` }) },
    body,
  });
}

async function whoami(token) {
  const res = await call('/.edge/whoami', { token, headers: { accept: 'application/json' } });
  return { status: res.status, body: res.ok ? await res.json() : await res.text() };
}

/** Sign in through the app's form, outside the browser; the new token. */
async function appSignIn(user, password, token) {
  const res = await call('/login', {
    token,
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ username: user, password }).toString(),
  });
  assert.equal(res.status, 303, `app login: ${res.status} ${await res.text()}`);
  assert.equal(res.headers.get('x-edge-action'), null, 'the action headers stay between app and node');
  const set = lib.setSessionToken(res);
  assert.ok(set, `the node set ${COOKIE} for the app's login`);
  return set;
}

function assertNoActionHeaders(res, what) {
  assert.equal(res.headers.get('x-edge-action'), null, `${what}: X-Edge-Action removed`);
  assert.equal(res.headers.get('x-edge-action-signature'), null, `${what}: X-Edge-Action-Signature removed`);
}

test('sign in and out through the Express app behind the node, in a real browser', { timeout: 120_000 }, async () => {
  const { context, page } = await newPage();
  const host = new URL(base).hostname;

  // 1. Anonymous: the app's page, served through the node, and no cookie.
  const first = await page.goto(`${base}/`);
  assert.equal(first.status(), 200);
  assert.equal(await heading(page), 'Example app');
  assert.match(await status(page), /^Not signed in/);
  assert.equal(await sessionCookie(context), undefined, 'no session before login');

  // 2. The app's own login page (the node's moved to /.edge/login).
  await Promise.all([page.waitForURL(`${base}/login`), page.getByRole('link', { name: 'Sign in' }).click()]);
  assert.equal(await heading(page), 'Sign in');
  await lib.fillSignIn(page, 'alice', 'not the password');
  await Promise.all([page.waitForURL(`${base}/login`), page.getByRole('button', { name: 'Sign in' }).click()]);
  assert.equal(await page.getByRole('alert').textContent(), 'Wrong username or password.');
  assert.equal(await sessionCookie(context), undefined, 'a failed login sets no cookie');
  await lib.fillSignIn(page, 'alice', ALICE);
  await Promise.all([page.waitForURL(`${base}/`), page.getByRole('button', { name: 'Sign in' }).click()]);
  assert.equal(await status(page), 'Signed in as alice (admin)');

  // 3. The node's cookie, with the __Host- attributes, invisible to scripts.
  const cookie = await sessionCookie(context);
  assert.ok(cookie, `the node set ${COOKIE}`);
  assert.equal(cookie.secure, true, 'Secure');
  assert.equal(cookie.httpOnly, true, 'HttpOnly');
  assert.equal(cookie.sameSite, 'Strict', 'SameSite=Strict');
  assert.equal(cookie.path, '/', 'Path=/');
  assert.equal(cookie.domain, host, 'host-only: no Domain attribute');
  assert.ok(!(await page.evaluate(() => document.cookie)).includes(COOKIE), 'document.cookie cannot see the session cookie');

  // 4. What the app received: identity, never the session cookie (the
  //    app's own cookies still pass).
  await context.addCookies([{ name: 'theme', value: 'dark', domain: host, path: '/' }]);
  const seen = await seenFromPage(page);
  assert.ok(!JSON.stringify(seen).includes(cookie.value), 'the session token never reaches the app');
  assert.ok(!(seen.cookie ?? '').includes(COOKIE), `no ${COOKIE} in the app's Cookie header`);
  assert.match(seen.cookie ?? '', /(^|; )theme=dark(;|$)/, "the app's own cookie passes");
  assert.equal(seen['x-edge-user'], 'alice');
  assert.equal(seen['x-edge-role'], 'admin');
  assert.ok(seen['x-edge-session'], 'X-Edge-Session');
  assert.equal(seen['x-edge-assertion']?.split('.').length, 3, 'X-Edge-Assertion is a compact JWS');
  assert.match(seen['x-edge-nonce'] ?? '', NONCE);
  assert.equal(seen['x-forwarded-proto'], 'http');
  assert.equal(seen['x-forwarded-host'], new URL(base).host);
  assert.match(seen['x-forwarded-for'] ?? '', /127\.0\.0\.1/);
  assert.notEqual((await seenFromPage(page))['x-edge-nonce'], seen['x-edge-nonce'], 'a fresh nonce per request');

  // 5. The node's own routes under /.edge/, the protected page, the WebSocket.
  assert.deepEqual(await whoamiFromPage(page).then((w) => [w.status, w.body?.user_id]), [200, 'alice']);
  const admin = await page.goto(`${base}/admin`);
  assert.equal(admin.status(), 200);
  assert.equal(await heading(page), 'Admin');
  await page.goto(`${base}/`);
  assert.deepEqual(await webSocketFromPage(page), ['hello alice', 'echo: ü']);

  // 6. Sign out through the app: the node destroys the session and expires the cookie.
  await Promise.all([page.waitForURL(`${base}/`), page.getByRole('button', { name: 'Sign out', exact: true }).click()]);
  assert.match(await status(page), /^Not signed in/);
  assert.equal(await sessionCookie(context), undefined, 'the cookie is gone');
  assert.equal((await whoamiFromPage(page)).status, 401);
  assert.equal((await seenFromPage(page))['x-edge-user'], undefined);

  // 7. The old cookie, replayed from another browser, signs nobody in.
  const replay = await newPage();
  await replay.context.addCookies([{ ...cookie, domain: host, path: '/' }]);
  await replay.page.goto(`${base}/`);
  assert.match(await status(replay.page), /^Not signed in/, 'the old token is dead');
  assert.equal((await seenFromPage(replay.page))['x-edge-user'], undefined);

  await replay.context.close();
  await context.close();
});

test('without a session: /admin goes to the node login, identity a client sends is dropped', { timeout: 60_000 }, async () => {
  // A browser (it asks for HTML) is sent to the node's login page.
  const { context, page } = await newPage();
  const res = await page.goto(`${base}/admin`);
  const landed = new URL(page.url());
  assert.equal(landed.pathname, '/.edge/login');
  assert.equal(landed.searchParams.get('next'), '/admin');
  assert.equal((await res.request().redirectedFrom()?.response())?.status(), 303, 'a 303 from the node');
  assert.deepEqual(await webSocketFromPage(page), ['hello anonymous', 'echo: ü']);
  await context.close();

  // Anything else gets 401, and a client's own X-Edge-* headers change nothing.
  const spoof = {
    'x-edge-user': 'mallory',
    'x-edge-role': 'admin',
    'x-edge-session': 'x',
    'x-edge-assertion': 'x.y.z',
    'x-edge-nonce': 'AAAAAAAAAAAAAAAAAAAAAA',
    'X_Edge_User': 'mallory',
    'X-EDGE-Custom': '1',
  };
  assert.equal((await call('/admin', { headers: { accept: 'application/json', ...spoof } })).status, 401);
  const seen = await (await call('/headers', { headers: spoof })).json();
  for (const name of Object.keys(seen)) {
    if (name.toLowerCase().replaceAll('_', '-').startsWith('x-edge-')) {
      assert.equal(name, 'x-edge-nonce', `${name} reached the app`);
    }
  }
  assert.match(seen['x-edge-nonce'], NONCE);
  assert.notEqual(seen['x-edge-nonce'], spoof['x-edge-nonce'], "the node's own nonce, not the client's");

  // Signed in, with a role that is not admin: the node lets the request
  // through (it checks identity), the app refuses it.
  const bob = await appSignIn('bob', BOB);
  assert.equal((await call('/admin', { token: bob, headers: spoof })).status, 403);
  const asBob = await (await call('/headers', { token: bob, headers: spoof })).json();
  assert.equal(asBob['x-edge-user'], 'bob');
  assert.equal(asBob['x-edge-role'], 'member');
  assert.equal(asBob.x_edge_user, undefined);
});

test('upstream actions: carried out only when signed for the request\'s own nonce', { timeout: 60_000 }, async () => {
  // A good signature: carried out, and neither header reaches the client.
  const action = 'login; user=bob; role=member';
  const signed = await call(`/_test/sign?${new URLSearchParams({ action })}`, { method: 'POST' });
  assert.equal(signed.status, 200);
  assertNoActionHeaders(signed, 'signed login');
  const bob = lib.setSessionToken(signed);
  assert.ok(bob, 'a signed login sets the cookie');
  const { nonce, signature } = await signed.json();
  assert.match(nonce, NONCE);
  const asBob = await whoami(bob);
  assert.deepEqual([asBob.status, asBob.body.user_id, asBob.body.role], [200, 'bob', 'member']);

  // The same signature on another response (another nonce): passed on, not carried out.
  const replayed = await call(`/_test/respond?${new URLSearchParams({ action, signature })}`);
  assert.equal(replayed.status, 200, 'the response is passed on');
  assertNoActionHeaders(replayed, 'replayed login');
  assert.equal(lib.setSessionToken(replayed), undefined, 'a replayed login signs nobody in');
  const unsigned = await call(`/_test/respond?${new URLSearchParams({ action })}`);
  assert.equal(unsigned.status, 200);
  assertNoActionHeaders(unsigned, 'unsigned login');
  assert.equal(lib.setSessionToken(unsigned), undefined, 'an unsigned login signs nobody in');

  // A logout signed for a request without bob's cookie, replayed with it.
  const other = await (await call(`/_test/sign?${new URLSearchParams({ action: 'logout' })}`, { method: 'POST' })).json();
  const notOut = await call(`/_test/respond?${new URLSearchParams({ action: 'logout', signature: other.signature })}`, { token: bob, method: 'POST' });
  assert.equal(notOut.status, 200);
  assert.equal(lib.setSessionToken(notOut), undefined, 'no cookie change');
  assert.equal((await whoami(bob)).status, 200, 'a replayed logout signs nobody out');
  const noSig = await call(`/_test/respond?${new URLSearchParams({ action: 'logout-everywhere' })}`, { token: bob });
  assert.equal(noSig.status, 200);
  assert.equal((await whoami(bob)).status, 200, 'an unsigned logout-everywhere signs nobody out');

  // Login with a session already there: a new token, the old one dead.
  const bob2 = await appSignIn('bob', BOB, bob);
  assert.notEqual(bob2, bob, 'login regenerates the session');
  assert.equal((await whoami(bob)).status, 401, 'the pre-login token is dead');
  assert.equal((await whoami(bob2)).status, 200);

  // A good logout: the session is destroyed, the cookie expired.
  const out = await call('/logout', { token: bob2, method: 'POST' });
  assert.equal(out.status, 303);
  assertNoActionHeaders(out, 'logout');
  const expired = out.headers.getSetCookie().find((c) => c.startsWith(`${COOKIE}=`));
  assert.match(expired ?? '', /Max-Age=0|Expires=Thu, 01 Jan 1970/i, `the cookie is expired: ${expired}`);
  assert.equal((await whoami(bob2)).status, 401);

  // Logout everywhere: every session of that user, nobody else's.
  const [a1, a2, b3] = [await appSignIn('alice', ALICE), await appSignIn('alice', ALICE), await appSignIn('bob', BOB)];
  assert.equal((await whoami(a2)).status, 200);
  const everywhere = await call('/logout-everywhere', { token: a1, method: 'POST' });
  assert.equal(everywhere.status, 303);
  assertNoActionHeaders(everywhere, 'logout-everywhere');
  assert.equal((await whoami(a1)).status, 401);
  assert.equal((await whoami(a2)).status, 401, "alice's other session is revoked too");
  assert.equal((await whoami(b3)).status, 200, "bob's is not");
});
