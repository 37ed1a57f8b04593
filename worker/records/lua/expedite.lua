-- EXPEDITE: makes a subscriber's waiting deliveries among the given ids due now (a subscriber
-- removed from the subscribers file: the deliver path dead-letters them at once rather than at
-- their next retry).
--
-- KEYS[1] due: ZSET of delivery ids by lease end or next due time, server ms
-- ARGV[1] key prefix
-- ARGV[2] subscriber id
-- ARGV[3...] delivery ids
--
-- Returns how many were made due.
-- luacheck: std lua51
-- luacheck: globals ARGV KEYS redis
-- luacheck: read globals server_now (prelude.lua)

local args = {prefix = ARGV[1], sub = ARGV[2], first_id = 3}
local now = server_now()
local moved = 0
for i = args.first_id, #ARGV do
  local rec = redis.call('HMGET', args.prefix .. ':delivery:' .. ARGV[i], 'state', 'sub')
  if rec[1] == 'waiting' and rec[2] == args.sub then
    redis.call('ZADD', KEYS[1], 'XX', now, ARGV[i])
    moved = moved + 1
  end
end
return moved
