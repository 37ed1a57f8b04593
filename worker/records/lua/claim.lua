-- CLAIM: claims up to ``most`` ready deliveries of a subscriber, in order, for the holder of a
-- live slot, and renews the slot.
--
-- The holder's heartbeat renews the slot while it works: a killed worker's slots lapse in
-- seconds, its leased deliveries when their lease ends. A slot with nothing left to claim is
-- released (the task ends) unless the caller keeps it (it waits for a wake-up; lease -1 says so),
-- and so is every slot but one of a failing subscriber (one delivery at a time). It claims a
-- 1/bound share of the ready list (at most ``most``), and while work is left wakes a slot that
-- waits or else arms one more, up to ``bound``: a moderate backlog is served in parallel and a
-- large one in whole chunks.
--
-- KEYS[1] due: ZSET of delivery ids by lease end or next due time, server ms
-- ARGV[1] key prefix
-- ARGV[2] subscriber id
-- ARGV[3] slot token
-- ARGV[4] lease: how long the claimed deliveries are owned, ms
-- ARGV[5] most: deliveries claimed at most, count
-- ARGV[6] bound: slots a subscriber may have live, count
-- ARGV[7] trigger expiry: how long a newly armed slot lives, ms
-- ARGV[8] slot ttl: how long the renewed slot lives without a heartbeat, ms
-- ARGV[9] keep: 1 if the caller lingers when nothing is left, else 0
-- ARGV[10] rate limit: the subscriber's configured attempts/s ('' for none)
-- ARGV[11] rate burst: the bucket's capacity, count ('' for the default, max(1, ceil(rate)))
--
-- Gates after "slot is live", in order: disabled/failing; the circuit breaker (``breaker``, kept
-- by FINISH; open: one probe at a time, the head of ready, from ``probe_at``; half-open: one
-- delivery at a time; docs/endpoint-health.md); pause (``paused_until``: a Retry-After); rate
-- tokens (a token bucket, ``tokens`` at ``tokens_at``, refilled at the configured or adaptive
-- ``rate``). A gate that withholds everything sets ``hold_until`` and releases the slot (SWEEP
-- arms one then); a hold of at most SHORT_HOLD_MS keeps the slot, and the caller sleeps that
-- long. A subscriber with no limit, no 429 and a closed breaker reads the gates' fields in its
-- one HMGET.
--
-- Returns {lease (server ms; 0: slot gone, nothing claimed or held; -1: kept, nothing to
-- claim), claims, triggers, disabled reason, hold ms (0: not held)}; a claim is {delivery id,
-- event id, attempt number, trigger, body, published at (server ms, 0: unknown), the event's
-- number in its user's sequence (0: none, an event recorded before events were numbered), the
-- publisher's W3C traceparent ('' for none)}.
-- luacheck: std lua51
-- luacheck: globals ARGV KEYS redis
-- luacheck: read globals server_now live_slots arm wake_slot WAITING_MS adaptive_rate (prelude.lua)

local args = {
  prefix = ARGV[1],
  sub = ARGV[2],
  token = ARGV[3],
  lease_ms = tonumber(ARGV[4]),
  most = tonumber(ARGV[5]),
  bound = tonumber(ARGV[6]),
  expiry_ms = tonumber(ARGV[7]),
  slot_ttl_ms = tonumber(ARGV[8]),
  keep = ARGV[9] == '1',
  limit = tonumber(ARGV[10]),
  burst = tonumber(ARGV[11]),
}
local SHORT_HOLD_MS = 250
local prefix, sub, token = args.prefix, args.sub, args.token
local now = server_now()
local slots = prefix .. ':slots:' .. sub
local ready = prefix .. ':ready:' .. sub
local waiting = prefix .. ':slot-waiting:' .. sub
local health_key = prefix .. ':subscriber:' .. sub

local function release()
  redis.call('ZREM', slots, token)
  return {0, {}, {}, '', 0}
end

-- Nothing may be claimed for ``hold_ms``: a short hold keeps the slot (its caller sleeps), a
-- longer one releases it and leaves the re-arming to SWEEP at ``hold_until``.
local function held(hold_ms)
  hold_ms = math.ceil(hold_ms)
  if hold_ms <= SHORT_HOLD_MS then
    redis.call('ZADD', slots, now + args.slot_ttl_ms, token)
    return {-1, {}, {}, '', hold_ms}
  end
  redis.call('HSET', health_key, 'hold_until', now + hold_ms)
  redis.call('ZREM', slots, token)
  return {0, {}, {}, '', hold_ms}
end

-- The breaker's say, from the subscriber's ``health``: nil (closed), 'trial' (half-open: one at
-- a time), 'probe' (open: one probe may go now), or else the ms until one may.
local function breaker_gate(h)
  if not h.breaker then return nil end
  if h.breaker == 'half_open' then return 'trial' end
  local probe_at, probe_lease = tonumber(h.probe_at or 0), tonumber(h.probe_lease or 0)
  if now >= probe_at and probe_lease < now then return 'probe' end
  return math.max(probe_at, probe_lease + 1) - now
end

-- The probe claimed (its lease marks it in flight); the next may go after the interval.
local function probe_sent(h, lease)
  local interval = tonumber(h.probe_interval_ms or 0)
  redis.call('HSET', health_key, 'probe_lease', lease, 'probe_at', now + interval)
end

-- The token bucket, or nil when no rate applies: {rate, tokens available now}.
local function bucket(h)
  local rate = adaptive_rate(h.rate, h.rate_changed_at, h.rate_from, args.limit, now)
  rate = rate or args.limit
  if not rate then return nil end
  local burst = args.burst or math.max(1, math.ceil(rate))
  local tokens = burst
  if h.tokens and h.tokens_at then
    tokens = math.min(burst, tonumber(h.tokens) + rate * (now - tonumber(h.tokens_at)) / 1000)
  end
  return {rate = rate, tokens = tokens}
end

local function spend(b, n)
  b.tokens = b.tokens - n
  redis.call('HSET', health_key, 'tokens', b.tokens, 'tokens_at', now)
end

local function slot_is_live()
  local lapses = redis.call('ZSCORE', slots, token)
  return lapses and tonumber(lapses) > now
end

-- The claim of ready delivery ``did``, or nil if it is no longer ready.
local function claim_one(did, lease)
  local key = prefix .. ':delivery:' .. did
  local rec = redis.call('HMGET', key, 'state', 'event', 'attempts', 'trigger')
  if rec[1] ~= 'ready' then return nil end
  redis.call('HSET', key, 'state', 'running', 'lease', lease)
  redis.call('ZADD', KEYS[1], lease, did)
  local ev = redis.call('HMGET', prefix .. ':event:' .. rec[2], 'body', 'published_at', 'seq',
                        'traceparent')
  return {did, rec[2], tonumber(rec[3] or 0) + 1, rec[4] or 'scheduled', ev[1] or '',
          tonumber(ev[2] or 0), tonumber(ev[3] or 0), ev[4] or ''}
end

local function take(count, lease)
  local out = {}
  while #out < count do
    local did = redis.call('LPOP', ready)
    if not did then break end
    local claim = claim_one(did, lease)
    if claim then out[#out + 1] = claim end
  end
  return out
end

if not slot_is_live() then return release() end
local h = redis.call('HMGET', health_key, 'disabled', 'reason', 'failing_since', 'paused_until',
                     'rate', 'rate_changed_at', 'rate_from', 'tokens', 'tokens_at', 'breaker',
                     'probe_at', 'probe_lease', 'probe_interval_ms')
local health = {disabled = h[1], reason = h[2], failing_since = h[3], paused_until = h[4],
                rate = h[5], rate_changed_at = h[6], rate_from = h[7], tokens = h[8],
                tokens_at = h[9], breaker = h[10], probe_at = h[11], probe_lease = h[12],
                probe_interval_ms = h[13]}
local bound, most = args.bound, args.most
if health.failing_since then  -- failing: one slot at a time, one delivery at a time
  bound, most = 1, 1
  if live_slots(prefix, sub, now) > 1 then return release() end
end
local gate = breaker_gate(health)
if gate and gate ~= 'probe' and health.disabled == '1' then gate = nil end
if type(gate) == 'number' then return held(math.max(1, gate)) end
redis.call('LREM', waiting, 0, token)  -- not waiting while it claims
local disabled, limit = '', nil
if health.disabled == '1' and gate ~= 'probe' then
  -- Dead-lettered unattempted: no gate (a subscriber disabled by failing: between its probes).
  disabled = health.reason or 'subscriber disabled'
else
  if gate then bound, most = 1, 1 end
  if health.paused_until and tonumber(health.paused_until) > now then
    return held(tonumber(health.paused_until) - now)
  end
  limit = bucket(health)
  if limit and limit.tokens < 1 and redis.call('LLEN', ready) > 0 then
    return held((1 - limit.tokens) * 1000 / limit.rate)
  end
end
local lease = now + args.lease_ms
-- A share of what waits, so that up to ``bound`` slots go in parallel; whole chunks under load.
local share = math.min(most, math.max(1, math.ceil(redis.call('LLEN', ready) / bound)))
if limit then share = math.min(share, math.floor(limit.tokens)) end
local claims = take(share, lease)
if limit and #claims > 0 then spend(limit, #claims) end
if #claims == 0 and not args.keep then
  redis.call('ZREM', slots, token)
  return {0, claims, {}, disabled, 0}
end
redis.call('ZADD', slots, now + args.slot_ttl_ms, token)
if #claims == 0 then  -- the caller lingers: the slot stays (no new trigger is needed) ...
  redis.call('LPUSH', waiting, token)  -- ... and is woken when work comes
  redis.call('PEXPIRE', waiting, WAITING_MS)
  return {-1, claims, {}, disabled, 0}
end
if gate == 'probe' then probe_sent(health, lease) end
local more = {}
if not gate and redis.call('LLEN', ready) > 0 and (not limit or limit.tokens >= 1)
   and wake_slot(prefix, sub, now) == 0 and live_slots(prefix, sub, now) < bound then
  arm(prefix, sub, now + args.expiry_ms, more)
end
return {lease, claims, more, disabled, 0}
