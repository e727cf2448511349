-- wrk script for benches/load. Arguments (after --):
--   scenario login soapKey apiKey orders seedsFile threads [poolFile]
-- scenarios (face_operation): soap_status rest_status soap_possible rest_possible soap_list
--   rest_list soap_manual rest_manual soap_auto rest_auto soap_confirm rest_confirm soap_mixed
--   rest_mixed ceiling
-- seedsFile: "orderId refundId" lines of the seeded refunds; poolFile (confirm scenarios only): the
-- same for the automatic refunds still New. (Text, not Lua tables: a Lua chunk holds at most 65536
-- constants, fewer than a pool can have.)
-- Thread k of n confirms pool entries k, k+n, k+2n, …: one wrk thread runs all its connections
-- in one Lua state, so no refund is confirmed twice. Past the end of its slice a thread sends
-- its first refund again (an answer with a non-zero faultCode) and counts it in pool_short.
local scenario, login, skey, apikey, orders, seeds, threads_total, pool
local counter = 0
local threads = {}

function setup(thread)
  counter = counter + 1
  thread:set("tid", counter)
  table.insert(threads, thread)
end

local function envelope(op, params)
  return '<?xml version="1.0" encoding="utf-8"?>'
    .. '<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/" xmlns:r="urn:refunds-gateway:refunds">'
    .. '<soap:Body><r:' .. op .. '><r:authenticate><r:userLogin>' .. login .. '</r:userLogin>'
    .. '<r:authenticateKey>' .. skey .. '</r:authenticateKey></r:authenticate>'
    .. '<r:params>' .. params .. '</r:params></r:' .. op .. '></soap:Body></soap:Envelope>'
end

local soap_headers = { ["Content-Type"] = "text/xml; charset=utf-8" }
local rest_headers
local rest_base = "/api/admin/v6/refunds/"

local function soap(op, params)
  return wrk.format("POST", "/soap/refunds", soap_headers, envelope(op, params))
end

local function rest_get(op, query)
  return wrk.format("GET", rest_base .. op .. "?" .. query, rest_headers)
end

local function rest_send(method, op, params)
  return wrk.format(method, rest_base .. op, rest_headers, '{"params":{' .. params .. '}}')
end

local function pairs_file(path)
  local list = {}
  for line in io.lines(path) do
    local order, refund = line:match("^(%d+) (%d+)$")
    if order then list[#list + 1] = { tonumber(order), tonumber(refund) } end
  end
  return list
end

function init(args)
  scenario, login, skey, apikey = args[1], args[2], args[3], args[4]
  orders = tonumber(args[5])
  seeds = pairs_file(args[6])
  threads_total = tonumber(args[7])
  if args[8] then pool = pairs_file(args[8]) end
  rest_headers = { ["X-API-KEY"] = apikey, ["Content-Type"] = "application/json" }
  math.randomseed(os.time() * 1000 + (tid or 0) * 7919)
end

-- getRefundStatus: a random one of the seeded refunds.
local function soap_status()
  local s = seeds[math.random(#seeds)]
  return soap("getRefundStatus", '<r:sourceType>order</r:sourceType><r:sourceId>' .. s[1]
    .. '</r:sourceId><r:paymentId>' .. s[2] .. '</r:paymentId>')
end

local function rest_status()
  local s = seeds[math.random(#seeds)]
  return rest_get("getRefundStatus", "sourceType=order&sourceId=" .. s[1] .. "&paymentId=" .. s[2])
end

-- getPossibleAutoRefunds: a random order.
local function soap_possible()
  return soap("getPossibleAutoRefunds", '<r:sourceType>order</r:sourceType><r:sourceId>'
    .. math.random(orders) .. '</r:sourceId>')
end

local function rest_possible()
  return rest_get("getPossibleAutoRefunds", "sourceType=order&sourceId=" .. math.random(orders))
end

-- retrieveRefundsList: a random page (from 0) of 10 over the seeded refunds.
local function list_page()
  return math.random(math.max(1, math.floor(#seeds / 10))) - 1
end

local function soap_list()
  return soap("retrieveRefundsList", '<r:sourceType>order</r:sourceType><r:resultsPage>'
    .. list_page() .. '</r:resultsPage><r:resultsLimit>10</r:resultsLimit>')
end

local function rest_list()
  return rest_get("retrieveRefundsList", "sourceType=order&resultsPage=" .. list_page()
    .. "&resultsLimit=10")
end

-- addManualRefund: 0.01 PLN on a random order.
local function soap_manual()
  return soap("addManualRefund", '<r:sourceType>order</r:sourceType><r:sourceId>'
    .. math.random(orders) .. '</r:sourceId>'
    .. '<r:refundValue>0.01</r:refundValue><r:refundCurrency>PLN</r:refundCurrency>'
    .. '<r:refundDetails><r:paymentFormId>2</r:paymentFormId><r:account>PL61109010140000071219812874</r:account></r:refundDetails>')
end

local function rest_manual()
  return rest_send("POST", "addManualRefund", '"sourceType":"order","sourceId":' .. math.random(orders)
    .. ',"refundValue":"0.01","refundCurrency":"PLN"'
    .. ',"refundDetails":{"paymentFormId":2,"account":"PL61109010140000071219812874"}')
end

-- addAutomaticRefundForOrder: 0.01 PLN of a random order's payment (payment id = order id).
local function soap_auto()
  local o = math.random(orders)
  return soap("addAutomaticRefundForOrder", '<r:sourceId>' .. o .. '</r:sourceId><r:paymentId>' .. o
    .. '</r:paymentId><r:refundValue>0.01</r:refundValue><r:refundCurrency>PLN</r:refundCurrency>')
end

local function rest_auto()
  local o = math.random(orders)
  return rest_send("POST", "addAutomaticRefundForOrder", '"sourceId":' .. o .. ',"paymentId":' .. o
    .. ',"refundValue":"0.01","refundCurrency":"PLN"')
end

-- confirmRefund: the next refund of this thread's slice of the pool.
pool_short = 0
local confirmed = 0
local function next_refund()
  local index = tid + confirmed * threads_total
  confirmed = confirmed + 1
  if index > #pool then
    pool_short = pool_short + 1
    index = tid
  end
  return pool[index]
end

local function soap_confirm()
  local r = next_refund()
  return soap("confirmRefund", '<r:sourceType>order</r:sourceType><r:sourceId>' .. r[1]
    .. '</r:sourceId><r:paymentId>' .. r[2] .. '</r:paymentId>')
end

local function rest_confirm()
  local r = next_refund()
  return rest_send("PUT", "confirmRefund", '"sourceType":"order","sourceId":' .. r[1]
    .. ',"paymentId":' .. r[2])
end

-- 80/20: 40% getRefundStatus, 40% getPossibleAutoRefunds, 20% addManualRefund, on one face.
local function mix(status, possible, manual)
  return function()
    local r = math.random(100)
    if r <= 40 then return status()
    elseif r <= 80 then return possible()
    else return manual() end
  end
end

local builders = {
  soap_status = soap_status, rest_status = rest_status,
  soap_possible = soap_possible, rest_possible = rest_possible,
  soap_list = soap_list, rest_list = rest_list,
  soap_manual = soap_manual, rest_manual = rest_manual,
  soap_auto = soap_auto, rest_auto = rest_auto,
  soap_confirm = soap_confirm, rest_confirm = rest_confirm,
  soap_mixed = mix(soap_status, soap_possible, soap_manual),
  rest_mixed = mix(rest_status, rest_possible, rest_manual),
  ceiling = soap_status,
}

function request()
  return builders[scenario]()
end

-- Both faces answer some errors with a 2xx (SOAP: 200 with <faultCode>N</faultCode>; REST: 207 with
-- "faultCode"), so every body is checked: app_errors counts 2xx answers carrying a non-zero faultCode.
-- (The fixed-response ceiling runs through the same callback, so the client cost is the same.)
app_errors = 0
local shown = 0
function response(status, headers, body)
  if status < 300 and body and string.find(body, "faultCode", 1, true)
      and not string.find(body, "faultCode>0<", 1, true) and not string.find(body, '"faultCode":0', 1, true) then
    app_errors = app_errors + 1
  end
  if os.getenv("LOAD_DEBUG") and shown < 2 and (status >= 300 or app_errors > 0) then
    shown = shown + 1
    io.stderr:write("status " .. status .. ": " .. string.sub(body or "", 1, 400) .. "\n")
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  local secs = summary.duration / 1e6
  local app, short = 0, 0
  for _, t in ipairs(threads) do
    app = app + (tonumber(t:get("app_errors")) or 0)
    short = short + (tonumber(t:get("pool_short")) or 0)
  end
  io.write(string.format("RESULT rps=%.0f p50_ms=%.2f p99_ms=%.2f p999_ms=%.2f non2xx=%d app_errors=%d sockerr=%d requests=%d pool_short=%d\n",
    summary.requests / secs, latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    latency:percentile(99.9) / 1000, e.status, app, e.connect + e.read + e.write + e.timeout,
    summary.requests, short))
end
