-- CLAIM: claims up to ``most`` ready deliveries of a subscriber, in order, for the holder of a
-- live slot, and renews the slot.
--
-- The holder's heartbeat renews the slot while it works: a killed worker's slots lapse in
-- seconds, its leased deliveries when their lease ends. A slot with nothing left to claim is
-- released (the task ends) unless the caller keeps it (it waits for a wake-up; lease -1 says so),
-- and so is every slot but one of a failing subscriber (which claims one delivery at a time). It
-- claims a 1/bound share of the ready list (at most ``most``), and while work is left wakes a
-- slot that waits or else arms one more, up to ``bound``: a moderate backlog is served in
-- parallel and a large one in whole chunks.
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
--
-- Endpoint health gates, after "slot is live" and the failing bound: the circuit breaker
-- (``breaker`` in ``{prefix}:subscriber:{sub}``, kept by FINISH). Open: nothing is claimed but
-- one probe, the head of ready, when ``probe_at`` has come and no probe's lease is live (a probe
-- whose lease passed was lost); the probe is attempted even while the subscriber is disabled by
-- failure (a 410 or an operator's disable leaves no breaker: not probed). Half-open: one delivery
-- at a time. A gate that withholds everything sets ``hold_until`` (SWEEP arms a slot then) and
-- releases the slot.
--
-- Returns {lease (server ms; 0: slot gone or nothing claimed; -1: kept, nothing to claim),
-- claims, triggers, disabled reason, hold ms (0: not held)}; a claim is {delivery id, event id,
-- attempt number, trigger, body, published at (server ms, 0: unknown), the event's number in its
-- user's sequence (0: none, an event recorded before events were numbered), the publisher's W3C
-- traceparent ('' for none)}.
-- luacheck: std lua51
-- luacheck: globals ARGV KEYS redis
-- luacheck: read globals server_now live_slots arm wake_slot WAITING_MS (prelude.lua)

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
}
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

-- Withholds every claim for ``ms``: no slot is armed for the subscriber until then.
local function hold(ms)
  redis.call('HSET', health_key, 'hold_until', now + ms)
  redis.call('ZREM', slots, token)
  return {0, {}, {}, '', ms}
end

-- The breaker's say, from the subscriber's health fields ``h``: nil (closed), 'trial'
-- (half-open: one at a time), 'probe' (open: one probe may go now), or else the ms until one may.
local function breaker_gate(h)
  local state = h[4]
  if not state then return nil end
  if state == 'half_open' then return 'trial' end
  local probe_at, probe_lease = tonumber(h[5] or 0), tonumber(h[6] or 0)
  if now >= probe_at and probe_lease < now then return 'probe' end
  return math.max(probe_at, probe_lease + 1) - now
end

-- The probe claimed (its lease marks it in flight); the next may go after the interval.
local function probe_sent(h, lease)
  local interval = tonumber(h[7] or 0)
  redis.call('HSET', health_key, 'probe_lease', lease, 'probe_at', now + interval)
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
local health = redis.call('HMGET', health_key, 'disabled', 'reason', 'failing_since',
                          'breaker', 'probe_at', 'probe_lease', 'probe_interval_ms')
local bound, most = args.bound, args.most
if health[3] then  -- failing: one slot at a time, one delivery at a time
  bound, most = 1, 1
  if live_slots(prefix, sub, now) > 1 then return release() end
end
local disabled = ''
if health[1] == '1' then disabled = health[2] or 'subscriber disabled' end
local gate = breaker_gate(health)
if type(gate) == 'number' then
  -- A disabled subscriber's deliveries are dead-lettered between probes, as without a breaker.
  if disabled == '' then return hold(math.max(1, gate)) end
  gate = nil
elseif gate then
  bound, most, disabled = 1, 1, ''
end
redis.call('LREM', waiting, 0, token)  -- not waiting while it claims
local lease = now + args.lease_ms
-- A share of what waits, so that up to ``bound`` slots go in parallel; whole chunks under load.
local share = math.min(most, math.max(1, math.ceil(redis.call('LLEN', ready) / bound)))
local claims = take(share, lease)
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
if not gate and redis.call('LLEN', ready) > 0 and wake_slot(prefix, sub, now) == 0
   and live_slots(prefix, sub, now) < bound then
  arm(prefix, sub, now + args.expiry_ms, more)
end
return {lease, claims, more, disabled, 0}
