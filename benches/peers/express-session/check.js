// Checks server.js against a real store before it is benchmarked: starts it
// (PORT=0, WORKERS=2 unless set) with this process's environment (STORE,
// SECRET, REDIS_URL or DYNAMODB_ENDPOINT, ...), signs in and out over HTTP,
// sends REQUESTS (default 500) /whoami requests, then stops it with SIGTERM.
// Ends with `N passed, N failed` and exits 1 if any check failed.
'use strict';

const { spawn } = require('node:child_process');
const path = require('node:path');
const readline = require('node:readline');

const COOKIE = 'connect.sid';

function start() {
  const env = { PORT: '0', WORKERS: '2', SECRET: 'check-secret', ...process.env };
  const child = spawn(process.execPath, [path.join(__dirname, 'server.js')], {
    env, stdio: ['ignore', 'pipe', 'inherit'],
  });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no listening line within 60 s')), 60_000);
    child.once('exit', (code) => reject(new Error(`server.js exited (${code}) before listening`)));
    readline.createInterface({ input: child.stdout }).on('line', (line) => {
      const match = /^listening on (http:\/\/127\.0\.0\.1:\d+)$/.exec(line);
      if (!match) return;
      clearTimeout(timer);
      child.removeAllListeners('exit');
      resolve({ child, base: match[1] });
    });
  });
}

// The session cookie `name=value` a response sets, or null.
function sessionCookie(response) {
  const set = response.headers.getSetCookie().find((c) => c.startsWith(`${COOKIE}=`));
  return set ? set.split(';')[0] : null;
}

async function login(base, cookie) {
  const response = await fetch(`${base}/login`, { method: 'POST', headers: cookie ? { cookie } : {} });
  return { status: response.status, cookie: sessionCookie(response) };
}

async function whoami(base, cookie) {
  const response = await fetch(`${base}/whoami`, { headers: cookie ? { cookie } : {} });
  const body = await response.text();
  return { status: response.status, body };
}

const checks = [
  ['whoami_without_a_cookie_is_401', async (base) => {
    const { status } = await whoami(base);
    if (status !== 401) throw new Error(`got ${status}`);
  }],
  ['login_sets_a_cookie_whoami_reads_back', async (base) => {
    const { status, cookie } = await login(base);
    if (status !== 200 || !cookie) throw new Error(`login: ${status}, cookie ${cookie}`);
    const me = await whoami(base, cookie);
    if (me.status !== 200 || me.body !== '{"user_id":"bench"}') throw new Error(`whoami: ${me.status} ${me.body}`);
  }],
  // The attacker holds a real session id and plants it in the victim's
  // browser; the victim signs in. The id must change, and the planted one
  // must not be signed in.
  ['planted_session_id_is_not_signed_in_at_login', async (base) => {
    const planted = (await login(base)).cookie;
    const { cookie } = await login(base, planted);
    if (!cookie || cookie === planted) throw new Error('login kept the session id the browser came with');
    const attacker = await whoami(base, planted);
    if (attacker.status !== 401) throw new Error(`planted id: ${attacker.status} ${attacker.body}`);
  }],
  ['forged_cookie_signature_is_401', async (base) => {
    const { cookie } = await login(base);
    const forged = cookie.replace(/\.[^.]+$/, '.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA');
    const { status } = await whoami(base, forged);
    if (status !== 401) throw new Error(`got ${status}`);
  }],
  ['many_whoami_requests_all_answer_200', async (base) => {
    const { cookie } = await login(base);
    const total = Number(process.env.REQUESTS ?? 500);
    let next = 0;
    const failures = [];
    const lane = async () => {
      while (next < total) {
        next += 1;
        const { status } = await whoami(base, cookie);
        if (status !== 200) failures.push(status);
      }
    };
    await Promise.all(Array.from({ length: 16 }, lane));
    if (failures.length) throw new Error(`${failures.length} of ${total} not 200: ${failures.slice(0, 5)}`);
    console.log(`  ${total} requests, all 200`);
  }],
];

function stop(child) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no exit within 10 s of SIGTERM')), 10_000);
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      if (code === 0) resolve();
      else reject(new Error(`exit ${code ?? signal} after SIGTERM`));
    });
    child.kill('SIGTERM');
  });
}

async function main() {
  const { child, base } = await start();
  let passed = 0;
  let failed = 0;
  const record = (name, err) => {
    if (err) failed += 1; else passed += 1;
    console.log(`${err ? 'FAIL' : 'ok  '} ${name}${err ? `: ${err.message}` : ''}`);
  };
  for (const [name, check] of checks) {
    await check(base).then(() => record(name), (err) => record(name, err));
  }
  await stop(child).then(() => record('sigterm_stops_all_workers_with_exit_0'), (err) => record('sigterm_stops_all_workers_with_exit_0', err));
  console.log(`${passed} passed, ${failed} failed`);
  process.exitCode = failed ? 1 : 0;
}

main().catch((err) => {
  console.error(`check.js: ${err.message}`);
  process.exit(1);
});
