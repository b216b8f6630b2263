#!/usr/bin/env python3
"""Soak client for benches/scripts/soak.sh: a loop of logins, reads and logouts
against one edge-session node, from several threads, until a deadline.

Each round of a worker: browser login (form), a few `/whoami` reads, logout,
then one read of the logged-out cookie (must be 401); every fourth round also
the /v1 flow (create, read, patch, regenerate, old token 404, delete).
Any other status, or a failed connection, is an error. Prints one JSON line
with the totals at the end. Standard library only.
"""

import http.client
import json
import sys
import threading
import time
import urllib.parse

URL, USER, PASSWORD, API_KEY = sys.argv[1:5]
SECONDS = float(sys.argv[5])
WORKERS = int(sys.argv[6])
HOST = urllib.parse.urlsplit(URL).netloc

lock = threading.Lock()
totals = {"requests": 0, "errors": 0, "logins": 0, "logouts": 0, "reads": 0,
          "v1_rounds": 0, "error_samples": []}


def note(**counts):
    with lock:
        for key, n in counts.items():
            totals[key] += n


def error(what):
    with lock:
        totals["errors"] += 1
        if len(totals["error_samples"]) < 20:
            totals["error_samples"].append(what)


class Conn:
    """One keep-alive connection, reopened after a failure."""

    def __init__(self):
        self.conn = None

    def request(self, method, path, body=None, headers=None):
        for attempt in range(2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(HOST, timeout=30)
            try:
                self.conn.request(method, path, body=body, headers=headers or {})
                res = self.conn.getresponse()
                data = res.read()
                note(requests=1)
                return res.status, res.getheader("set-cookie") or "", data
            except (OSError, http.client.HTTPException) as e:
                self.conn.close()
                self.conn = None
                if attempt == 1:
                    note(requests=1)
                    error(f"{method} {path}: {type(e).__name__}: {e}")
                    return None, "", b""


def cookie_of(set_cookie):
    if not set_cookie.startswith("__Host-sid="):
        return None
    return set_cookie[len("__Host-sid="):].split(";", 1)[0]


def expect(what, got, *wanted):
    if got not in wanted:
        error(f"{what}: {got}")
        return False
    return True


def browser_round(c):
    form = urllib.parse.urlencode({"username": USER, "password": PASSWORD})
    status, set_cookie, _ = c.request(
        "POST", "/login", form, {"Content-Type": "application/x-www-form-urlencoded"})
    if not expect("login", status, 303):
        return
    sid = cookie_of(set_cookie)
    if sid is None:
        error("login without a session cookie")
        return
    note(logins=1)
    jar = {"Cookie": f"__Host-sid={sid}"}
    for _ in range(5):
        status, _, _ = c.request("GET", "/whoami", headers=jar)
        expect("whoami", status, 200)
        note(reads=1)
    status, _, _ = c.request("POST", "/logout", headers=jar)
    if expect("logout", status, 303):
        note(logouts=1)
    status, _, _ = c.request("GET", "/whoami", headers=jar)
    expect("whoami after logout", status, 401)


def v1_round(c):
    auth = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
    status, _, body = c.request("POST", "/v1/sessions", json.dumps({"data": {"cart": "1"}}), auth)
    if not expect("v1 create", status, 201):
        return
    token = json.loads(body)["token"]
    with_token = dict(auth, **{"X-Session-Token": token})
    status, _, _ = c.request("GET", "/v1/session", headers=with_token)
    expect("v1 read", status, 200)
    status, _, _ = c.request("PATCH", "/v1/session", json.dumps({"data": {"theme": "dark"}}), with_token)
    expect("v1 patch", status, 200)
    status, _, body = c.request("POST", "/v1/session/regenerate",
                                json.dumps({"user_id": "soak-user"}), with_token)
    if not expect("v1 regenerate", status, 200):
        return
    new = dict(auth, **{"X-Session-Token": json.loads(body)["token"]})
    status, _, _ = c.request("GET", "/v1/session", headers=with_token)
    expect("v1 read of the pre-login token", status, 404)
    status, _, _ = c.request("DELETE", "/v1/session", headers=new)
    expect("v1 delete", status, 204)
    note(v1_rounds=1)


def worker(deadline):
    c = Conn()
    rounds = 0
    while time.monotonic() < deadline:
        browser_round(c)
        if rounds % 4 == 0:
            v1_round(c)
        rounds += 1


def main():
    deadline = time.monotonic() + SECONDS
    threads = [threading.Thread(target=worker, args=(deadline,)) for _ in range(WORKERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps(totals))


main()
