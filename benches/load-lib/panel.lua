-- wrk script for benches/load-panel. Arguments (after --): scenario cookie apiKey pairsFile
-- scenarios: panel_list (GET /admin: the first 50 refunds awaiting approval and the 30-day
-- chart), rest_list (retrieveRefundsList, the same 50), panel_refund (GET /admin/refunds/{id},
-- a random one of the pairs), rest_status (getRefundStatus of the same refunds).
-- pairsFile: "orderId refundId" lines of the refunds awaiting approval.
local scenario, cookie, apikey, pairs
local threads = {}
local counter = 0

function setup(thread)
  counter = counter + 1
  thread:set("tid", counter)
  table.insert(threads, thread)
end

function init(args)
  scenario, cookie, apikey = args[1], args[2], args[3]
  pairs = {}
  for line in io.lines(args[4]) do
    local order, refund = line:match("^(%d+) (%d+)$")
    if order then pairs[#pairs + 1] = { order, refund } end
  end
  math.randomseed(os.time() * 1000 + (tid or 0) * 7919)
end

local panel_headers, rest_headers

function request()
  panel_headers = panel_headers or { ["Cookie"] = "__Host-refunds-panel=" .. cookie }
  rest_headers = rest_headers or { ["X-API-KEY"] = apikey }
  if scenario == "panel_list" then
    return wrk.format("GET", "/admin", panel_headers)
  elseif scenario == "rest_list" then
    return wrk.format("GET", "/api/admin/v6/refunds/retrieveRefundsList?sourceType=all&resultsLimit=50", rest_headers)
  end
  local p = pairs[math.random(#pairs)]
  if scenario == "panel_refund" then
    return wrk.format("GET", "/admin/refunds/" .. p[2], panel_headers)
  end
  return wrk.format("GET", "/api/admin/v6/refunds/getRefundStatus?sourceType=order&sourceId=" .. p[1]
    .. "&paymentId=" .. p[2], rest_headers)
end

-- A 200 that is not the page asked for (a redirect to sign-in would be a 303) counts as an error.
wrong = 0
function response(status, headers, body)
  if status == 200 and body and not (string.find(body, "Refunds awaiting approval", 1, true)
      or string.find(body, "Status history", 1, true) or string.find(body, '"result', 1, true)) then
    wrong = wrong + 1
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  local secs = summary.duration / 1e6
  local bad = 0
  for _, t in ipairs(threads) do bad = bad + (tonumber(t:get("wrong")) or 0) end
  io.write(string.format("RESULT rps=%.0f p50_ms=%.2f p99_ms=%.2f p999_ms=%.2f non2xx=%d wrong=%d sockerr=%d requests=%d\n",
    summary.requests / secs, latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    latency:percentile(99.9) / 1000, e.status, bad, e.connect + e.read + e.write + e.timeout,
    summary.requests))
end
