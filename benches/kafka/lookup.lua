-- wrk script of scripts/bench-kafka.sh: freshet feature lookups with random entities that the
-- store holds. Prints one line 'WRKJSON {...}' (the format of the peers' wrk_json.lua).
--   LOOKUP_IDS=file     entity ids, one per line (required)
--   LOOKUP_N=n          POST /v1/features with n random ids per request (default 1)
--   LOOKUP_GET=1        GET /v1/features/{view}/{id} instead (one id per request)
--   LOOKUP_VIEW=view    the feature view (default card)
local ids = {}
for line in io.lines(os.getenv("LOOKUP_IDS")) do
  if line ~= "" then ids[#ids + 1] = line end
end
local n = tonumber(os.getenv("LOOKUP_N") or "1")
local view = os.getenv("LOOKUP_VIEW") or "card"
local get = os.getenv("LOOKUP_GET") == "1"

function init(args)
  math.randomseed(7 + (tonumber(tostring({}):match("0x(%x+)"), 16) or 0) % 1000)
end

request = function()
  if get then
    return wrk.format("GET", "/v1/features/" .. view .. "/" .. ids[math.random(#ids)])
  end
  local picked = {}
  for i = 1, n do picked[i] = '"' .. ids[math.random(#ids)] .. '"' end
  return wrk.format("POST", "/v1/features", { ["Content-Type"] = "application/json" },
    '{"view":"' .. view .. '","entities":[' .. table.concat(picked, ",") .. ']}')
end

function done(s, lat, req)
  io.write(string.format('WRKJSON {"requests":%d,"rps":%.1f,"p50_us":%d,"p99_us":%d,"p999_us":%d,'
    .. '"max_us":%d,"mean_us":%.1f,"non2xx":%d,"sock_errors":%d}\n', s.requests, s.requests / s.duration * 1e6,
    lat:percentile(50), lat:percentile(99), lat:percentile(99.9), lat.max, lat.mean, s.errors.status,
    s.errors.connect + s.errors.read + s.errors.write + s.errors.timeout))
end
