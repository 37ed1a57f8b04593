-- FINISH: records attempts. Logs every attempt (but those of a delivery erased meanwhile);
-- counts it and moves the delivery on only while the lease is held (a worker that overran its
-- lease never records over the new owner). A finished delivery hands its user's chain to the
-- next in line.
--
-- Keeps the subscriber's health: a failure streak (``failing_since``, server ms, and
-- ``failing_since_iso``, its text for the announcement), a disable after a 410 or after failing
-- for ``disable after``. Records the operational events the attempts start or end exactly as a
-- publish records an event (no user, so no ordering chain), with ``about`` naming the subscriber
-- the drain must leave out; the scheduler sends the dispatch trigger. Counts the subscriber's
-- attempts per minute (``{prefix}:rate:{sub}:{minute}``) and lists the deliveries of its latest
-- attempts (``{prefix}:recent:{sub}``) for the console. Counts for the audit: a delivery that
-- ends ``delivered`` or ``dead`` (``{prefix}:tally:{sub}``), an operational event recorded
-- (``published`` in ``{prefix}:tally``, as a publish counts it). Moves the circuit breaker
-- (``breaker``, docs/endpoint-health.md): open at ``breaker after`` failures in a row, probes
-- from ``probe min`` to ``probe max`` ms; half_open; closed with the waiting backlog due now.
--
-- KEYS[1] due: ZSET of delivery ids by lease end or next due time, server ms
-- KEYS[2] dead: ZSET of dead delivery ids by time of death, server ms
-- ARGV[1] key prefix
-- ARGV[2] record ttl: how long a finished record is kept, s
-- ARGV[3] attempt log size: entries kept per delivery
-- ARGV[4] dead-letter ttl: how long a dead letter is kept, s
-- ARGV[5] failing after: failed attempts in a row that announce an incident, count
-- ARGV[6] now: operational events' timestamps, RFC 3339 UTC text
-- ARGV[7] recent kept: a subscriber's latest attempts the console lists, count
-- ARGV[8] rate ttl: how long a minute of attempt counts is kept, s
-- ARGV[9] probe min: the breaker's first probe interval, ms
-- ARGV[10] probe max: the breaker's longest probe interval (and a disabled subscriber's), ms
-- ARGV[11...] attempts, 13 fields each: delivery id, subscriber id, lease (server ms, the owner's
--   token), outcome (delivered | retry | dead | gone | skipped | throttled), attempt log entry
--   (JSON), retry delay (ms), dead letter (JSON), disable after (ms), reason, the configured
--   rate limit (attempts/s, '' for none), pause (ms, a Retry-After; 0 for none), attempts/s the
--   worker measured to the subscriber lately (0: unknown), breaker after (count)
--
-- Returns {owned (1/0 per attempt), notices}; a notice is {type, event id, subscriber, delivery
-- id} for the caller to log.
-- luacheck: std lua51
-- luacheck: globals ARGV KEYS redis cjson
-- luacheck: read globals server_now tally flush_tally adaptive_rate expedite_open (prelude.lua)

local FIELDS = 13
-- Successes in a row, after a successful probe, that close the breaker.
local TRIALS = 3
local BREAKER_FIELDS = {'breaker', 'opened_at', 'probe_at', 'probe_interval_ms', 'probe_lease',
                        'trial_left', 'hold_until'}
local MAX_DEFERRALS = 5
local CUT_EVERY_MS = 1000
local args = {
  prefix = ARGV[1],
  ttl = ARGV[2],
  log_size = tonumber(ARGV[3]),
  dead_ttl = ARGV[4],
  failing_after = tonumber(ARGV[5]),
  now_iso = ARGV[6],
  recent_kept = tonumber(ARGV[7]),
  rate_ttl_s = tonumber(ARGV[8]),
  probe_min_ms = tonumber(ARGV[9]),
  probe_max_ms = tonumber(ARGV[10]),
  attempts = {},
}
local prefix = args.prefix
for i = 11, #ARGV, FIELDS do
  local did, sub = ARGV[i], ARGV[i + 1]
  args.attempts[#args.attempts + 1] = {
    id = did, sub = sub, lease = ARGV[i + 2], outcome = ARGV[i + 3],
    entry = ARGV[i + 4], delay_ms = tonumber(ARGV[i + 5]), letter = ARGV[i + 6],
    disable_after_ms = tonumber(ARGV[i + 7]), reason = ARGV[i + 8],
    limit = tonumber(ARGV[i + 9]), pause_ms = tonumber(ARGV[i + 10]),
    measured = tonumber(ARGV[i + 11]), breaker_after = tonumber(ARGV[i + 12]),
    key = prefix .. ':delivery:' .. did,  -- its record, its attempt log, its subscriber's health
    log = prefix .. ':attempts:' .. did,
    health = prefix .. ':subscriber:' .. sub,
  }
end
local now = server_now()
local notices = {}
local seen = {}  -- per subscriber, for the console: {ids, ok, failed}; seen[n] = nth subscriber
local counts = {}  -- the audit's (prelude.lua: tally)

local function delivery_key(did) return prefix .. ':delivery:' .. did end

-- Records an operational event of type ``kind`` about subscriber ``about``.
local function notify(kind, about, data, delivery)
  local eid = 'msg_ops' .. now .. 'n' .. redis.call('INCR', prefix .. ':ops-seq')
  data['subscriberId'] = about
  local body = '{"event":' .. cjson.encode(kind) .. ',"data":' .. cjson.encode(data) ..
               ',"triggeredAt":' .. cjson.encode(args.now_iso) .. '}'
  local key = prefix .. ':event:' .. eid
  redis.call('HSET', key, 'type', kind, 'body', body, 'user', '', 'about', about,
             'published_at', now)
  redis.call('EXPIRE', key, args.ttl)
  redis.call('RPUSH', prefix .. ':pending', eid)
  tally(counts, '', 'published')
  notices[#notices + 1] = {kind, eid, about, delivery or ''}
end

-- A success with the breaker open or half-open (``cur``: the health fields read). Open (the
-- probe, or an attempt sent before it opened): half-open, and a subscriber disabled by failing
-- is enabled again. Half-open: one trial fewer; the last closes it and the waiting backlog is due
-- now. Returns true once closed.
local function breaker_succeeded(a, cur)
  local health = a.health
  if cur[4] == 'open' then
    if cur[6] == '1' then
      redis.call('HSET', health, 'disabled', '0')
      redis.call('HDEL', health, 'reason', 'disabled_at')
    end
    redis.call('HSET', health, 'breaker', 'half_open', 'trial_left', TRIALS)
    redis.call('HDEL', health, 'probe_lease', 'hold_until')
    return false
  end
  if redis.call('HINCRBY', health, 'trial_left', -1) > 0 then return false end
  redis.call('HDEL', health, unpack(BREAKER_FIELDS))
  expedite_open(prefix, KEYS[1], a.sub, now)
  return true
end

-- The streak ends; an announced incident is closed once; an adaptive rate back at its
-- ceiling is forgotten. A healthy subscriber costs one read.
local function subscriber_delivered(a)
  local health = a.health
  local cur = redis.call('HMGET', health, 'failures', 'notified', 'rate', 'breaker', 'trial_left',
                         'disabled')
  if cur[4] and not breaker_succeeded(a, cur) then return end
  redis.call('HDEL', health, 'failing_since', 'failing_since_iso')
  if cur[1] then redis.call('HDEL', health, 'failures') end
  if cur[2] then
    redis.call('HDEL', health, 'notified')
    notify('webhooks.subscriber.recovered', a.sub, {})
  end
  if cur[3] then  -- lowered by 429s: forgotten once grown back
    local at = redis.call('HMGET', health, 'rate_changed_at', 'rate_from')
    local _, back = adaptive_rate(cur[3], at[1], at[2], a.limit, now)
    if back then redis.call('HDEL', health, 'rate', 'rate_changed_at', 'rate_from') end
    if back and not a.limit then redis.call('HDEL', health, 'tokens', 'tokens_at') end
  end
end

-- A ``throttled`` attempt (a 429) cuts the subscriber's ``rate`` to 0.7 x its current rate (at
-- most once per CUT_EVERY_MS; the current one is the adaptive rate, else the configured one,
-- else the measured one; 1/s at least), for every worker, and a Retry-After pauses the whole
-- subscriber (``paused_until``). A success forgets an adaptive rate grown back to its ceiling.
local function slow_down(a)
  local health = a.health
  local cur = redis.call('HMGET', health, 'rate', 'rate_changed_at', 'rate_from')
  if a.pause_ms > 0 then
    local paused = now + a.pause_ms
    redis.call('HSET', health, 'paused_until', paused, 'hold_until', paused)
  end
  if cur[1] and now - tonumber(cur[2] or 0) < CUT_EVERY_MS then return end
  local current = adaptive_rate(cur[1] or nil, cur[2] or nil, cur[3] or nil, a.limit, now)
  current = current or a.limit or a.measured
  if current <= 0 then current = 1 end
  redis.call('HSET', health, 'rate', math.max(1, 0.7 * current), 'rate_changed_at', now)
  redis.call('HSETNX', health, 'rate_from', current)
end

-- A throttled delivery goes back to the front of its ready list, its attempt logged but not
-- counted and no failure, at most MAX_DEFERRALS times (``deferrals``); then a 429 is an
-- ordinary retry (its delay and reason are those of the retry fields). True if deferred.
local function defer(a)
  if tonumber(redis.call('HGET', a.key, 'deferrals') or 0) >= MAX_DEFERRALS then return false end
  redis.call('HINCRBY', a.key, 'deferrals', 1)
  redis.call('HSET', a.key, 'state', 'ready')
  redis.call('ZREM', KEYS[1], a.id)
  redis.call('LPUSH', prefix .. ':ready:' .. a.sub, a.id)
  redis.call('SADD', prefix .. ':active-subscribers', a.sub)
  return true
end

-- The incident is announced once (``notified``), with the streak ``n`` long.
local function announce_failing(sub, health, n)
  if redis.call('HSETNX', health, 'notified', 'failing') == 0 then return end
  notify('webhooks.subscriber.failing', sub, {
    consecutiveFailures = n,
    failingSince = redis.call('HGET', health, 'failing_since_iso'),
  })
end

-- The streak grows; at ``failing after`` in a row the incident is announced once.
local function streak_grows(sub, health)
  redis.call('HSETNX', health, 'failing_since', now)
  redis.call('HSETNX', health, 'failing_since_iso', args.now_iso)
  local n = redis.call('HINCRBY', health, 'failures', 1)
  if n >= args.failing_after then announce_failing(sub, health, n) end
  return n
end

-- The breaker opens (again, or stays open after a failed probe) with the next probe
-- ``interval`` ms from now; claims are held until then.
local function open_breaker(a, interval, first)
  local health = a.health
  if first then redis.call('HSET', health, 'opened_at', now) end
  redis.call('HSET', health, 'breaker', 'open', 'probe_interval_ms', interval,
             'probe_at', now + interval, 'hold_until', now + interval)
  redis.call('HDEL', health, 'probe_lease', 'trial_left')
end

-- A failure, the streak now ``n`` long: the breaker opens at ``breaker after``; a failed probe
-- (its lease is the probe's) or a failure in half-open waits twice the interval, up to the max.
local function breaker_failed(a, n)
  local h = redis.call('HMGET', a.health, 'breaker', 'probe_interval_ms', 'probe_lease')
  if not h[1] then
    if n < a.breaker_after then return end
    open_breaker(a, args.probe_min_ms, true)
    announce_failing(a.sub, a.health, n)
  elseif h[1] == 'half_open' or h[3] == a.lease then
    local interval = math.min(2 * tonumber(h[2] or args.probe_min_ms), args.probe_max_ms)
    open_breaker(a, interval, h[1] == 'half_open')
  end
end

local function disable(health, reason)
  redis.call('HSET', health, 'disabled', '1', 'reason', reason, 'disabled_at', now)
end

-- An attempt failed: the streak grows; a 410 disables the subscriber, and so does failing for
-- ``disable after``. Returns the reason of the latter (the delivery dies with it), else nil.
local function subscriber_failed(a)
  local health = a.health
  local was_disabled = redis.call('HGET', health, 'disabled')
  breaker_failed(a, streak_grows(a.sub, health))
  local failing_ms = now - tonumber(redis.call('HGET', health, 'failing_since'))
  local reason = nil
  if a.outcome == 'gone' then
    disable(health, a.reason)
    redis.call('HDEL', health, unpack(BREAKER_FIELDS))  -- not probed: an operator enables it
  elseif failing_ms >= a.disable_after_ms and was_disabled ~= '1' then
    reason = 'subscriber disabled: every attempt failed for ' .. math.floor(failing_ms / 1000) ..
             ' s'
    disable(health, reason)
    -- Probed on the slow schedule; its backlog is dead-lettered meanwhile, as without a breaker.
    open_breaker(a, args.probe_max_ms, redis.call('HEXISTS', health, 'breaker') == 0)
  elseif failing_ms >= a.disable_after_ms then  -- a failed probe: it dies like the backlog
    reason = redis.call('HGET', health, 'reason')
  end
  if reason then redis.call('HDEL', health, 'hold_until') end
  if was_disabled ~= '1' and redis.call('HGET', health, 'disabled') == '1' then
    redis.call('HSET', health, 'notified', 'disabled')
    notify('webhooks.subscriber.disabled', a.sub,
           {reason = redis.call('HGET', health, 'reason') or ''})
  end
  return reason
end

-- The next in the delivery's user chain, if blocked behind it, goes now.
local function advance(a)
  local chain = redis.call('HGET', a.key, 'chain')
  if not chain or chain == '' then return end
  redis.call('LREM', chain, 1, a.id)
  local head = redis.call('LINDEX', chain, 0)
  if not head or redis.call('HGET', delivery_key(head), 'state') ~= 'blocked' then return end
  redis.call('HSET', delivery_key(head), 'state', 'ready')
  redis.call('RPUSH', prefix .. ':ready:' .. a.sub, head)
end

local function delivered(a)
  redis.call('HSET', a.key, 'state', 'delivered', 'done', now)
  tally(counts, a.sub, 'delivered')
  redis.call('ZREM', KEYS[1], a.id)
  redis.call('ZREM', prefix .. ':open:' .. a.sub, a.id)
  advance(a)
  redis.call('EXPIRE', a.key, args.ttl)
end

local function retry(a)
  local next_due = now + a.delay_ms
  redis.call('HSET', a.key, 'state', 'waiting', 'next', next_due)
  redis.call('ZADD', KEYS[1], next_due, a.id)
end

-- Announces a dead delivery, unless it carried an operational event (no event about its own
-- failure).
local function announce_dead(a, reason)
  local rec = redis.call('HMGET', a.key, 'event', 'type', 'attempts')
  if string.sub(rec[2] or '', 1, 9) == 'webhooks.' then return end
  notify('webhooks.delivery.dead', a.sub,
         {deliveryId = a.id, eventId = rec[1], eventType = rec[2],
          attempts = tonumber(rec[3] or 0), reason = reason}, a.id)
end

local function dead(a, reason)
  redis.call('HSET', a.key, 'state', 'dead', 'done', now, 'reason', reason)
  tally(counts, a.sub, 'dead')
  redis.call('ZREM', KEYS[1], a.id)
  advance(a)
  redis.call('EXPIRE', a.key, args.dead_ttl)
  redis.call('EXPIRE', a.log, args.dead_ttl)
  local letter = cjson.decode(a.letter)
  letter['reason'] = reason
  letter['attempts'] = tonumber(redis.call('HGET', a.key, 'attempts'))
  redis.call('SET', prefix .. ':dead:' .. a.id, cjson.encode(letter), 'EX', args.dead_ttl)
  redis.call('ZADD', KEYS[2], now, a.id)
  redis.call('ZREM', prefix .. ':open:' .. a.sub, a.id)
  local dead_of = prefix .. ':dead-of:' .. a.sub
  redis.call('ZADD', dead_of, now, a.id)
  redis.call('ZREMRANGEBYSCORE', dead_of, '-inf', now - tonumber(args.dead_ttl) * 1000)
  redis.call('HINCRBY', prefix .. ':stats:dead-lettered', a.sub, 1)
  announce_dead(a, reason)
end

-- Counts an owned attempt (a skipped one is not an attempt) and notes it for the console.
local function count(a)
  local s = seen[a.sub]
  if not s then
    s = {ids = {}, ok = 0, failed = 0}
    seen[a.sub] = s
    seen[#seen + 1] = a.sub
  end
  s.ids[#s.ids + 1] = a.id
  if a.outcome == 'skipped' or a.outcome == 'throttled' then return end
  redis.call('HINCRBY', a.key, 'attempts', 1)
  if a.outcome == 'delivered' then s.ok = s.ok + 1 else s.failed = s.failed + 1 end
end

-- A probe answered 429 and deferred proves nothing either way: it is no longer in flight, and
-- the next probe goes at ``probe_at`` (not when its lease would have ended).
local function probe_deferred(a)
  if redis.call('HGET', a.health, 'probe_lease') == a.lease then
    redis.call('HDEL', a.health, 'probe_lease')
  end
end

-- Records one attempt; 1 if this worker still owned the delivery, else 0.
local function finish_one(a)
  local cur = redis.call('HMGET', a.key, 'state', 'lease')
  if cur[1] == 'erased' then return 0 end  -- the user's data was erased meanwhile: no log
  redis.call('RPUSH', a.log, a.entry)
  redis.call('LTRIM', a.log, -args.log_size, -1)
  redis.call('EXPIRE', a.log, args.ttl)
  if cur[1] ~= 'running' or cur[2] ~= a.lease then return 0 end
  if a.outcome == 'throttled' then
    slow_down(a)
    if defer(a) then
      probe_deferred(a)
      count(a)
      return 1
    end
    if a.reason ~= '' then a.outcome = 'dead' else a.outcome = 'retry' end
  end
  count(a)
  if a.outcome == 'delivered' then
    subscriber_delivered(a)
    delivered(a)
    return 1
  end
  local disabled_reason = nil
  if a.outcome ~= 'skipped' then disabled_reason = subscriber_failed(a) end
  if disabled_reason then
    dead(a, disabled_reason)
  elseif a.outcome == 'retry' then
    retry(a)
  else
    dead(a, a.reason)
  end
  return 1
end

-- The console's latest attempts and success rate: a command or two per subscriber and call,
-- however many attempts the call records. A list is trimmed only once it holds twice what is
-- kept, so a push costs one command most of the time.
local function note_for_console(sub, s, minute)
  local recent, n = prefix .. ':recent:' .. sub, 0
  for i = 1, #s.ids, 100 do
    n = redis.call('LPUSH', recent, unpack(s.ids, i, math.min(i + 99, #s.ids)))
  end
  if n > 2 * args.recent_kept then redis.call('LTRIM', recent, 0, args.recent_kept - 1) end
  local rate, fresh = prefix .. ':rate:' .. sub .. ':' .. minute, false
  if s.ok > 0 then fresh = redis.call('HINCRBY', rate, 'ok', s.ok) == s.ok end
  if s.failed > 0 then
    fresh = redis.call('HINCRBY', rate, 'failed', s.failed) == s.failed or fresh
  end
  if fresh then redis.call('EXPIRE', rate, args.rate_ttl_s) end
end

local owned = {}
for k, a in ipairs(args.attempts) do owned[k] = finish_one(a) end
local minute = math.floor(now / 60000)
for _, sub in ipairs(seen) do note_for_console(sub, seen[sub], minute) end
flush_tally(prefix, counts)
return {owned, notices}
