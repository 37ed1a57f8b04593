-- REPLAY: puts dead deliveries back as ready (fresh schedule, same webhook-id, trigger
-- 'manual'), outside any ordering chain; recreates an event record from its letter if that
-- expired (with its number in its user's sequence, when the letter has one). One call takes a
-- chunk of ids; each subscriber's slot is seen to once, at the end.
-- The deliveries are open again: no longer counted ``dead`` for the audit.
--
-- KEYS[1] dead: ZSET of dead delivery ids by time of death, server ms
-- KEYS[2] active subscribers: SET of subscriber ids
-- ARGV[1] key prefix
-- ARGV[2] event ttl: how long a recreated event record is kept, s
-- ARGV[3] trigger expiry: how long an armed slot lives, ms
-- ARGV[4...] delivery ids
--
-- Returns {ids replayed (those that were dead letters), triggers}.
-- luacheck: std lua51
-- luacheck: globals ARGV KEYS redis cjson
-- luacheck: read globals server_now ensure_slot (prelude.lua)

local prefix, event_ttl, expiry_ms = ARGV[1], ARGV[2], tonumber(ARGV[3])
local now = server_now()

-- One dead letter back to ready; its subscriber, or nil when there is no such letter.
local function replay_one(did)
  local letter = redis.call('GET', prefix .. ':dead:' .. did)
  if not letter then return nil end
  local data = cjson.decode(letter)
  local sub = data['subscriber_id']
  local key = prefix .. ':delivery:' .. did
  local ekey = prefix .. ':event:' .. data['event_id']
  if redis.call('EXISTS', ekey) == 0 then
    redis.call('HSET', ekey, 'type', data['event_type'], 'body', data['body'])
    if data['sequence'] then redis.call('HSET', ekey, 'seq', data['sequence']) end
    redis.call('EXPIRE', ekey, event_ttl)
  end
  redis.call('HSET', key, 'event', data['event_id'], 'sub', sub, 'type', data['event_type'],
             'state', 'ready', 'attempts', 0, 'trigger', 'manual', 'chain', '')
  redis.call('HDEL', key, 'reason', 'done', 'next', 'lease', 'deferrals')
  redis.call('PERSIST', key)
  redis.call('RPUSH', prefix .. ':ready:' .. sub, did)
  redis.call('ZREM', KEYS[1], did)
  redis.call('DEL', prefix .. ':dead:' .. did)
  redis.call('ZREM', prefix .. ':dead-of:' .. sub, did)
  local published = redis.call('HGET', ekey, 'published_at') or now
  redis.call('ZADD', prefix .. ':open:' .. sub, published, did)
  return sub
end

local replayed, subs, count = {}, {}, {}
for i = 4, #ARGV do
  local sub = replay_one(ARGV[i])
  if sub then
    replayed[#replayed + 1] = ARGV[i]
    if not count[sub] then
      count[sub] = 0
      subs[#subs + 1] = sub
    end
    count[sub] = count[sub] + 1
  end
end
local triggers = {}
for _, sub in ipairs(subs) do
  redis.call('HINCRBY', prefix .. ':tally:' .. sub, 'dead', -count[sub])
  redis.call('SADD', KEYS[2], sub)
  ensure_slot(prefix, sub, now, now + expiry_ms, triggers)
end
return {replayed, triggers}
