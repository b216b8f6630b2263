// An Express app behind the edge-session gateway. It keeps no sessions: the
// node in front of it does. Identity arrives as X-Edge-User / X-Edge-Role on
// every request; signing in and out are answers the app signs with the
// shared action secret, and the node carries them out (see README.md).
'use strict';

const crypto = require('node:crypto');
const http = require('node:http');
const { promisify } = require('node:util');
const express = require('express');
const { WebSocketServer } = require('ws');

const scrypt = promisify(crypto.scrypt);

const secret = process.env.EDGE_ACTION_SECRET ?? '';
if (Buffer.byteLength(secret) < 32) {
  console.error('EDGE_ACTION_SECRET must be set to the node\'s gateway.action_secret (at least 32 bytes)');
  process.exit(1);
}

// "user:role:password,...". A real app keeps only each salt and hash in its
// database; this demo hashes its users at start.
const users = new Map();
for (const entry of (process.env.EXAMPLE_USERS ?? 'alice:admin:wonderland,bob:member:builder').split(',')) {
  const [id, role, ...password] = entry.split(':');
  const salt = crypto.randomBytes(16);
  users.set(id, { role, salt, hash: crypto.scryptSync(password.join(':'), salt, 32) });
}
// Unknown names cost a hash too, so timing does not tell which names exist.
const nobody = { salt: crypto.randomBytes(16), hash: crypto.randomBytes(32) };

async function checkPassword(id, password) {
  const user = users.get(id) ?? nobody;
  const hash = await scrypt(String(password ?? ''), user.salt, 32);
  return crypto.timingSafeEqual(hash, user.hash) && user !== nobody ? user : null;
}

// The node sends a fresh nonce with each request and accepts an action only
// when signed over that nonce, so a signature is good for one response.
function sendAction(req, res, action) {
  const nonce = req.get('X-Edge-Nonce');
  if (!nonce) throw new Error('no X-Edge-Nonce: this app must be reached through edge-session');
  res.set('X-Edge-Action', action);
  res.set('X-Edge-Action-Signature', crypto.createHmac('sha256', secret).update(`${nonce}\n${action}`).digest('hex'));
}

const escape = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const page = (title, body) =>
  `<!doctype html><html lang="en"><meta charset="utf-8"><title>${escape(title)}</title><h1>${escape(title)}</h1>${body}</html>`;
const loginForm = (error) => page('Sign in', `${error ? `<p role="alert">${escape(error)}</p>` : ''}
<form method="post" action="/login">
<label>Username <input name="username" autocomplete="username" required></label>
<label>Password <input name="password" type="password" autocomplete="current-password" required></label>
<button>Sign in</button></form>`);

const app = express();
app.disable('x-powered-by');
// Pages differ by who is signed in.
app.use((req, res, next) => { res.set('Cache-Control', 'no-store'); next(); });
// A cross-site form could otherwise sign a visitor into someone else's account.
// (The node refuses such actions itself; the /_test routes stand for an app
// that forgot to, so the tests see the node's own check.)
app.use((req, res, next) =>
  req.method === 'POST' && req.get('Sec-Fetch-Site') === 'cross-site' && !req.path.startsWith('/_test/')
    ? res.status(403).send('cross-site form refused') : next());

app.get('/', (req, res) => {
  const user = req.get('X-Edge-User');
  const role = req.get('X-Edge-Role');
  res.send(user
    ? page('Example app', `<p>Signed in as ${escape(user)}${role ? ` (${escape(role)})` : ''}</p>
<form method="post" action="/logout"><button>Sign out</button></form>
<form method="post" action="/logout-everywhere"><button>Sign out everywhere</button></form>`)
    : page('Example app', '<p>Not signed in. <a href="/login">Sign in</a></p>'));
});

app.get('/login', (req, res) => res.send(loginForm()));

app.post('/login', express.urlencoded({ extended: false }), async (req, res) => {
  const user = await checkPassword(req.body?.username, req.body?.password);
  if (!user) return res.status(401).send(loginForm('Wrong username or password.'));
  sendAction(req, res, `login; user=${req.body.username}${user.role ? `; role=${user.role}` : ''}`);
  res.redirect(303, '/');
});

app.post('/logout', (req, res) => {
  sendAction(req, res, 'logout');
  res.redirect(303, '/');
});

app.post('/logout-everywhere', (req, res) => {
  sendAction(req, res, 'logout-everywhere');
  res.redirect(303, '/');
});

app.get('/admin', (req, res) => {
  if (req.get('X-Edge-Role') !== 'admin') return res.status(403).send(page('Forbidden', '<p>Admins only.</p>'));
  res.send(page('Admin', `<p>Welcome, ${escape(req.get('X-Edge-User'))}.</p>`));
});

// What reached the app, so tests can see what the node forwards and strips.
app.get('/headers', (req, res) => res.json(req.headers));

if (process.env.EXAMPLE_TEST_ROUTES === '1') {
  // Any action and signature, as given: lets a test replay a signature made
  // for another request's nonce and see the node refuse it.
  app.route('/_test/respond').get(respond).post(respond);
  app.route('/_test/sign').get(sign).post(sign);
}

function respond(req, res) {
  if (req.query.action) res.set('X-Edge-Action', req.query.action);
  if (req.query.signature) res.set('X-Edge-Action-Signature', req.query.signature);
  res.json({ nonce: req.get('X-Edge-Nonce') ?? null });
}

function sign(req, res) {
  const action = String(req.query.action ?? '');
  if (req.query.cacheable === '1') {
    // As an app might answer that forgot the page can sign someone in.
    res.set('Cache-Control', 'public, max-age=3600');
    res.set('ETag', '"the-same-for-everyone"');
    res.set('Expires', new Date(Date.now() + 3600e3).toUTCString());
  }
  sendAction(req, res, action);
  res.json({ nonce: req.get('X-Edge-Nonce'), action, signature: res.get('X-Edge-Action-Signature') });
}

const server = http.createServer(app);

// The upgrade request went through the node like any other, so it carries
// the same identity headers.
new WebSocketServer({ server, path: '/ws' }).on('connection', (ws, req) => {
  ws.send(`hello ${req.headers['x-edge-user'] ?? 'anonymous'}`);
  ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
});

// Loopback only: whoever reaches the app directly could claim any X-Edge-User.
server.listen(Number(process.env.PORT ?? 3000), '127.0.0.1', () => {
  console.log(`listening on http://127.0.0.1:${server.address().port}`);
});
