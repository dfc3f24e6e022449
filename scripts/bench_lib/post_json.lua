-- wrk script for scripts/bench: POST one body (JSON unless a header says otherwise) on
-- every request and, when the run is over, print one machine-readable line that
-- scripts/bench parses:
--
--   BENCH_RESULT {"requests": ..., "responses_2xx": ..., "latency_us": {...}, ...}
--
-- Usage: wrk -s post_json.lua URL -- BODY_FILE ["Name: value" ...]
-- Each "Name: value" argument is a request header (Content-Type replaces the default).
-- Latencies are in microseconds and cover every response, 2xx or not; socket
-- errors and timeouts are counted apart and have no latency.

local threads = {}

function setup(thread)
   table.insert(threads, thread)
end

function init(args)
   local file = assert(io.open(args[1], "rb"), "cannot open body file " .. tostring(args[1]))
   wrk.body = file:read("*a")
   file:close()
   wrk.method = "POST"
   wrk.headers["Content-Type"] = "application/json"
   for i = 2, #args do
      local name, value = string.match(args[i], "^([^:]+):%s*(.*)$")
      assert(name, "header argument must be 'Name: value', got " .. args[i])
      wrk.headers[name] = value
   end
   responses_2xx = 0
   responses_other = 0
   statuses = {}
end

function response(status, headers, body)
   if status >= 200 and status < 300 then
      responses_2xx = responses_2xx + 1
   else
      responses_other = responses_other + 1
   end
   local key = tostring(status)
   statuses[key] = (statuses[key] or 0) + 1
end

function done(summary, latency, requests)
   local ok, other, codes = 0, 0, {}
   for _, thread in ipairs(threads) do
      ok = ok + thread:get("responses_2xx")
      other = other + thread:get("responses_other")
      for code, count in pairs(thread:get("statuses")) do
         codes[code] = (codes[code] or 0) + count
      end
   end
   local parts = {}
   for code, count in pairs(codes) do
      table.insert(parts, string.format('"%s": %d', code, count))
   end
   local e = summary.errors
   io.write(string.format(
      'BENCH_RESULT {"duration_us": %d, "requests": %d, "bytes": %d, '
      .. '"responses_2xx": %d, "responses_other": %d, "statuses": {%s}, '
      .. '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, '
      .. '"latency_us": {"min": %.1f, "mean": %.1f, "stdev": %.1f, "max": %.1f, '
      .. '"p50": %.1f, "p90": %.1f, "p99": %.1f, "p999": %.1f}}\n',
      summary.duration, summary.requests, summary.bytes,
      ok, other, table.concat(parts, ", "),
      e.connect, e.read, e.write, e.status, e.timeout,
      latency.min, latency.mean, latency.stdev, latency.max,
      latency:percentile(50), latency:percentile(90), latency:percentile(99),
      latency:percentile(99.9)))
end
