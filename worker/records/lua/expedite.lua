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
-- luacheck: read globals server_now expedite_one (prelude.lua)

local args = {prefix = ARGV[1], sub = ARGV[2], first_id = 3}
local now = server_now()
local moved = 0
for i = args.first_id, #ARGV do
  moved = moved + expedite_one(args.prefix, KEYS[1], args.sub, ARGV[i], now)
end
return moved
