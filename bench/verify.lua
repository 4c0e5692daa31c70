-- wrk: POST /verify {"api_key": ...} (SPEC §6), cycling through pre-built requests.
package.path = debug.getinfo(1, "S").source:match("@?(.*/)") .. "?.lua;" .. package.path
init, request = require("requests").ring(1000, function(k)
   return wrk.format("POST", "/verify", {["Content-Type"] = "application/json"},
                     '{"api_key":"' .. k .. '"}')
end)
