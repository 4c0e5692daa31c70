-- wrk: GET /auth with Authorization: Bearer <key> (forward auth, SPEC §6), cycling through
-- pre-built requests.
package.path = debug.getinfo(1, "S").source:match("@?(.*/)") .. "?.lua;" .. package.path
init, request = require("requests").ring(1000, function(k)
   return wrk.format("GET", "/auth", {["Authorization"] = "Bearer " .. k})
end)
