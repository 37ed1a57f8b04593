-- EXTEND: extends the leases a worker still holds (all of its claims share one lease).
--
-- KEYS[1] due: ZSET of delivery ids by lease end or next due time, server ms
-- ARGV[1] key prefix
-- ARGV[2] old lease: the lease the claims hold, server ms (the ownership token)
-- ARGV[3] lease: how long the new lease lasts from now, ms
-- ARGV[4...] delivery ids
--
-- Returns {new lease (server ms), ids kept}.
-- luacheck: std lua51
-- luacheck: globals ARGV KEYS redis
-- luacheck: read globals server_now (prelude.lua)

local args = {prefix = ARGV[1], old_lease = ARGV[2], lease_ms = tonumber(ARGV[3]), first_id = 4}
local lease = server_now() + args.lease_ms
local kept = {}
for i = args.first_id, #ARGV do
  local did = ARGV[i]
  local key = args.prefix .. ':delivery:' .. did
  local cur = redis.call('HMGET', key, 'state', 'lease')
  if cur[1] == 'running' and cur[2] == args.old_lease then
    redis.call('HSET', key, 'lease', lease)
    redis.call('ZADD', KEYS[1], lease, did)
    kept[#kept + 1] = did
  end
end
return {lease, kept}
