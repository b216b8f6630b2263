// Forward auth as a proxy in front of an app uses it (nginx auth_request,
// Caddy forward_auth, ...): a node without `gateway.upstream`, a user signed
// in through the node's own `POST /login`, `GET /auth/check` with that
// cookie, and the `X-Edge-Assertion` it returns verified the way an app
// would, with the `jose` package against `/.well-known/jwks.json`.
//
//   npm test                       (in tests/e2e/, after `npm ci`)
//   EDGE_SESSION_BIN=...           node binary (default ../../target/debug/edge-session)

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { SignJWT, createLocalJWKSet, decodeProtectedHeader, jwtVerify } from 'jose';
import * as lib from './lib.mjs';
import { COOKIE } from './lib.mjs';

const USER = 'alice';
const PASSWORD = `e2e-${randomBytes(12).toString('hex')}`;
// The contract's defaults: the first node sets none of them.
const ISSUER = 'edge-session';
const AUDIENCE = 'edge-session-upstream';
const TTL_SECS = 60;

let work, users, config, node;

before(async () => {
  work = lib.workDir('assertion');
  users = ['[[auth.users]]', `user_id = "${USER}"`, `password_hash = "${lib.hashPassword(PASSWORD)}"`, 'role = "admin"'];
  config = lib.writeConfig(work, users);
  node = await lib.startNode(config);
});

after(() => lib.tearDown({ nodes: [node], work }));

/** Sign in through the node's JSON login; the session token. */
async function signIn(base) {
  const res = await fetch(`${base}/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/json' },
    body: JSON.stringify({ username: USER, password: PASSWORD }),
  });
  assert.equal(res.status, 200, await res.text());
  const token = lib.setSessionToken(res);
  assert.ok(token, `POST /login sets ${COOKIE}`);
  return token;
}

async function check(base, token, query = '', method = 'GET') {
  const res = await fetch(`${base}/auth/check${query}`, {
    method,
    headers: token === undefined ? {} : { cookie: `${COOKIE}=${token}` },
  });
  await res.arrayBuffer();
  assert.deepEqual(res.headers.getSetCookie(), [], '/auth/check never writes a cookie');
  return res;
}

async function jwks(base) {
  const res = await fetch(`${base}/.well-known/jwks.json`);
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type'), /json/);
  const set = await res.json();
  assert.ok(Array.isArray(set.keys) && set.keys.length > 0, 'a JWK Set with keys');
  for (const key of set.keys) {
    assert.equal(key.kty, 'OKP');
    assert.equal(key.crv, 'Ed25519');
    assert.ok(key.kid, 'each key has a kid');
    assert.equal(typeof key.x, 'string');
    assert.equal(key.d, undefined, 'no private key material');
  }
  return set;
}

/** The assertion for `token`, with the session handle it names. */
async function assertion(base, token) {
  const res = await check(base, token);
  assert.equal(res.status, 200);
  const jwt = res.headers.get('x-edge-assertion');
  assert.ok(jwt, 'X-Edge-Assertion');
  return { jwt, handle: res.headers.get('x-edge-session') };
}

function verify(jwt, set, { issuer = ISSUER, audience = AUDIENCE } = {}) {
  return jwtVerify(jwt, createLocalJWKSet(set), { issuer, audience, algorithms: ['EdDSA'] });
}

const b64url = (obj) => Buffer.from(JSON.stringify(obj)).toString('base64url');
const decode = (part) => JSON.parse(Buffer.from(part, 'base64url').toString('utf8'));

test('GET /auth/check: 401 without a signed-in session, the identity headers with one', async () => {
  const base = node.url;
  assert.equal((await check(base, undefined)).status, 401, 'no cookie');
  assert.equal((await check(base, 'not-a-token')).status, 401, 'a malformed cookie');
  assert.equal((await check(base, randomBytes(32).toString('base64url'))).status, 401, 'an unknown token');
  assert.equal((await check(base, undefined, '?role=admin')).status, 401, 'no cookie, with a role asked for');

  const token = await signIn(base);
  const res = await check(base, token);
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('x-edge-user'), USER);
  assert.equal(res.headers.get('x-edge-role'), 'admin');
  assert.ok(res.headers.get('x-edge-session'), 'X-Edge-Session');
  assert.ok(res.headers.get('x-edge-assertion'), 'X-Edge-Assertion');
  assert.equal(res.headers.get('x-edge-session'), (await check(base, token)).headers.get('x-edge-session'), 'the same handle each time');

  // X-Edge-Session is the handle the user's own session listing shows.
  const mine = await (await fetch(`${base}/me/sessions`, { headers: { cookie: `${COOKIE}=${token}` } })).json();
  assert.equal(mine.find((s) => s.current).handle, res.headers.get('x-edge-session'));

  assert.equal((await check(base, token, '?role=admin')).status, 200, 'the right role');
  assert.equal((await check(base, token, '?role=auditor')).status, 403, 'the wrong role');
  // Proxies forward the original method (Envoy's ext_authz, Traefik).
  assert.equal((await check(base, token, '', 'POST')).status, 200, 'any method');

  // Signed out: the same cookie is refused.
  const out = await fetch(`${base}/logout`, { method: 'POST', headers: { cookie: `${COOKIE}=${token}`, accept: 'application/json' } });
  assert.ok(out.status < 400, `logout: ${out.status}`);
  assert.equal((await check(base, token)).status, 401, 'a destroyed session');
});

test('X-Edge-Assertion verifies against /.well-known/jwks.json with jose', async () => {
  const base = node.url;
  const set = await jwks(base);
  const before = Math.floor(Date.now() / 1000);
  const { jwt, handle } = await assertion(base, await signIn(base));

  const { payload, protectedHeader } = await verify(jwt, set);
  assert.equal(protectedHeader.alg, 'EdDSA');
  assert.ok(set.keys.some((k) => k.kid === protectedHeader.kid), 'the header kid names a published key');
  assert.equal(payload.iss, ISSUER);
  assert.equal(payload.aud, AUDIENCE);
  assert.equal(payload.sub, USER);
  assert.equal(payload.role, 'admin');
  assert.equal(payload.sid, handle, 'sid is X-Edge-Session');
  assert.ok(Number.isInteger(payload.iat) && Number.isInteger(payload.exp));
  assert.ok(payload.exp > payload.iat, 'exp after iat');
  assert.ok(payload.exp - payload.iat <= TTL_SECS, `exp - iat = ${payload.exp - payload.iat} s, at most ${TTL_SECS}`);
  // A few seconds of leeway: the clock is the same, the rounding may not be.
  assert.ok(payload.iat >= before - 5 && payload.iat <= Math.ceil(Date.now() / 1000) + 5, 'iat is now');
});

test('a tampered or foreign assertion fails verification', async () => {
  const base = node.url;
  const set = await jwks(base);
  const { jwt } = await assertion(base, await signIn(base));
  const [header, payload, signature] = jwt.split('.');
  await verify(jwt, set);

  const rejects = (token, code, what) => assert.rejects(verify(token, set), (e) => {
    assert.equal(e.code, code, `${what}: ${e.code} ${e.message}`);
    return true;
  }, what);

  // Another subject, the signature kept.
  await rejects(`${header}.${b64url({ ...decode(payload), sub: 'mallory' })}.${signature}`,
    'ERR_JWS_SIGNATURE_VERIFICATION_FAILED', 'a changed sub');
  await rejects(`${header}.${b64url({ ...decode(payload), role: 'root' })}.${signature}`,
    'ERR_JWS_SIGNATURE_VERIFICATION_FAILED', 'a changed role');
  // One signature character changed (mid-string: the last one carries padding bits).
  const i = Math.floor(signature.length / 2);
  const flipped = signature.slice(0, i) + (signature[i] === 'A' ? 'B' : 'A') + signature.slice(i + 1);
  await rejects(`${header}.${payload}.${flipped}`, 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED', 'a changed signature');
  // Unsigned.
  await rejects(`${b64url({ alg: 'none', kid: decodeProtectedHeader(jwt).kid })}.${payload}.`,
    'ERR_JOSE_ALG_NOT_ALLOWED', 'alg none');
  // Signed by another Ed25519 key that claims the node's kid.
  const { privateKey } = generateKeyPairSync('ed25519');
  const forged = await new SignJWT(decode(payload))
    .setProtectedHeader({ alg: 'EdDSA', kid: decodeProtectedHeader(jwt).kid })
    .sign(privateKey);
  await rejects(forged, 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED', 'another key');
  // Good, but meant for somebody else.
  await assert.rejects(verify(jwt, set, { audience: 'another-app' }), { code: 'ERR_JWT_CLAIM_VALIDATION_FAILED' });
  await assert.rejects(verify(jwt, set, { issuer: 'another-issuer' }), { code: 'ERR_JWT_CLAIM_VALIDATION_FAILED' });
});

test('the generated signing key is kept across restarts, readable by the owner only', async () => {
  const set = await jwks(node.url);
  const { jwt } = await assertion(node.url, await signIn(node.url));
  await lib.stopNode(node);
  node = await lib.startNode(config);
  assert.deepEqual(await jwks(node.url), set, 'the same keys after a restart');
  await verify(jwt, await jwks(node.url));

  // The key is "generated into data_dir (mode 0600)"; whatever the file is
  // called, a PEM private key there is not for group or others.
  for (const path of files(join(work, 'data'))) {
    const head = readFileSync(path).subarray(0, 64).toString('latin1');
    if (head.includes('PRIVATE KEY')) {
      assert.equal(statSync(path).mode & 0o077, 0, `${path} is mode ${(statSync(path).mode & 0o777).toString(8)}`);
    }
  }
});

test('a configured signing_key, issuer, audience and assertion_ttl_secs', async () => {
  const dir = join(work, 'configured');
  mkdirSync(dir);
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  const pem = join(dir, 'signing-key.pem');
  writeFileSync(pem, privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
  const other = lib.writeConfig(dir, [
    ...users,
    '[gateway]',
    `signing_key = "${pem}"`,
    'issuer = "https://sessions.example.test"',
    'audience = "inventory"',
    'assertion_ttl_secs = 5',
  ]);
  const configured = await lib.startNode(other);
  try {
    const set = await jwks(configured.url);
    assert.ok(set.keys.some((k) => k.x === publicKey.export({ format: 'jwk' }).x), 'the configured key is published');
    const { jwt, handle } = await assertion(configured.url, await signIn(configured.url));
    // Verified with the public key alone, as an app handed the key would.
    const { payload } = await jwtVerify(jwt, publicKey, {
      issuer: 'https://sessions.example.test',
      audience: 'inventory',
      algorithms: ['EdDSA'],
    });
    assert.equal(payload.sub, USER);
    assert.equal(payload.sid, handle);
    assert.ok(payload.exp - payload.iat <= 5, `exp - iat = ${payload.exp - payload.iat} s, at most 5`);
    await assert.rejects(verify(jwt, set), { code: 'ERR_JWT_CLAIM_VALIDATION_FAILED' }, 'not for the default audience');
  } finally {
    await lib.stopNode(configured);
  }
});

/** Every regular file under `dir`. */
function files(dir) {
  return readdirSync(dir, { withFileTypes: true, recursive: true })
    .filter((e) => e.isFile())
    .map((e) => join(e.parentPath ?? e.path, e.name));
}
