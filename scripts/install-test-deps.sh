#!/usr/bin/env bash
# What the tests need beyond the Rust toolchain, installed only when missing,
# so a run on a machine that has it all installs nothing and needs no network:
#
# - Debian packages: chromium and chromium-driver (the browser tests),
#   nodejs and npm, python3 and its venv (schemathesis), nginx and caddy
#   (the gateway tests run them as unprivileged children with their own
#   config files), redis-server (the benchmark's Redis-backed peers).
#   `apt-get update` only when something is missing.
# - npm packages, from the lockfiles: tests/e2e/, examples/express-gateway/ and
#   benches/peers/express-session/, `npm ci` only when node_modules does not
#   hold what the lockfile pins.
#
# Called by scripts/test and scripts/e2e.sh; safe to run by hand.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf 'install-test-deps.sh: %s\n' "$*" >&2; }

sudo=
[ "$(id -u)" -eq 0 ] || sudo=sudo

missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ -x /usr/bin/chromedriver ] || missing+=(chromium-driver)
command -v node >/dev/null && command -v npm >/dev/null || missing+=(nodejs npm)
command -v python3 >/dev/null || missing+=(python3)
if command -v python3 >/dev/null && ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    missing+=(python3-venv)
fi
# sbin is not on every user's PATH.
[ -x /usr/sbin/nginx ] || command -v nginx >/dev/null || missing+=(nginx)
command -v caddy >/dev/null || missing+=(caddy)
command -v redis-server >/dev/null || missing+=(redis-server)

if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    # The packages' postinst starts nginx (and, under systemd, caddy) as
    # system services on port 80, and redis-server on 6379. The tests and
    # the benchmark run their own instances; a system one would only hold
    # the port and outlive the run. Only a service installed just now is
    # stopped: one that was there before is somebody's.
    for service in nginx caddy redis-server; do
        case " ${missing[*]} " in *" $service "*) ;; *) continue ;; esac
        if [ -d /run/systemd/system ]; then
            $sudo systemctl disable --now "$service" >/dev/null 2>&1 || true
        else
            $sudo service "$service" stop >/dev/null 2>&1 || true
            $sudo update-rc.d "$service" disable >/dev/null 2>&1 || true
        fi
    done
fi

# `npm ci` in $1 unless every package its lockfile pins is installed at that
# version (npm ci deletes node_modules first: not worth doing every run).
npm_ci() {
    local dir=$1
    if ! (cd "$dir" && node -e '
        const fs = require("fs");
        const { packages } = JSON.parse(fs.readFileSync("package-lock.json", "utf8"));
        for (const [path, { version, link, optional }] of Object.entries(packages)) {
            if (!path || link) continue;
            let have;
            try {
                have = JSON.parse(fs.readFileSync(`${path}/package.json`, "utf8")).version;
            } catch (e) {
                // npm ci leaves out optional packages for other platforms.
                if (optional && e.code === "ENOENT") continue;
                throw e;
            }
            if (have !== version) process.exit(1);
        }' 2>/dev/null); then
        say "npm ci in $dir"
        # No browser download: the tests drive Debian's chromium.
        (cd "$dir" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)
    fi
}
npm_ci tests/e2e
npm_ci examples/express-gateway
npm_ci benches/peers/express-session
