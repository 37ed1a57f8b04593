-- RECORD EVENTS: the commit point of a publish. Records each event (its exact body bytes) and
-- appends its id to the pending list, all or nothing; an idempotency key already seen answers
-- the id it was first given and records nothing, and one seen with another event (its
-- fingerprint differs) refuses the whole call before anything is written. Arms the dispatch
-- trigger when none is armed (the caller then sends the one Celery message), or wakes a
-- dispatch task lingering for work.
--
-- KEYS[1] pending: LIST of event ids in publish order
-- KEYS[2] dispatch armed: STRING, set (server ms) while a dispatch trigger is on its way
-- KEYS[3] dispatch waiting: STRING, set while a dispatch task lingers for work
-- ARGV[1] key prefix
-- ARGV[2] event ttl: how long an event record is kept, s
-- ARGV[3] idempotency ttl: how long an idempotency key answers its first id, s
-- ARGV[4...] events, 7 fields each: event id, event type, body (JSON text), user id,
--   idempotency key ('' for none), fingerprint of the type and data ('' without a key),
--   the publisher's W3C traceparent ('' for none)
--
-- Each recorded event is numbered in its user's sequence (``{prefix}:seq:{sha1 of user id}``, a
-- counter that never expires, named so that no key names the user after an erasure): 1 for a
-- user's first event, then one more per event in publish order. The number is stored with the
-- event (field ``seq``) and sent with every delivery of it. An event an idempotency key already
-- answered (or refused) takes no number.
--
-- A traceparent is stored with the event (field ``traceparent``) for the worker's attempt spans.
--
-- Returns {arm (1 when the caller must send the dispatch trigger, else 0), ids in input order},
-- or {-1, position (from 0) of the first event whose key is held by another event}.
-- luacheck: std lua51
-- luacheck: globals ARGV KEYS redis

local FIELDS = 7
local prefix, ttl, idem_ttl = ARGV[1], ARGV[2], ARGV[3]
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)

-- {id, fingerprint} an idempotency key holds ('id fingerprint'; a bare id, written before
-- fingerprints were kept, matches any event), or nil.
local function held(idem)
  local value = redis.call('GET', prefix .. ':idem:' .. idem)
  if not value then
    return nil
  end
  local space = string.find(value, ' ', 1, true)
  if not space then
    return {value, ''}
  end
  return {string.sub(value, 1, space - 1), string.sub(value, space + 1)}
end

-- Every key's owner {id, fingerprint}, read before any write; nil and the refused
-- event's position when a key is held by another event.
local function owners()
  local owner = {}
  for i = 4, #ARGV, FIELDS do
    local idem, fp = ARGV[i + 4], ARGV[i + 5]
    if idem ~= '' then
      local prior = owner[idem] or held(idem)
      if prior and prior[2] ~= '' and prior[2] ~= fp then
        return nil, (i - 4) / FIELDS
      end
      owner[idem] = prior or {ARGV[i], fp}
    end
  end
  return owner
end

local function record(eid, kind, body, user, traceparent)
  local key = prefix .. ':event:' .. eid
  local seq = redis.call('INCR', prefix .. ':seq:' .. redis.sha1hex(user))
  redis.call('HSET', key, 'type', kind, 'body', body, 'user', user, 'published_at', now,
             'seq', seq)
  if traceparent ~= '' then
    redis.call('HSET', key, 'traceparent', traceparent)
  end
  redis.call('EXPIRE', key, ttl)
  redis.call('RPUSH', KEYS[1], eid)
end

local owner, refused = owners()
if not owner then
  return {-1, refused}
end
local ids, added = {}, 0
for i = 4, #ARGV, FIELDS do
  local eid, idem = ARGV[i], ARGV[i + 4]
  local first = owner[idem]
  if first and first[1] ~= eid then
    eid = first[1]
  else
    record(eid, ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 6])
    if first then
      redis.call('SET', prefix .. ':idem:' .. idem, eid .. ' ' .. first[2], 'EX', idem_ttl)
    end
    added = added + 1
  end
  ids[#ids + 1] = eid
end

-- The audit's count of events published (``{prefix}:tally``), in the same call.
if added > 0 then redis.call('HINCRBY', prefix .. ':tally', 'published', added) end

local arm = 0
if added > 0 then
  if redis.call('SET', KEYS[2], now, 'NX') then
    arm = 1
  elseif redis.call('DEL', KEYS[3]) == 1 then
    redis.call('PUBLISH', prefix .. ':wake', 'dispatch')
  end
end
return {arm, ids}
