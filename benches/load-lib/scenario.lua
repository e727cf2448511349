-- wrk script for benches/load. Arguments (after --):
--   scenario login soapKey apiKey orders seedsFile
-- scenarios: soap_status soap_possible rest_list soap_manual rest_auto mixed ceiling
local scenario, login, skey, apikey, orders, seeds
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

function init(args)
  scenario, login, skey, apikey = args[1], args[2], args[3], args[4]
  orders = tonumber(args[5])
  seeds = dofile(args[6])
  rest_headers = { ["X-API-KEY"] = apikey, ["Content-Type"] = "application/json" }
  math.randomseed(os.time() * 1000 + (tid or 0) * 7919)
end

local function soap_status()
  local s = seeds[math.random(#seeds)]
  return wrk.format("POST", "/soap/refunds", soap_headers, envelope("getRefundStatus",
    '<r:sourceType>order</r:sourceType><r:sourceId>' .. s[1] .. '</r:sourceId><r:paymentId>' .. s[2] .. '</r:paymentId>'))
end

local function soap_possible()
  return wrk.format("POST", "/soap/refunds", soap_headers, envelope("getPossibleAutoRefunds",
    '<r:sourceType>order</r:sourceType><r:sourceId>' .. math.random(orders) .. '</r:sourceId>'))
end

local function rest_list()
  local pages = math.max(1, math.floor(#seeds / 10))
  return wrk.format("GET", "/api/admin/v6/refunds/retrieveRefundsList?sourceType=order&resultsPage="
    .. math.random(pages) .. "&resultsLimit=10", rest_headers)
end

local function soap_manual()
  return wrk.format("POST", "/soap/refunds", soap_headers, envelope("addManualRefund",
    '<r:sourceType>order</r:sourceType><r:sourceId>' .. math.random(orders) .. '</r:sourceId>'
    .. '<r:refundValue>0.01</r:refundValue><r:refundCurrency>PLN</r:refundCurrency>'
    .. '<r:refundDetails><r:paymentFormId>2</r:paymentFormId><r:account>PL61109010140000071219812874</r:account></r:refundDetails>'))
end

local function rest_auto()
  local o = math.random(orders)
  return wrk.format("POST", "/api/admin/v6/refunds/addAutomaticRefundForOrder", rest_headers,
    '{"params":{"sourceId":' .. o .. ',"paymentId":' .. o .. ',"refundValue":"0.01","refundCurrency":"PLN"}}')
end

local function mixed()
  local r = math.random(100)
  if r <= 40 then return soap_status()
  elseif r <= 80 then return soap_possible()
  else return soap_manual() end
end

local builders = { soap_status = soap_status, soap_possible = soap_possible, rest_list = rest_list,
  soap_manual = soap_manual, rest_auto = rest_auto, mixed = mixed, ceiling = soap_status }

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
  local app = 0
  for _, t in ipairs(threads) do app = app + (tonumber(t:get("app_errors")) or 0) end
  io.write(string.format("RESULT rps=%.0f p50_ms=%.2f p99_ms=%.2f p999_ms=%.2f non2xx=%d app_errors=%d sockerr=%d requests=%d\n",
    summary.requests / secs, latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    latency:percentile(99.9) / 1000, e.status, app, e.connect + e.read + e.write + e.timeout, summary.requests))
end
