-- RECORD EVENTS: the commit point of a publish. Records each event (its exact body bytes) and
-- appends its id to the pending list, all or nothing; an idempotency key already seen answers
-- the id it was first given and records nothing. Arms the dispatch trigger when none is armed
-- (the caller then sends the one Celery message), or wakes a dispatch task lingering for work.
--
-- KEYS[1] pending: LIST of event ids in publish order
-- KEYS[2] dispatch armed: STRING, set (server ms) while a dispatch trigger is on its way
-- KEYS[3] dispatch waiting: STRING, set while a dispatch task lingers for work
-- ARGV[1] key prefix
-- ARGV[2] event ttl: how long an event record is kept, s
-- ARGV[3] idempotency ttl: how long an idempotency key answers its first id, s
-- ARGV[4...] events, 5 fields each: event id, event type, body (JSON text), user id,
--   idempotency key ('' for none)
--
-- Each recorded event is numbered in its user's sequence (``{prefix}:seq:{user id}``, a counter
-- that never expires): 1 for a user's first event, then one more per event in publish order. The
-- number is stored with the event (field ``seq``) and sent with every delivery of it. An event an
-- idempotency key already answered takes no number.
--
-- Returns {arm (1 when the caller must send the dispatch trigger, else 0), ids in input order}.
-- luacheck: std lua51
-- luacheck: globals ARGV KEYS redis

local FIELDS = 5
local prefix, ttl, idem_ttl = ARGV[1], ARGV[2], ARGV[3]
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)

-- The id an idempotency key already answers, or nil after claiming the key for ``eid``.
local function known_id(idem, eid)
  if idem == '' then
    return nil
  end
  local ikey = prefix .. ':idem:' .. idem
  local prior = redis.call('GET', ikey)
  if prior then
    return prior
  end
  redis.call('SET', ikey, eid, 'EX', idem_ttl)
  return nil
end

local function record(eid, kind, body, user)
  local key = prefix .. ':event:' .. eid
  local seq = redis.call('INCR', prefix .. ':seq:' .. user)
  redis.call('HSET', key, 'type', kind, 'body', body, 'user', user, 'published_at', now,
             'seq', seq)
  redis.call('EXPIRE', key, ttl)
  redis.call('RPUSH', KEYS[1], eid)
end

local ids, added = {}, 0
for i = 4, #ARGV, FIELDS do
  local eid = ARGV[i]
  local prior = known_id(ARGV[i + 4], eid)
  if prior then
    eid = prior
  else
    record(eid, ARGV[i + 1], ARGV[i + 2], ARGV[i + 3])
    added = added + 1
  end
  ids[#ids + 1] = eid
end

local arm = 0
if added > 0 then
  if redis.call('SET', KEYS[2], now, 'NX') then
    arm = 1
  elseif redis.call('DEL', KEYS[3]) == 1 then
    redis.call('PUBLISH', prefix .. ':wake', 'dispatch')
  end
end
return {arm, ids}
