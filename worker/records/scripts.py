"""Lua scripts: every state change of a delivery record is one atomic script.

Times are the Redis server's (``TIME``), never a worker's clock: a worker whose clock is off
cannot send a retry early or cut a lease short. Callers pass durations, not instants.

A deliver trigger is a *slot*: ``{prefix}:slots:{sub}`` holds one token per Celery message that
may be attempting the subscriber's deliveries, scored by when it lapses. A script that makes
deliveries ready arms a slot when the subscriber has none (and says so: the caller sends the
message); a claim arms one more while work is left, up to the subscriber's bound. So the number
of messages follows the number of subscribers with work, not the number of events.

The same scripts keep what the metrics read (``ops.metrics``) in step with the records, so a
scrape never scans: ``{prefix}:open:{sub}`` indexes a subscriber's unfinished deliveries by
publish time, ``{prefix}:dead-of:{sub}`` its dead letters by time of death, and
``{prefix}:stats:dead-lettered`` counts dead letters ever made, per subscriber.

And what the operator console reads (``records.activity``), as small and bounded: DRAIN lists each
user's latest events (``{prefix}:user-events:{user}``, expiring with the records), FINISH counts
a subscriber's attempts per minute (``{prefix}:rate:{sub}:{minute}``, kept an hour) and lists the
deliveries of its latest attempts (``{prefix}:recent:{sub}``). A list is trimmed only once it
holds twice what is kept, so a push costs one command most of the time.
"""

#: A user's latest events the console can look up (``Keys.user_events``).
USER_EVENTS_KEPT = 100
#: A subscriber's latest attempts the console shows (``Keys.recent_attempts``).
RECENT_KEPT = 100
#: How long a minute of attempt counts is kept: the success-rate window and a minute of slack.
RATE_TTL_S = 3660

# Shared by the scripts below: the server clock and slot arming. ``out`` collects
# {subscriber, token, failing (0/1)} for the caller to send as deliver triggers. Work for a
# subscriber whose slots are live wakes one that lingers for it (delivery.wake): its empty claim
# pushed its token on ``{prefix}:slot-waiting:{sub}``, and ``slot:{sub}:{token}`` is published
# on ``{prefix}:wake``.
_PRELUDE = """
local function server_now()
  local t = redis.call('TIME')
  return t[1] * 1000 + math.floor(t[2] / 1000)
end
local function arm(prefix, sub, expiry, out)
  local token = redis.call('INCR', prefix .. ':slot-seq')
  redis.call('ZADD', prefix .. ':slots:' .. sub, expiry, token)
  local failing = redis.call('HEXISTS', prefix .. ':subscriber:' .. sub, 'failing_since')
  out[#out + 1] = {sub, tostring(token), failing}
end
local function live_slots(prefix, sub, now)
  local key = prefix .. ':slots:' .. sub
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  return redis.call('ZCARD', key)
end
-- Wake the subscriber's lingering slot that waits for work (see delivery.wake), if any is still
-- live: the one that began waiting last, whose thread ran last. Returns 1 if it did.
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
local function ensure_slot(prefix, sub, now, expiry, out)
  if redis.call('LLEN', prefix .. ':ready:' .. sub) > 0 then
    if live_slots(prefix, sub, now) == 0 then
      arm(prefix, sub, expiry, out)
    else
      wake_slot(prefix, sub, now)
    end
  end
end
-- How long a waiting marker outlives the wait that set it (a linger is far shorter).
local WAITING_MS = 5000
"""

# Operational events (see operational_events), for FINISH: ``notify`` records one exactly as a
# publish records an event (no user: no ordering chain), with ``about`` naming the subscriber the
# drain must leave out; the scheduler sends the dispatch trigger. ``notices`` collects
# {type, event id, subscriber, delivery id} for the caller to log.
_OPERATIONAL = """
local function iso(ms)
  local s = math.floor(ms / 1000)
  local days = math.floor(s / 86400)
  local rem = s - days * 86400
  local z = days + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524)
                          - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local d = doy - math.floor((153 * mp + 2) / 5) + 1
  local m = mp < 10 and mp + 3 or mp - 9
  local y = yoe + era * 400 + (m <= 2 and 1 or 0)
  return string.format('%04d-%02d-%02dT%02d:%02d:%02d.%03dZ', y, m, d, math.floor(rem / 3600),
                       math.floor(rem % 3600 / 60), rem % 60, ms % 1000)
end
local function notify(prefix, ttl, kind, about, data, notices, delivery)
  local now = server_now()
  local eid = 'msg_ops' .. now .. 'n' .. redis.call('INCR', prefix .. ':ops-seq')
  data['subscriberId'] = about
  local body = '{"event":' .. cjson.encode(kind) .. ',"data":' .. cjson.encode(data) ..
               ',"triggeredAt":"' .. iso(now) .. '"}'
  local key = prefix .. ':event:' .. eid
  redis.call('HSET', key, 'type', kind, 'body', body, 'user', '', 'about', about,
             'published_at', now)
  redis.call('EXPIRE', key, ttl)
  redis.call('RPUSH', prefix .. ':pending', eid)
  notices[#notices + 1] = {kind, eid, about, delivery or ''}
end
-- An attempt failed: the streak grows; at ``after`` in a row the incident is announced once.
local function ops_failed(prefix, ttl, sub, health, after, notices)
  local n = redis.call('HINCRBY', health, 'failures', 1)
  if n >= after and redis.call('HSETNX', health, 'notified', 'failing') == 1 then
    local since = tonumber(redis.call('HGET', health, 'failing_since'))
    notify(prefix, ttl, 'webhooks.subscriber.failing', sub,
           {consecutiveFailures = n, failingSince = iso(since)}, notices)
  end
end
-- An attempt was delivered: the streak ends; an announced incident is closed once. A healthy
-- subscriber costs one read here.
local function ops_delivered(prefix, ttl, sub, health, notices)
  local cur = redis.call('HMGET', health, 'failures', 'notified')
  if cur[1] then redis.call('HDEL', health, 'failures') end
  if cur[2] then
    redis.call('HDEL', health, 'notified')
    notify(prefix, ttl, 'webhooks.subscriber.recovered', sub, {}, notices)
  end
end
local function ops_disabled(prefix, ttl, sub, health, was, notices)
  if was ~= '1' and redis.call('HGET', health, 'disabled') == '1' then
    redis.call('HSET', health, 'notified', 'disabled')
    notify(prefix, ttl, 'webhooks.subscriber.disabled', sub,
           {reason = redis.call('HGET', health, 'reason') or ''}, notices)
  end
end
-- A dead operational event is not announced again: no event about its own failure.
local function ops_dead(prefix, ttl, did, sub, key, reason, notices)
  local rec = redis.call('HMGET', key, 'event', 'type', 'attempts')
  if string.sub(rec[2] or '', 1, 9) == 'webhooks.' then return end
  notify(prefix, ttl, 'webhooks.delivery.dead', sub,
         {deliveryId = did, eventId = rec[1], eventType = rec[2],
          attempts = tonumber(rec[3] or 0), reason = reason}, notices, did)
end
"""

# KEYS: pending, dispatch-armed, due, active subscribers.
# ARGV: prefix, batch, trigger expiry (ms), record ttl (s), log size, now (ISO, for the attempt
# log), keep armed (0/1), route count, then per event type: type, n, n x (subscriber, ordered
# 0/1, coalesce 0/1).
# Takes up to a batch of events off the pending list (publish order) and creates one delivery per
# matching subscriber. With per-user ordering, a delivery joins its (subscriber, user) chain and
# is ready only at its head; with coalescing, a newer update supersedes the chain's undelivered
# updates (a waiting head's place in the retry schedule passes to the newcomer). Disarms the
# dispatch trigger when the list is empty, else refreshes it; with keep armed, an empty list
# keeps it and sets ``{prefix}:dispatch-waiting`` (a publish then wakes the caller, see
# reseller_webhooks.worker.delivery.wake).
# Returns {events taken, events whose record expired, triggers, 1 if more are pending}.
DRAIN = (
    _PRELUDE
    + f"local USER_EVENTS_KEPT = {USER_EVENTS_KEPT}\n"
    + """
local prefix, batch, expiry_ms = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local ttl, log_size, now_iso, keep = ARGV[4], tonumber(ARGV[5]), ARGV[6], ARGV[7] == '1'
local now = server_now()
local routes, i = {}, 9
for _ = 1, tonumber(ARGV[8]) do
  local n = tonumber(ARGV[i + 1])
  local subs = {}
  for k = 0, n - 1 do
    local j = i + 2 + 3 * k
    subs[#subs + 1] = {ARGV[j], ARGV[j + 1] == '1', ARGV[j + 2] == '1'}
  end
  routes[ARGV[i]] = subs
  i = i + 2 + 3 * n
end
local UPDATED = 'reseller.user.updated'
local touched, order = {}, {}
local function make_ready(sub, did)
  redis.call('HSET', prefix .. ':delivery:' .. did, 'state', 'ready')
  redis.call('RPUSH', prefix .. ':ready:' .. sub, did)
  if not touched[sub] then
    touched[sub] = true
    order[#order + 1] = sub
  end
end
local function supersede(sub, did, by)
  local key = prefix .. ':delivery:' .. did
  redis.call('ZREM', prefix .. ':open:' .. sub, did)
  redis.call('HSET', key, 'state', 'superseded', 'done', now, 'reason', 'superseded by ' .. by)
  redis.call('EXPIRE', key, ttl)
  local log = prefix .. ':attempts:' .. did
  redis.call('RPUSH', log, cjson.encode({at = now_iso, trigger = 'coalesce',
                                          outcome = 'superseded', superseded_by = by}))
  redis.call('LTRIM', log, -log_size, -1)
  redis.call('EXPIRE', log, ttl)
end
local function coalesce(sub, chain, by)
  local inherit = nil
  for _, did in ipairs(redis.call('LRANGE', chain, 0, -1)) do
    local rec = redis.call('HMGET', prefix .. ':delivery:' .. did, 'state', 'type', 'attempts')
    if rec[2] == UPDATED and (rec[1] == 'blocked' or rec[1] == 'ready' or rec[1] == 'waiting') then
      if rec[1] == 'waiting' then
        local due = redis.call('ZSCORE', KEYS[3], did)
        if due then inherit = {due, rec[3]} end
        redis.call('ZREM', KEYS[3], did)
      end
      supersede(sub, did, by)
      redis.call('LREM', chain, 1, did)
    end
  end
  return inherit
end
local ids = redis.call('LPOP', KEYS[1], batch) or {}
local missing = 0
for _, eid in ipairs(ids) do
  local ev = redis.call('HMGET', prefix .. ':event:' .. eid, 'type', 'user', 'about',
                       'published_at')
  if not ev[1] then
    missing = missing + 1
  else
    if ev[2] and ev[2] ~= '' then  -- the console's lookup by user
      local user_events = prefix .. ':user-events:' .. ev[2]
      if redis.call('LPUSH', user_events, eid) > 2 * USER_EVENTS_KEPT then
        redis.call('LTRIM', user_events, 0, USER_EVENTS_KEPT - 1)
      end
      redis.call('EXPIRE', user_events, ttl)
    end
    local targets = routes[ev[1]] or {}
    if ev[3] then  -- an operational event never goes to the subscriber it is about
      local others = {}
      for _, route in ipairs(targets) do
        if route[1] ~= ev[3] then others[#others + 1] = route end
      end
      targets = others
    end
    for _, route in ipairs(targets) do
      local sub = route[1]
      local did = eid .. ':' .. sub
      local key = prefix .. ':delivery:' .. did
      if redis.call('EXISTS', key) == 0 then
        local chain, state, inherit = '', 'ready', nil
        if route[2] and ev[2] and ev[2] ~= '' then
          chain = prefix .. ':chain:' .. sub .. ':' .. ev[2]
          local head = redis.call('LINDEX', chain, 0)
          if route[3] and ev[1] == UPDATED then inherit = coalesce(sub, chain, eid) end
          local new_head = redis.call('LINDEX', chain, 0)
          if new_head then
            if new_head ~= head then
              -- the head was superseded: the next in line goes now
              if redis.call('HGET', prefix .. ':delivery:' .. new_head, 'state') == 'blocked' then
                make_ready(sub, new_head)
              end
            end
            state, inherit = 'blocked', nil
          elseif inherit then
            state = 'waiting'
          end
          redis.call('RPUSH', chain, did)
        end
        redis.call('HSET', key, 'event', eid, 'sub', sub, 'type', ev[1], 'state', state,
                   'attempts', inherit and inherit[2] or 0, 'trigger', 'scheduled',
                   'created', now, 'chain', chain)
        redis.call('ZADD', prefix .. ':open:' .. sub, ev[4] or now, did)
        if state == 'ready' then
          make_ready(sub, did)
        elseif state == 'waiting' then
          redis.call('HSET', key, 'next', inherit[1])
          redis.call('ZADD', KEYS[3], inherit[1], did)
        end
      end
    end
  end
end
local more = 0
if redis.call('LLEN', KEYS[1]) > 0 then
  redis.call('SET', KEYS[2], now)
  more = 1
elseif keep then
  redis.call('SET', KEYS[2], now)  -- the caller lingers: publishers need not send a trigger
  redis.call('SET', prefix .. ':dispatch-waiting', 1, 'PX', WAITING_MS)  -- ... but wake it
else
  redis.call('DEL', KEYS[2], prefix .. ':dispatch-waiting')
end
local triggers = {}
for _, sub in ipairs(order) do
  redis.call('SADD', KEYS[4], sub)
  ensure_slot(prefix, sub, now, now + expiry_ms, triggers)
end
return {#ids, missing, triggers, more}
"""
)

# KEYS: due. ARGV: prefix, subscriber, slot token, lease (ms), most, bound, trigger expiry (ms),
# slot ttl (ms), keep (0/1). Claims up to ``most`` ready deliveries of the subscriber for the
# holder of a live slot, in order, and renews the slot for ``slot ttl`` (the holder's heartbeat
# renews it while it works: a killed worker's slots lapse in seconds, its leased deliveries when
# their lease ends). A slot with nothing left to claim is released (the task ends) unless
# ``keep`` (the task waits for a wake-up; lease -1 says so), and so is every slot but one
# of a failing subscriber. It claims a 1/bound share of the ready list (at most ``most``), and
# while work is left wakes a slot that waits or else arms one more up to ``bound``, so a
# moderate backlog is served in parallel and a large one in whole chunks.
# Returns {lease (0: slot gone or nothing claimed), claims, triggers, disabled reason}; a claim
# is {delivery id, event id, attempt number, trigger, body, published at (server ms, 0: unknown)}.
CLAIM = (
    _PRELUDE
    + """
local prefix, sub, token = ARGV[1], ARGV[2], ARGV[3]
local lease_ms, most, bound = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local now = server_now()
local slots = prefix .. ':slots:' .. sub
local score = redis.call('ZSCORE', slots, token)
if not score or tonumber(score) <= now then
  redis.call('ZREM', slots, token)
  return {0, {}, {}, ''}
end
local health = redis.call('HMGET', prefix .. ':subscriber:' .. sub,
                          'disabled', 'reason', 'failing_since')
if health[3] then
  bound = 1
  if live_slots(prefix, sub, now) > 1 then  -- failing: give back all but one slot
    redis.call('ZREM', slots, token)
    return {0, {}, {}, ''}
  end
end
redis.call('LREM', prefix .. ':slot-waiting:' .. sub, 0, token)  -- not waiting while it claims
local disabled = ''
if health[1] == '1' then disabled = health[2] or 'subscriber disabled' end
local lease = now + lease_ms
local ready = prefix .. ':ready:' .. sub
-- A share of what waits, so that up to ``bound`` slots go in parallel; whole chunks under load.
local take = math.min(most, math.max(1, math.ceil(redis.call('LLEN', ready) / bound)))
local out = {}
while #out < take do
  local did = redis.call('LPOP', ready)
  if not did then break end
  local key = prefix .. ':delivery:' .. did
  local rec = redis.call('HMGET', key, 'state', 'event', 'attempts', 'trigger')
  if rec[1] == 'ready' then
    redis.call('HSET', key, 'state', 'running', 'lease', lease)
    redis.call('ZADD', KEYS[1], lease, did)
    local ev = redis.call('HMGET', prefix .. ':event:' .. rec[2], 'body', 'published_at')
    out[#out + 1] = {did, rec[2], tonumber(rec[3] or 0) + 1, rec[4] or 'scheduled', ev[1] or '',
                     tonumber(ev[2] or 0)}
  end
end
local extra = {}
if #out == 0 then
  if ARGV[9] == '1' then  -- the caller lingers: keep the slot, so no new trigger is needed ...
    redis.call('ZADD', slots, now + tonumber(ARGV[8]), token)
    local waiting = prefix .. ':slot-waiting:' .. sub
    redis.call('LPUSH', waiting, token)  -- ... and wake it when work comes
    redis.call('PEXPIRE', waiting, WAITING_MS)
    return {-1, out, extra, disabled}
  end
  redis.call('ZREM', slots, token)
  return {0, out, extra, disabled}
end
redis.call('ZADD', slots, now + tonumber(ARGV[8]), token)
if redis.call('LLEN', ready) > 0 and wake_slot(prefix, sub, now) == 0
   and live_slots(prefix, sub, now) < bound then
  arm(prefix, sub, now + tonumber(ARGV[7]), extra)
end
return {lease, out, extra, disabled}
"""
)

# KEYS: due. ARGV: prefix, old lease, lease (ms), delivery ids...
# Extends the leases still held. Returns {new lease, ids kept}.
EXTEND = (
    _PRELUDE
    + """
local prefix = ARGV[1]
local lease = server_now() + tonumber(ARGV[3])
local kept = {}
for i = 4, #ARGV do
  local key = prefix .. ':delivery:' .. ARGV[i]
  local cur = redis.call('HMGET', key, 'state', 'lease')
  if cur[1] == 'running' and cur[2] == ARGV[2] then
    redis.call('HSET', key, 'lease', lease)
    redis.call('ZADD', KEYS[1], lease, ARGV[i])
    kept[#kept + 1] = ARGV[i]
  end
end
return {lease, kept}
"""
)

# ARGV: prefix, slot ttl (ms), then pairs of subscriber, slot token. Renews the slots a live
# worker holds (only those still there: a lapsed one stays lapsed).
HEARTBEAT = (
    _PRELUDE
    + """
local prefix = ARGV[1]
local expiry = server_now() + tonumber(ARGV[2])
for i = 3, #ARGV, 2 do
  redis.call('ZADD', prefix .. ':slots:' .. ARGV[i], 'XX', expiry, ARGV[i + 1])
end
return 0
"""
)

# KEYS: due, dead. ARGV: prefix, record ttl, log size, dead-letter ttl, failing after (attempts),
# then per delivery nine fields: id, subscriber, lease, outcome, attempt json, retry delay (ms),
# letter json, disable after (ms), reason. Logs every attempt; counts it and moves the state only
# while the lease is held (a worker that overran its lease never records over the new owner). A
# finished delivery hands its user's chain to the next in line. Records the operational events
# the attempts started or ended. Returns {owned (1/0 per delivery), notices}.
FINISH = (
    _PRELUDE
    + _OPERATIONAL
    + f"local RECENT_KEPT, RATE_TTL_S = {RECENT_KEPT}, {RATE_TTL_S}\n"
    + """
local prefix, ttl, log_size, dead_ttl = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local failing_after = tonumber(ARGV[5])
local now = server_now()
local owned, notices = {}, {}
local seen = {}  -- the console's indexes, written once per subscriber after the loop
local function advance(key, did, sub)
  local chain = redis.call('HGET', key, 'chain')
  if not chain or chain == '' then return end
  redis.call('LREM', chain, 1, did)
  local head = redis.call('LINDEX', chain, 0)
  if head then
    local hkey = prefix .. ':delivery:' .. head
    if redis.call('HGET', hkey, 'state') == 'blocked' then
      redis.call('HSET', hkey, 'state', 'ready')
      redis.call('RPUSH', prefix .. ':ready:' .. sub, head)
    end
  end
end
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
    local s = seen[sub]
    if not s then
      s = {ids = {}, ok = 0, failed = 0}
      seen[sub] = s
      seen[#seen + 1] = sub
    end
    s.ids[#s.ids + 1] = did
    if outcome ~= 'skipped' then
      redis.call('HINCRBY', key, 'attempts', 1)
      if outcome == 'delivered' then s.ok = s.ok + 1 else s.failed = s.failed + 1 end
    end
    if outcome == 'delivered' then
      redis.call('HDEL', health, 'failing_since')
      ops_delivered(prefix, ttl, sub, health, notices)
    elseif outcome ~= 'skipped' then
      local was_disabled = redis.call('HGET', health, 'disabled')
      redis.call('HSETNX', health, 'failing_since', now)
      ops_failed(prefix, ttl, sub, health, failing_after, notices)
      local since = tonumber(redis.call('HGET', health, 'failing_since'))
      if outcome == 'gone' then
        redis.call('HSET', health, 'disabled', '1', 'reason', reason, 'disabled_at', now)
      elseif now - since >= tonumber(ARGV[i + 7]) then
        reason = 'subscriber disabled: every attempt failed for ' ..
                 math.floor((now - since) / 1000) .. ' s'
        redis.call('HSET', health, 'disabled', '1', 'reason', reason, 'disabled_at', now)
        outcome = 'dead'
      end
      ops_disabled(prefix, ttl, sub, health, was_disabled, notices)
    end
    if outcome == 'delivered' then
      redis.call('HSET', key, 'state', 'delivered', 'done', now)
      redis.call('ZREM', KEYS[1], did)
      redis.call('ZREM', prefix .. ':open:' .. sub, did)
      advance(key, did, sub)
      redis.call('EXPIRE', key, ttl)
    elseif outcome == 'retry' then
      local next_due = now + tonumber(ARGV[i + 5])
      redis.call('HSET', key, 'state', 'waiting', 'next', next_due)
      redis.call('ZADD', KEYS[1], next_due, did)
    else
      redis.call('HSET', key, 'state', 'dead', 'done', now, 'reason', reason)
      redis.call('ZREM', KEYS[1], did)
      advance(key, did, sub)
      redis.call('EXPIRE', key, dead_ttl)
      redis.call('EXPIRE', log, dead_ttl)
      local letter = cjson.decode(ARGV[i + 6])
      letter['reason'] = reason
      letter['attempts'] = tonumber(redis.call('HGET', key, 'attempts'))
      redis.call('SET', prefix .. ':dead:' .. did, cjson.encode(letter), 'EX', dead_ttl)
      redis.call('ZADD', KEYS[2], now, did)
      redis.call('ZREM', prefix .. ':open:' .. sub, did)
      local dead_of = prefix .. ':dead-of:' .. sub
      redis.call('ZADD', dead_of, now, did)
      redis.call('ZREMRANGEBYSCORE', dead_of, '-inf', now - tonumber(dead_ttl) * 1000)
      redis.call('HINCRBY', prefix .. ':stats:dead-lettered', sub, 1)
      ops_dead(prefix, ttl, did, sub, key, reason, notices)
    end
    owned[#owned + 1] = 1
  end
end
-- The console's latest attempts and success rate (see the module doc): a command or two per
-- subscriber and call, however many attempts the call records.
local minute = math.floor(now / 60000)
for _, sub in ipairs(seen) do
  local s = seen[sub]
  local recent, n = prefix .. ':recent:' .. sub, 0
  for i = 1, #s.ids, 100 do
    n = redis.call('LPUSH', recent, unpack(s.ids, i, math.min(i + 99, #s.ids)))
  end
  if n > 2 * RECENT_KEPT then redis.call('LTRIM', recent, 0, RECENT_KEPT - 1) end
  local rate, fresh = prefix .. ':rate:' .. sub .. ':' .. minute, false
  if s.ok > 0 then fresh = redis.call('HINCRBY', rate, 'ok', s.ok) == s.ok end
  if s.failed > 0 then
    fresh = redis.call('HINCRBY', rate, 'failed', s.failed) == s.failed or fresh
  end
  if fresh then redis.call('EXPIRE', rate, RATE_TTL_S) end
end
return {owned, notices}
"""
)

# KEYS: due, pending, dispatch-armed, active subscribers.
# ARGV: prefix, trigger expiry (ms), batch, dispatch lost after (ms).
# Makes due retries ready, takes back deliveries whose lease ran out (their worker died or lost
# Redis), arms a slot for every subscriber with ready work and none live (a lost or lapsed
# trigger), and re-arms the dispatch trigger when events wait and it lapsed.
# Returns {triggers, 1 if a dispatch trigger must be sent, deliveries moved, how late (ms) each
# retry made ready was}.
SWEEP = (
    _PRELUDE
    + """
local prefix, expiry_ms, batch, lost_ms = ARGV[1], tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
local now = server_now()
local moved, late = 0, {}
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'WITHSCORES', 'LIMIT', 0, batch)
for d = 1, #due, 2 do
  local did = due[d]
  local key = prefix .. ':delivery:' .. did
  local rec = redis.call('HMGET', key, 'state', 'sub')
  redis.call('ZREM', KEYS[1], did)
  if rec[1] == 'waiting' then
    redis.call('HSET', key, 'state', 'ready', 'trigger', 'scheduled')
    redis.call('RPUSH', prefix .. ':ready:' .. rec[2], did)
    redis.call('SADD', KEYS[4], rec[2])
    moved = moved + 1
    late[#late + 1] = now - tonumber(due[d + 1])
  elseif rec[1] == 'running' then
    redis.call('HSET', key, 'state', 'ready')
    redis.call('LPUSH', prefix .. ':ready:' .. rec[2], did)
    redis.call('SADD', KEYS[4], rec[2])
    moved = moved + 1
  end
end
local triggers = {}
for _, sub in ipairs(redis.call('SMEMBERS', KEYS[4])) do
  ensure_slot(prefix, sub, now, now + expiry_ms, triggers)
end
local dispatch = 0
if redis.call('LLEN', KEYS[2]) > 0 then
  local armed = redis.call('GET', KEYS[3])
  if not armed or now - tonumber(armed) > lost_ms then
    redis.call('SET', KEYS[3], now)
    dispatch = 1
  end
end
return {triggers, dispatch, moved, late}
"""
)

# KEYS: dead, active subscribers. ARGV: prefix, delivery id, event ttl (s), trigger expiry (ms).
# Puts a dead delivery back as ready (fresh schedule, same webhook-id, trigger 'manual'), outside
# any ordering chain. Returns 0 when there is no such letter, else {1, triggers}.
REPLAY = (
    _PRELUDE
    + """
local prefix, did = ARGV[1], ARGV[2]
local now = server_now()
local letter = redis.call('GET', prefix .. ':dead:' .. did)
if not letter then return 0 end
local data = cjson.decode(letter)
local sub = data['subscriber_id']
local key = prefix .. ':delivery:' .. did
local ekey = prefix .. ':event:' .. data['event_id']
if redis.call('EXISTS', ekey) == 0 then
  redis.call('HSET', ekey, 'type', data['event_type'], 'body', data['body'])
  redis.call('EXPIRE', ekey, ARGV[3])
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
ensure_slot(prefix, sub, now, now + tonumber(ARGV[4]), triggers)
return {1, triggers}
"""
)

# KEYS: due. ARGV: prefix, subscriber, delivery ids... Makes the subscriber's waiting deliveries
# among the ids due now (a subscriber removed from the subscribers file: the deliver path
# dead-letters them at once rather than at their next retry). Returns how many.
EXPEDITE = (
    _PRELUDE
    + """
local prefix, sub = ARGV[1], ARGV[2]
local now = server_now()
local moved = 0
for i = 3, #ARGV do
  local rec = redis.call('HMGET', prefix .. ':delivery:' .. ARGV[i], 'state', 'sub')
  if rec[1] == 'waiting' and rec[2] == sub then
    redis.call('ZADD', KEYS[1], 'XX', now, ARGV[i])
    moved = moved + 1
  end
end
return moved
"""
)
