-- wrk script of benchmarks/http.py: devices walking (benchmarks/walks.py) POST /v1/pings,
-- round-robin, each request the next position of its device on its walk, with that
-- device's own token and ts. benchmarks/http.py substitutes the placeholders; run it with
-- one thread (-t1): the counters below live in that thread's Lua state.
--
-- The data file has one line a device: id, "Bearer <token>", the ts of its first ping,
-- seconds between its pings, then lat,lon,accuracy_m of each ping, comma-separated.
-- `sent` starts where the previous run of the same walks stopped ($start), so no ping is
-- sent twice; a device whose walk is over keeps sending its last position, counted in
-- `exhausted`. At the end, one line each: "accepted: N", "sent: N", "exhausted: N", and
-- the entries, exits and notifications in the accepted answers.

local devices = {}
for line in io.lines("$data") do
  local id, auth, ts0, every, rest = line:match("^([^\t]+)\t([^\t]+)\t([^\t]+)\t([^\t]+)\t(.*)$$")
  local points = {}
  for v in rest:gmatch("[^,]+") do
    points[#points + 1] = tonumber(v)
  end
  devices[#devices + 1] = { id, auth, tonumber(ts0), tonumber(every), points, #points / 3 }
end

local count = #devices
local headers = { ["Content-Type"] = "application/json" }
local ping = '{"device_id":"%s","lat":%.6f,"lon":%.6f,"accuracy_m":%.1f,"ts":%.3f}'
-- globals of the thread's Lua state, read back by done()
sent, exhausted, accepted, entries, exits, notifications = $start, 0, 0, 0, 0, 0

request = function()
  local d = devices[sent % count + 1]
  local k = math.floor(sent / count)
  sent = sent + 1
  local n = k
  if n >= d[6] then
    n = d[6] - 1
    exhausted = exhausted + 1
  end
  local p = d[5]
  headers["Authorization"] = d[2]
  local body = string.format(ping, d[1], p[3 * n + 1], p[3 * n + 2], p[3 * n + 3], d[3] + k * d[4])
  return wrk.format("POST", "/v1/pings", headers, body)
end

local threads = {}

setup = function(thread)
  table.insert(threads, thread)
end

local function occurrences(body, text)
  local n, at = 0, 1
  while true do
    at = string.find(body, text, at, true)
    if at == nil then
      return n
    end
    n, at = n + 1, at + #text
  end
end

response = function(status, headers, body)
  if status == 200 and string.find(body, '"status":"accepted"', 1, true) then
    accepted = accepted + 1
    if not string.find(body, '"events":[]', 1, true) then
      entries = entries + occurrences(body, '"type":"entry"')
      exits = exits + occurrences(body, '"type":"exit"')
      notifications = notifications + occurrences(body, '"notification_id"')
    end
  end
end

done = function(summary, latency, requests)
  for _, name in ipairs({ "accepted", "sent", "exhausted", "entries", "exits", "notifications" }) do
    local n = 0
    for _, thread in ipairs(threads) do
      n = n + thread:get(name)
    end
    io.write(string.format("%s: %d\n", name, n))
  end
end
