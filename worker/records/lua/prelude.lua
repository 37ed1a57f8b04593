-- The shared prelude: the loader (records.scripts) puts this file in front of every transition,
-- so each script Redis runs is this text followed by the transition's own. It defines locals
-- only (nothing global) and takes no KEYS or ARGV of its own.
--
-- server_now()                              the Redis server's clock, ms
-- live_slots(prefix, sub, now)              drops the subscriber's lapsed slots; how many are live
-- arm(prefix, sub, expiry, out)             arms one more slot (a deliver trigger the caller sends)
-- wake_slot(prefix, sub, now)               wakes the subscriber's lingering slot, if one waits
-- ensure_slot(prefix, sub, now, expiry, out)  work is ready: wake a slot, or arm one if none lives
--                                           (none while the subscriber is held: hold_until)
-- adaptive_rate(rate, changed, from, limit, now)  the subscriber's rate after 429s, recovering
-- expedite_one(prefix, due, sub, did, now)  a waiting delivery of ``sub`` made due now: 1, else 0
-- expedite_open(prefix, due, sub, now)      every waiting delivery of ``sub`` made due now: count
-- WAITING_MS                                how long a waiting marker outlives the wait that set it
-- tally(counts, sub, field, n)              adds to a count for the audit ('' for the global one)
-- flush_tally(prefix, counts)               writes those counts, one HINCRBY per field
--
-- ``out`` collects {subscriber, token, failing (0/1)} for the caller to send as deliver triggers.
-- luacheck: std lua51
-- luacheck: globals redis
-- luacheck: push no unused

-- How long a waiting marker outlives the wait that set it (a linger is far shorter), ms.
local WAITING_MS = 5000

local function server_now()
  local t = redis.call('TIME')
  return t[1] * 1000 + math.floor(t[2] / 1000)
end

-- ``failing`` (0/1) when the caller already read it, else it is read here.
local function arm(prefix, sub, expiry, out, failing)
  local token = redis.call('INCR', prefix .. ':slot-seq')
  redis.call('ZADD', prefix .. ':slots:' .. sub, expiry, token)
  if failing == nil then
    failing = redis.call('HEXISTS', prefix .. ':subscriber:' .. sub, 'failing_since')
  end
  out[#out + 1] = {sub, tostring(token), failing}
end

local function live_slots(prefix, sub, now)
  local key = prefix .. ':slots:' .. sub
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  return redis.call('ZCARD', key)
end

-- Work for a subscriber whose slots are live wakes one that lingers for it (delivery.wake): its
-- empty claim pushed its token on ``{prefix}:slot-waiting:{sub}``; ``slot:{sub}:{token}`` is
-- published on ``{prefix}:wake``. The slot that began waiting last (whose thread ran last) goes
-- first. Returns 1 if a live one was woken.
local function wake_slot(prefix, sub, now)
  local waiting = prefix .. ':slot-waiting:' .. sub
  while true do
    local token = redis.call('LPOP', waiting)
    if not token then return 0 end
    local lapses = redis.call('ZSCORE', prefix .. ':slots:' .. sub, token)
    if lapses and tonumber(lapses) > now then
      redis.call('PUBLISH', prefix .. ':wake', 'slot:' .. sub .. ':' .. token)
      return 1
    end
  end
end

-- A held subscriber (a gate in CLAIM withholds it until ``hold_until``, server ms) gets no slot
-- before that time: SWEEP arms one at or after it. The hold is read only when a slot would be
-- armed, in the read arming makes anyway.
local function ensure_slot(prefix, sub, now, expiry, out)
  if redis.call('LLEN', prefix .. ':ready:' .. sub) == 0 then return end
  if live_slots(prefix, sub, now) == 0 then
    local h = redis.call('HMGET', prefix .. ':subscriber:' .. sub, 'failing_since', 'hold_until')
    if h[2] and tonumber(h[2]) > now then return end
    arm(prefix, sub, expiry, out, h[1] and 1 or 0)
  else
    wake_slot(prefix, sub, now)
  end
end

-- The rate (attempts/s) a subscriber is allowed after 429s, or nil when none was set: ``rate``
-- was set at ``changed`` (server ms) and grows back by max(1, 10 % of the configured ``limit``,
-- else of ``rate`` itself) per second since, up to ``limit``, else to twice the rate ``from``
-- which the first cut started. Returns the rate and whether it is back at its ceiling.
local function adaptive_rate(rate, changed, from, limit, now)
  rate = rate and tonumber(rate)
  if not rate then return nil, false end
  local step = math.max(1, 0.1 * (limit or rate))
  local ceiling = limit or 2 * (tonumber(from or '') or rate)
  local grown = rate + step * math.max(0, now - tonumber(changed or now)) / 1000
  if grown >= ceiling then return ceiling, true end
  return grown, false
end

-- EXPEDITE's step: delivery ``did``, if it is a waiting one of subscriber ``sub``, is due now
-- (the next SWEEP makes it ready). Returns 1 if it was moved, else 0.
local function expedite_one(prefix, due, sub, did, now)
  local rec = redis.call('HMGET', prefix .. ':delivery:' .. did, 'state', 'sub')
  if rec[1] ~= 'waiting' or rec[2] ~= sub then return 0 end
  redis.call('ZADD', due, 'XX', now, did)
  return 1
end

-- Every waiting delivery of ``sub`` (its unfinished ones are indexed in ``{prefix}:open:{sub}``)
-- is due now. Returns how many were moved.
local function expedite_open(prefix, due, sub, now)
  local moved = 0
  for _, did in ipairs(redis.call('ZRANGE', prefix .. ':open:' .. sub, 0, -1)) do
    moved = moved + expedite_one(prefix, due, sub, did, now)
  end
  return moved
end

-- The audit's counts (``{prefix}:tally:{sub}``, and ``{prefix}:tally`` for sub ''), gathered
-- during a call and written at its end: a transition counts only the state changes it makes.
local function tally(counts, sub, field, n)
  local row = counts[sub]
  if not row then
    row = {}
    counts[sub] = row
  end
  row[field] = (row[field] or 0) + (n or 1)
end

local function flush_tally(prefix, counts)
  for sub, row in pairs(counts) do
    local key = prefix .. ':tally'
    if sub ~= '' then key = key .. ':' .. sub end
    for field, n in pairs(row) do
      if n ~= 0 then redis.call('HINCRBY', key, field, n) end
    end
  end
end

-- luacheck: pop
