-- wrk script of benchmarks/http.py: POST /v1/pings round-robin over registered devices,
-- each request with its own device's token and a ts later than that device's previous one.
-- benchmarks/http.py substitutes the placeholders; run it with one thread (-t1): the
-- counter below lives in that thread's Lua state. The answers whose ping was accepted are
-- counted, and their number printed at the end ("accepted answers: N").

local devices = {  -- {device_id, "Bearer <token>", lat, lon, accuracy_m}
$devices
}
local base_ts, step_s = $base_ts, $step_s
local count, sent = #devices, 0
local headers = { ["Content-Type"] = "application/json" }
local ping = '{"device_id":"%s","lat":%.6f,"lon":%.6f,"accuracy_m":%.1f,"ts":%.3f}'

request = function()
  local d = devices[sent % count + 1]
  sent = sent + 1
  headers["Authorization"] = d[2]
  local body = string.format(ping, d[1], d[3], d[4], d[5], base_ts + sent * step_s)
  return wrk.format("POST", "/v1/pings", headers, body)
end

accepted = 0  -- a global of the thread's Lua state, read back by done()
local threads = {}

setup = function(thread)
  table.insert(threads, thread)
end

response = function(status, headers, body)
  if status == 200 and string.find(body, '"status":"accepted"', 1, true) then
    accepted = accepted + 1
  end
end

done = function(summary, latency, requests)
  local n = 0
  for _, thread in ipairs(threads) do
    n = n + thread:get("accepted")
  end
  io.write(string.format("accepted answers: %d\n", n))
end
