-- Shared by verify.lua and auth.lua: reads the valid secrets (BENCH_SECRETS, one a line)
-- and pre-builds a ring of requests, 80 % valid keys and 20 % unknown ones, so wrk only
-- cycles through ready strings.
local M = {}
local b62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

function M.keys(n)
   local secrets = {}
   local f = assert(io.open(os.getenv("BENCH_SECRETS"), "r"))
   for line in f:lines() do
      if #line > 0 then secrets[#secrets + 1] = line end
   end
   f:close()
   math.randomseed(42)
   local keys = {}
   for i = 1, n do
      if math.random(100) <= 80 then
         keys[i] = secrets[(i - 1) % #secrets + 1]
      else
         local t = {"sec_0"}
         for j = 1, 18 do
            local k = math.random(62)
            t[#t + 1] = b62:sub(k, k)
         end
         keys[i] = table.concat(t)
      end
   end
   return keys
end

-- wrk's init and request for a ring of n requests, each built from a key by build(key).
function M.ring(n, build)
   local keys, reqs, i = M.keys(n), {}, 0
   local init = function(args)
      for k, key in ipairs(keys) do
         reqs[k] = build(key)
      end
   end
   local request = function()
      i = i % #reqs + 1
      return reqs[i]
   end
   return init, request
end

return M
