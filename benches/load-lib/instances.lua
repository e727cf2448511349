-- wrk script for benches/load-postgres: benches/load's scenario.lua, its wrk threads spread over
-- the instances named in LOAD_INSTANCES ("127.0.0.1:PORT 127.0.0.1:PORT …"), thread k on
-- instance ((k - 1) mod n) + 1. With -t2 and two instances each instance gets one thread and
-- its half of the connections: a round-robin by connection, as a layer-4 balancer does with
-- keep-alive clients, and no proxy in between to spend CPU. Arguments (after --): scenario.lua's.
-- Besides scenario.lua's RESULT line, done() prints one line per thread:
--   INSTANCE thread=K addr=HOST:PORT requests=N non2xx=N
-- (wrk merges latencies over all threads, so per instance there are counts, not percentiles).
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "scenario.lua")

local scenario_setup, scenario_response, scenario_done = setup, response, done
local targets = {}
for host, port in (os.getenv("LOAD_INSTANCES") or ""):gmatch("([^%s:]+):(%d+)") do
  targets[#targets + 1] = wrk.lookup(host, port)[1]
end
assert(#targets > 0, "LOAD_INSTANCES names no HOST:PORT")

local spread = {}
function setup(thread)
  local k = #spread + 1
  thread.addr = targets[(k - 1) % #targets + 1]
  spread[k] = thread
  scenario_setup(thread)
end

responses, failures = 0, 0
function response(status, headers, body)
  responses = responses + 1
  if status >= 300 then failures = failures + 1 end
  scenario_response(status, headers, body)
end

function done(summary, latency, requests)
  scenario_done(summary, latency, requests)
  for k, t in ipairs(spread) do
    io.write(string.format("INSTANCE thread=%d addr=%s requests=%d non2xx=%d\n", k, tostring(t.addr),
      tonumber(t:get("responses")) or 0, tonumber(t:get("failures")) or 0))
  end
end
