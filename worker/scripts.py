"""Lua scripts: every state change of a delivery record is one atomic script."""

# KEYS: dispatch, due.
# ARGV: prefix, now, lost_after, lease, inline limit, route count, then per event type:
#   type, n, n subscriber ids; then the count of subscribers that may be delivered inline and
#   their ids; then the event ids.
# Creates one record per matching subscriber. The deliveries of the first inline-eligible
# subscriber met (up to the limit) are created already claimed by the caller, so a lone event
# costs one script call from trigger to attempt. Returns {created ids, claims, missing events}.
DISPATCH = """
local prefix, now, lost_after, lease = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local limit = tonumber(ARGV[5])
local i = 7
local routes = {}
for _ = 1, tonumber(ARGV[6]) do
  local n = tonumber(ARGV[i + 1])
  local subs = {}
  for k = 1, n do subs[k] = ARGV[i + 1 + k] end
  routes[ARGV[i]] = subs
  i = i + 2 + n
end
local eligible = {}
local n_inline = tonumber(ARGV[i])
for k = 1, n_inline do eligible[ARGV[i + k]] = true end
i = i + 1 + n_inline
local created, claims, missing = {}, {}, {}
local inline = nil
for e = i, #ARGV do
  local eid = ARGV[e]
  if redis.call('ZSCORE', KEYS[1], eid) then
    local event = redis.call('HMGET', prefix .. ':event:' .. eid, 'type', 'body')
    if event[1] then
      for _, sub in ipairs(routes[event[1]] or {}) do
        local did = eid .. ':' .. sub
        local key = prefix .. ':delivery:' .. did
        if redis.call('EXISTS', key) == 0 then
          if inline == nil and eligible[sub] then inline = sub end
          if sub == inline and #claims < limit then
            redis.call('HSET', key, 'event', eid, 'sub', sub, 'state', 'running', 'attempts', 1,
                       'trigger', 'scheduled', 'created', now, 'lease', lease)
            redis.call('ZADD', KEYS[2], lease, did)
            local state = redis.call('HMGET', prefix .. ':subscriber:' .. sub, 'disabled', 'reason')
            local disabled = ''
            if state[1] == '1' then disabled = state[2] or 'subscriber disabled' end
            claims[#claims + 1] = {did, eid, sub, 1, 'scheduled', event[2], disabled}
          else
            redis.call('HSET', key, 'event', eid, 'sub', sub, 'state', 'queued', 'attempts', 0,
                       'trigger', 'scheduled', 'created', now)
            redis.call('ZADD', KEYS[2], lost_after, did)
            created[#created + 1] = did
          end
        end
      end
    else
      missing[#missing + 1] = eid
    end
    redis.call('ZREM', KEYS[1], eid)
  end
end
return {created, claims, missing}
"""

# KEYS: due. ARGV: prefix, lease, delivery ids... Returns, per id, 0 (not queued: someone else
# has it, or it is finished) or {event, subscriber, attempt, trigger, body, disabled reason}.
CLAIM = """
local prefix, lease = ARGV[1], ARGV[2]
local out = {}
for i = 3, #ARGV do
  local did = ARGV[i]
  local key = prefix .. ':delivery:' .. did
  local rec = redis.call('HMGET', key, 'state', 'event', 'sub', 'trigger')
  if rec[1] == 'queued' then
    local n = redis.call('HINCRBY', key, 'attempts', 1)
    redis.call('HSET', key, 'state', 'running', 'lease', lease)
    redis.call('ZADD', KEYS[1], lease, did)
    local body = redis.call('HGET', prefix .. ':event:' .. rec[2], 'body') or ''
    local sub = redis.call('HMGET', prefix .. ':subscriber:' .. rec[3], 'disabled', 'reason')
    local disabled = ''
    if sub[1] == '1' then disabled = sub[2] or 'subscriber disabled' end
    out[#out + 1] = {did, rec[2], rec[3], n, rec[4] or 'scheduled', body, disabled}
  else
    out[#out + 1] = 0
  end
end
return out
"""

# KEYS: due. ARGV: prefix, old lease, new lease, delivery ids... Extends leases still held.
EXTEND = """
local prefix, old, new = ARGV[1], ARGV[2], ARGV[3]
local count = 0
for i = 4, #ARGV do
  local key = prefix .. ':delivery:' .. ARGV[i]
  local cur = redis.call('HMGET', key, 'state', 'lease')
  if cur[1] == 'running' and cur[2] == old then
    redis.call('HSET', key, 'lease', new)
    redis.call('ZADD', KEYS[1], new, ARGV[i])
    count = count + 1
  end
end
return count
"""

# KEYS: due, dead. ARGV: prefix, now, record ttl, log size, dead-letter ttl, then per delivery
# nine fields: id, subscriber, lease, outcome, attempt json, next due, letter json,
# disable after (ms), reason. Records every attempt; moves state only while the lease is held.
FINISH = """
local prefix, now, ttl, log_size, dead_ttl = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local owned = {}
for i = 6, #ARGV, 9 do
  local did, sub, lease, outcome = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local reason = ARGV[i + 8]
  local key = prefix .. ':delivery:' .. did
  local log = prefix .. ':attempts:' .. did
  local health = prefix .. ':subscriber:' .. sub
  redis.call('RPUSH', log, ARGV[i + 4])
  redis.call('LTRIM', log, -tonumber(log_size), -1)
  redis.call('EXPIRE', log, ttl)
  local cur = redis.call('HMGET', key, 'state', 'lease')
  if cur[1] ~= 'running' or cur[2] ~= lease then
    owned[#owned + 1] = 0
  else
    if outcome == 'delivered' then
      redis.call('HDEL', health, 'failing_since')
    elseif outcome ~= 'skipped' then
      redis.call('HSETNX', health, 'failing_since', now)
      local since = tonumber(redis.call('HGET', health, 'failing_since'))
      if outcome == 'gone' then
        redis.call('HSET', health, 'disabled', '1', 'reason', reason, 'disabled_at', now)
      elseif tonumber(now) - since >= tonumber(ARGV[i + 7]) then
        reason = 'subscriber disabled: every attempt failed for ' ..
                 math.floor((tonumber(now) - since) / 1000) .. ' s'
        redis.call('HSET', health, 'disabled', '1', 'reason', reason, 'disabled_at', now)
        outcome = 'dead'
      end
    end
    if outcome == 'delivered' then
      redis.call('HSET', key, 'state', 'delivered', 'done', now)
      redis.call('ZREM', KEYS[1], did)
      redis.call('EXPIRE', key, ttl)
    elseif outcome == 'retry' then
      redis.call('HSET', key, 'state', 'waiting', 'next', ARGV[i + 5])
      redis.call('ZADD', KEYS[1], ARGV[i + 5], did)
    else
      redis.call('HSET', key, 'state', 'dead', 'done', now, 'reason', reason)
      redis.call('ZREM', KEYS[1], did)
      redis.call('EXPIRE', key, dead_ttl)
      redis.call('EXPIRE', log, dead_ttl)
      local letter = cjson.decode(ARGV[i + 6])
      letter['reason'] = reason
      redis.call('SET', prefix .. ':dead:' .. did, cjson.encode(letter), 'EX', dead_ttl)
      redis.call('ZADD', KEYS[2], now, did)
    end
    owned[#owned + 1] = 1
  end
end
return owned
"""

# KEYS: due, dispatch. ARGV: prefix, now, lost_after, batch, requeue queued (0/1)
SWEEP = """
local prefix, now, lost_after, batch, requeue = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local deliveries, events = {}, {}
for _, did in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, batch)) do
  local key = prefix .. ':delivery:' .. did
  local state = redis.call('HGET', key, 'state')
  if state == 'waiting' or state == 'running' or (state == 'queued' and requeue == '1') then
    redis.call('HSET', key, 'state', 'queued')
    redis.call('ZADD', KEYS[1], lost_after, did)
    deliveries[#deliveries + 1] = did
  elseif state == 'queued' then
    redis.call('ZADD', KEYS[1], lost_after, did)
  else
    redis.call('ZREM', KEYS[1], did)
  end
end
for _, eid in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, batch)) do
  redis.call('ZADD', KEYS[2], lost_after, eid)
  if requeue == '1' then events[#events + 1] = eid end
end
return {deliveries, events}
"""
