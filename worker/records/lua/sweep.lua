-- SWEEP: makes due retries ready, takes back deliveries whose lease ran out (their worker died
-- or lost Redis), arms a slot for every subscriber with ready work and none live (a lost or
-- lapsed trigger), and re-arms the dispatch trigger when events wait and it lapsed. Drops the
-- dead-letter index entries (``dead``, ``{prefix}:dead-of:{sub}``) whose letter has expired, so
-- no index entry outlives what it points at.
--
-- KEYS[1] due: ZSET of delivery ids by lease end or next due time, server ms
-- KEYS[2] pending: LIST of event ids, publish order
-- KEYS[3] dispatch-armed: STRING, server ms the dispatch trigger was last armed
-- KEYS[4] active subscribers: SET of subscriber ids
-- KEYS[5] dead: ZSET of dead delivery ids by time of death, server ms
-- ARGV[1] key prefix
-- ARGV[2] trigger expiry: how long an armed slot lives, ms
-- ARGV[3] batch: most due deliveries taken, count
-- ARGV[4] dispatch lost after: an armed dispatch trigger older than this is re-armed, ms
-- ARGV[5] dead-letter ttl: how long a dead letter is kept, ms
--
-- Returns {triggers, 1 if a dispatch trigger must be sent, deliveries moved, how late (ms) each
-- retry made ready was}.
-- luacheck: std lua51
-- luacheck: globals ARGV KEYS redis
-- luacheck: read globals server_now ensure_slot (prelude.lua)

local args = {
  prefix = ARGV[1],
  expiry_ms = tonumber(ARGV[2]),
  batch = ARGV[3],
  lost_ms = tonumber(ARGV[4]),
  dead_ttl_ms = tonumber(ARGV[5]),
}
local prefix = args.prefix
local now = server_now()

-- Puts a due delivery back on its subscriber's ready list: a retry at the end, a delivery whose
-- lease ran out at the front (it was in line first). Returns the new state, or nil if it moved
-- no delivery (finished meanwhile).
local function take_back(did)
  local key = prefix .. ':delivery:' .. did
  local rec = redis.call('HMGET', key, 'state', 'sub')
  redis.call('ZREM', KEYS[1], did)
  if rec[1] == 'waiting' then
    redis.call('HSET', key, 'state', 'ready', 'trigger', 'scheduled')
    redis.call('RPUSH', prefix .. ':ready:' .. rec[2], did)
  elseif rec[1] == 'running' then
    redis.call('HSET', key, 'state', 'ready')
    redis.call('LPUSH', prefix .. ':ready:' .. rec[2], did)
  else
    return nil
  end
  redis.call('SADD', KEYS[4], rec[2])
  return rec[1]
end

-- 1 if the dispatch trigger was re-armed (the caller sends it).
local function rearm_dispatch()
  if redis.call('LLEN', KEYS[2]) == 0 then return 0 end
  local armed = redis.call('GET', KEYS[3])
  if armed and now - tonumber(armed) <= args.lost_ms then return 0 end
  redis.call('SET', KEYS[3], now)
  return 1
end

local moved, late = 0, {}
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'WITHSCORES', 'LIMIT', 0, args.batch)
for d = 1, #due, 2 do
  local was = take_back(due[d])
  if was then moved = moved + 1 end
  if was == 'waiting' then late[#late + 1] = now - tonumber(due[d + 1]) end
end
local triggers = {}
local expired = now - args.dead_ttl_ms  -- a letter dead at or before this has expired
redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', expired)
for _, sub in ipairs(redis.call('SMEMBERS', KEYS[4])) do
  ensure_slot(prefix, sub, now, now + args.expiry_ms, triggers)
  redis.call('ZREMRANGEBYSCORE', prefix .. ':dead-of:' .. sub, '-inf', expired)
end
return {triggers, rearm_dispatch(), moved, late}
