-- REPLAY: puts a dead delivery back as ready (fresh schedule, same webhook-id, trigger
-- 'manual'), outside any ordering chain; recreates its event record from the letter if that
-- expired (with its number in its user's sequence, when the letter has one).
--
-- KEYS[1] dead: ZSET of dead delivery ids by time of death, server ms
-- KEYS[2] active subscribers: SET of subscriber ids
-- ARGV[1] key prefix
-- ARGV[2] delivery id
-- ARGV[3] event ttl: how long a recreated event record is kept, s
-- ARGV[4] trigger expiry: how long an armed slot lives, ms
--
-- Returns 0 when there is no such dead letter, else {1, triggers}.
-- luacheck: std lua51
-- luacheck: globals ARGV KEYS redis cjson
-- luacheck: read globals server_now ensure_slot (prelude.lua)

local args = {prefix = ARGV[1], did = ARGV[2], event_ttl = ARGV[3], expiry_ms = tonumber(ARGV[4])}
local prefix, did = args.prefix, args.did
local now = server_now()
local letter = redis.call('GET', prefix .. ':dead:' .. did)
if not letter then return 0 end
local data = cjson.decode(letter)
local sub = data['subscriber_id']
local key = prefix .. ':delivery:' .. did
local ekey = prefix .. ':event:' .. data['event_id']
if redis.call('EXISTS', ekey) == 0 then
  redis.call('HSET', ekey, 'type', data['event_type'], 'body', data['body'])
  if data['sequence'] then redis.call('HSET', ekey, 'seq', data['sequence']) end
  redis.call('EXPIRE', ekey, args.event_ttl)
end
redis.call('HSET', key, 'event', data['event_id'], 'sub', sub, 'type', data['event_type'],
           'state', 'ready', 'attempts', 0, 'trigger', 'manual', 'chain', '')
redis.call('HDEL', key, 'reason', 'done', 'next', 'lease')
redis.call('PERSIST', key)
redis.call('RPUSH', prefix .. ':ready:' .. sub, did)
redis.call('SADD', KEYS[2], sub)
redis.call('ZREM', KEYS[1], did)
redis.call('DEL', prefix .. ':dead:' .. did)
redis.call('ZREM', prefix .. ':dead-of:' .. sub, did)
redis.call('ZADD', prefix .. ':open:' .. sub, redis.call('HGET', ekey, 'published_at') or now, did)
local triggers = {}
ensure_slot(prefix, sub, now, now + args.expiry_ms, triggers)
return {1, triggers}
