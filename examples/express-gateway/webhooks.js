// Receives the node's session events (sign-ins, sign-outs, revocations) as
// Standard Webhooks: a JSON POST signed with the secret the node and this
// receiver share, checked here with the reference library (see README.md).
'use strict';

const http = require('node:http');
const express = require('express');
const { Webhook } = require('standardwebhooks');

// "whsec_<base64 key>", the same as the node's [[events.webhooks]] secret.
const secret = process.env.WEBHOOK_SECRET ?? '';
let webhook;
try {
  if (!secret.startsWith('whsec_')) throw new Error('no whsec_ prefix');
  webhook = new Webhook(secret);
} catch {
  console.error('WEBHOOK_SECRET must be set to the node\'s events.webhooks secret (whsec_<base64 key>)');
  process.exit(1);
}

// Events by webhook-id, in arrival order. A real receiver keeps them in its
// database, with a unique key on the id.
const events = new Map();
let rejected = 0;
let duplicates = 0;
// Test routes only: an outage (down) or the next few deliveries failing.
let down = false;
let failNext = 0;

const app = express();
app.disable('x-powered-by');

// The signature covers the exact bytes sent, so take the body raw (any
// content type): parsing and re-serializing JSON would change them.
app.post('/webhooks/edge-session', express.raw({ type: () => true }), (req, res) => {
  if (down) return res.sendStatus(503);
  let event;
  try {
    // Checks webhook-signature, an HMAC-SHA256 over
    // "<webhook-id>.<webhook-timestamp>.<body>", in constant time, and refuses
    // a webhook-timestamp more than 5 minutes off (a replayed delivery).
    // Returns the body parsed; anything unverified is never parsed.
    event = webhook.verify(Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0), req.headers);
    if (!event) throw new Error('empty body');
  } catch {
    rejected++;
    return res.sendStatus(400);
  }
  if (failNext > 0) {
    failNext--;
    return res.sendStatus(503);
  }
  // Delivery is at least once: the node retries until it gets a 2xx, so an
  // event can arrive again, with the same webhook-id. The receiver must be
  // idempotent on webhook-id: acknowledge a repeat, act on the event once.
  const id = req.get('webhook-id');
  if (events.has(id)) {
    duplicates++;
  } else {
    events.set(id, event);
    // Act on it here, e.g. on "session.revoked" drop what is cached for
    // event.user. Slow work belongs in a queue: answer before the node gives up.
  }
  res.sendStatus(204);
});

if (process.env.EXAMPLE_TEST_ROUTES === '1') {
  // What was received, for the repository's tests.
  app.get('/webhooks/received', (req, res) => res.json({ events: [...events.values()], rejected, duplicates }));
  // The next `count` valid deliveries are answered 503 and not stored.
  app.post('/webhooks/fail', (req, res) => {
    const count = Number(req.query.count ?? 1);
    if (!Number.isSafeInteger(count) || count < 0) return res.status(400).send('count must be a whole number');
    failNext = count;
    res.sendStatus(204);
  });
  // While down, every delivery is answered 503.
  app.post('/webhooks/down', (req, res) => { down = true; res.sendStatus(204); });
  app.post('/webhooks/up', (req, res) => { down = false; res.sendStatus(204); });
}

module.exports = app;

if (require.main === module) {
  const server = http.createServer(app);
  server.listen(Number(process.env.PORT ?? 3001), '127.0.0.1', () => {
    console.log(`listening on http://127.0.0.1:${server.address().port}`);
  });
}
