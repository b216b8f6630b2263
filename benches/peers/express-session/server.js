// A benchmark peer of edge-session: the session stack many Express apps run,
// express-session over Redis (connect-redis) or DynamoDB (connect-dynamodb),
// served by Node's cluster module from WORKERS processes sharing one port.
//
//   POST /login   regenerate the session, store user_id "bench", save: 200
//   GET  /whoami  200 {"user_id": ...} from the session, 401 without one
//
// The primary checks the environment, creates the DynamoDB table if it is
// missing (and waits until it is ACTIVE), forks the workers and prints
// `listening on http://127.0.0.1:<port>` once all of them listen. A worker
// that dies stops the whole app (exit 1); SIGTERM or SIGINT stops it (exit 0).
// See README.md for the environment.
'use strict';

const cluster = require('node:cluster');
const http = require('node:http');
const os = require('node:os');

const USER_ID = 'bench';
const HOST = '127.0.0.1';

function fail(message) {
  console.error(`express-session peer: ${message}`);
  process.exit(2);
}

function integer(name, text, min, max) {
  const value = Number(text);
  if (!/^\d+$/.test(text) || value < min || value > max) {
    fail(`${name} must be an integer from ${min} to ${max}, not ${JSON.stringify(text)}`);
  }
  return value;
}

function url(name, text, schemes) {
  let parsed;
  try {
    parsed = new URL(text);
  } catch {
    parsed = null;
  }
  if (!parsed || !schemes.includes(parsed.protocol.slice(0, -1))) {
    const forms = schemes.map((scheme) => `${scheme}://host:port`).join(' or ');
    fail(`${name} must be a URL ${forms}, not ${JSON.stringify(text)}`);
  }
  return text;
}

// Read by the primary and by each worker (workers inherit the environment),
// so a bad setting stops the app before anything is forked.
function readConfig(env) {
  const store = env.STORE ?? '';
  if (store !== 'redis' && store !== 'dynamodb') {
    fail(`STORE must be redis or dynamodb, not ${JSON.stringify(store)}`);
  }
  if (!env.SECRET) fail('SECRET must be set: it signs the session cookie');
  const config = {
    store,
    secret: env.SECRET,
    // 0 is fine: the workers share the one port the primary binds.
    port: integer('PORT', env.PORT ?? '3000', 0, 65535),
    workers: integer('WORKERS', env.WORKERS ?? String(os.availableParallelism()), 1, 1024),
  };
  if (store === 'redis') {
    config.redisUrl = url('REDIS_URL', env.REDIS_URL ?? 'redis://127.0.0.1:6379', ['redis', 'rediss']);
  } else {
    if (!env.DYNAMODB_ENDPOINT) fail('DYNAMODB_ENDPOINT must be set (http://127.0.0.1:<port>)');
    config.dynamodb = {
      endpoint: url('DYNAMODB_ENDPOINT', env.DYNAMODB_ENDPOINT, ['http', 'https']),
      region: 'us-east-1',
      credentials: {
        accessKeyId: env.AWS_ACCESS_KEY_ID || 'local',
        secretAccessKey: env.AWS_SECRET_ACCESS_KEY || 'local',
      },
      table: env.TABLE || 'express-sessions',
    };
  }
  return config;
}

function dynamoClient({ endpoint, region, credentials }) {
  const { DynamoDBClient } = require('@aws-sdk/client-dynamodb');
  return new DynamoDBClient({ endpoint, region, credentials });
}

// The table connect-dynamodb would create on first use (hash key `id`, a
// string), made once here rather than raced by every worker, and waited for:
// connect-dynamodb uses it as soon as CreateTable answers, while DynamoDB
// may still report CREATING. On demand, not connect-dynamodb's 5 provisioned
// units, which a load test would measure instead of the store.
async function ensureTable(config) {
  const {
    CreateTableCommand, DescribeTableCommand, waitUntilTableExists,
  } = require('@aws-sdk/client-dynamodb');
  const client = dynamoClient(config);
  const TableName = config.table;
  try {
    await client.send(new DescribeTableCommand({ TableName }));
  } catch (err) {
    if (err.name !== 'ResourceNotFoundException') throw err;
    try {
      await client.send(new CreateTableCommand({
        TableName,
        AttributeDefinitions: [{ AttributeName: 'id', AttributeType: 'S' }],
        KeySchema: [{ AttributeName: 'id', KeyType: 'HASH' }],
        BillingMode: 'PAY_PER_REQUEST',
      }));
    } catch (createErr) {
      // Somebody else created it meanwhile: wait for theirs.
      if (createErr.name !== 'ResourceInUseException') throw createErr;
    }
  }
  // Returns once DescribeTable reports ACTIVE, polling every second or two
  // (the waiter's default 20 s would dominate a benchmark's start-up);
  // throws after maxWaitTime s.
  await waitUntilTableExists({ client, maxWaitTime: 60, minDelay: 1, maxDelay: 2 }, { TableName });
  client.destroy();
}

async function redisStore(redisUrl) {
  const { createClient } = require('redis');
  const { RedisStore } = require('connect-redis');
  const client = createClient({ url: redisUrl });
  // The client's defaults otherwise: it reconnects with back-off and queues
  // commands meanwhile (a request waits, then fails with a 500). A failed
  // first connection ends the worker, and so the app, instead.
  let connected = false;
  client.on('error', (err) => {
    if (connected) return console.error(`redis: ${err.message}`);
    console.error(`express-session peer: connecting to Redis at ${redisUrl}: ${err.message}`);
    process.exit(1);
  });
  await client.connect();
  connected = true;
  return new RedisStore({ client });
}

function dynamoStore(config, session) {
  const DynamoDBStore = require('connect-dynamodb')(session);
  return new DynamoDBStore({ client: dynamoClient(config), table: config.table });
}

// express-session keeps the id a request arrived with, if the store knows
// it, when the app writes into the session. An app that only sets
// `req.session.user_id` at login signs in whatever session id the browser
// already held, one an attacker may have planted: session fixation, and
// express-session's default. regenerate() destroys that session and issues
// a fresh id first. A correct app does it, so this one does, and pays for it.
function login(req, res, next) {
  req.session.regenerate((err) => {
    if (err) return next(err);
    req.session.user_id = USER_ID;
    // Saved before answering, so the next request finds the session.
    req.session.save((saveErr) => (saveErr ? next(saveErr) : res.sendStatus(200)));
  });
}

function whoami(req, res) {
  res.set('Cache-Control', 'no-store');
  const userId = req.session.user_id;
  if (typeof userId !== 'string') return res.sendStatus(401);
  res.json({ user_id: userId });
}

// A store that fails (Redis or DynamoDB down) is a 500, logged, never a crash.
function onError(err, req, res, next) {
  console.error(`${req.method} ${req.path}: ${err.stack ?? err}`);
  if (res.headersSent) return next(err);
  res.status(500).type('text/plain').send('internal error');
}

function buildApp(store, secret, session) {
  const express = require('express');
  const app = express();
  app.disable('x-powered-by');
  app.use(session({
    store,
    secret,
    resave: false, // the store's touch() keeps the session alive; no rewrite per request
    saveUninitialized: false, // no session is stored for a visitor who never signs in
    // Plain HTTP on loopback for the benchmark; behind TLS this is `secure: true`.
    cookie: { secure: false, httpOnly: true, sameSite: 'lax' },
  }));
  app.post('/login', login);
  app.get('/whoami', whoami);
  app.use(onError);
  return app;
}

async function runWorker(config) {
  const session = require('express-session');
  const store = config.store === 'redis'
    ? await redisStore(config.redisUrl)
    : dynamoStore(config.dynamodb, session);
  const server = http.createServer(buildApp(store, config.secret, session));
  server.on('error', (err) => {
    console.error(`worker ${process.pid}: ${err.message}`);
    process.exit(1);
  });
  server.listen(config.port, HOST);
}

function stopWorkers(code) {
  const workers = Object.values(cluster.workers);
  if (workers.length === 0) process.exit(code);
  cluster.on('exit', () => {
    if (Object.keys(cluster.workers).length === 0) process.exit(code);
  });
  for (const worker of workers) worker.process.kill('SIGTERM');
  setTimeout(() => {
    for (const worker of Object.values(cluster.workers)) worker.process.kill('SIGKILL');
    process.exit(code);
  }, 5000).unref();
}

async function runPrimary(config) {
  if (config.store === 'dynamodb') await ensureTable(config.dynamodb);
  const ports = new Set();
  let listening = 0;
  let stopping = false;
  const stop = (code) => {
    if (stopping) return;
    stopping = true;
    stopWorkers(code);
  };
  cluster.on('listening', (worker, address) => {
    ports.add(address.port);
    listening += 1;
    if (listening !== config.workers) return;
    if (ports.size !== 1) {
      console.error(`express-session peer: workers listen on different ports: ${[...ports].join(', ')}`);
      return stop(1);
    }
    console.log(`listening on http://${HOST}:${[...ports][0]}`);
  });
  cluster.on('exit', (worker, code, signal) => {
    if (stopping) return;
    console.error(`express-session peer: worker ${worker.process.pid} exited (${signal ?? `code ${code}`}); stopping`);
    stop(1);
  });
  for (const signal of ['SIGTERM', 'SIGINT']) process.on(signal, () => stop(0));
  for (let i = 0; i < config.workers; i += 1) cluster.fork();
}

const config = readConfig(process.env);
const run = cluster.isPrimary ? runPrimary : runWorker;
run(config).catch((err) => {
  console.error(`express-session peer: ${err.stack ?? err}`);
  process.exit(1);
});
