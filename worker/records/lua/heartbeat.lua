-- HEARTBEAT: renews the slots a live worker holds; only those still there (a lapsed slot stays
-- lapsed).
--
-- ARGV[1] key prefix
-- ARGV[2] slot ttl: how long a renewed slot lives without the next heartbeat, ms
-- ARGV[3...] held slots, 2 fields each: subscriber id, slot token
--
-- Returns 0.
-- luacheck: std lua51
-- luacheck: globals ARGV KEYS redis
-- luacheck: read globals server_now (prelude.lua)

local args = {prefix = ARGV[1], slot_ttl_ms = tonumber(ARGV[2]), first_slot = 3}
local expiry = server_now() + args.slot_ttl_ms
for i = args.first_slot, #ARGV, 2 do
  redis.call('ZADD', args.prefix .. ':slots:' .. ARGV[i], 'XX', expiry, ARGV[i + 1])
end
return 0
