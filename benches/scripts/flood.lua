-- wrk script for benches/scripts/flood.sh: wrong-password logins, each from a
-- random client address (X-Forwarded-For, believed from a trusted proxy)
-- on a random username, so no per-address or per-account budget stops
-- them: only the hash threads and their queue do. Counts the statuses.
local counts = {}
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  math.randomseed(os.time() + math.floor(os.clock() * 1e6))
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
  statuses = {}
end

function request()
  local addr = string.format("10.%d.%d.%d", math.random(0, 255), math.random(0, 255), math.random(1, 254))
  local user = string.format("user%d", math.random(1, 1000000))
  wrk.headers["X-Forwarded-For"] = addr
  return wrk.format(nil, nil, nil, "username=" .. user .. "&password=wrong-guess")
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local total, by = 0, {}
  for _, t in ipairs(threads) do
    local s = t:get("statuses")
    for code, n in pairs(s) do
      by[code] = (by[code] or 0) + n
      total = total + n
    end
  end
  for code, n in pairs(by) do
    io.write(string.format("status %d: %d (%.1f%%)\n", code, n, 100 * n / math.max(total, 1)))
  end
end
