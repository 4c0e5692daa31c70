-- wrk: GET /auth with Authorization: Bearer <key> (forward auth, SPEC §6), cycling through
-- pre-built requests.
package.path = debug.getinfo(1, "S").source:match("@?(.*/)") .. "?.lua;" .. package.path
local keys = require("requests").keys(1000)
local reqs, i = {}, 0

init = function(args)
   for n, k in ipairs(keys) do
      reqs[n] = wrk.format("GET", "/auth", {["Authorization"] = "Bearer " .. k})
   end
end

request = function()
   i = i % #reqs + 1
   return reqs[i]
end
