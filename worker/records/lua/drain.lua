-- DRAIN: takes up to a batch of events off the pending list (publish order) and creates one
-- delivery per matching subscriber.
--
-- With per-user ordering, a delivery joins its (subscriber, user) chain and is ready only at its
-- head; with coalescing, a newer update supersedes the chain's undelivered updates (a waiting
-- head's place in the retry schedule passes to the newcomer). Disarms the dispatch trigger when
-- the list is empty, else refreshes it; with keep armed, an empty list keeps it and sets
-- ``{prefix}:dispatch-waiting`` (a publish then wakes the caller, see delivery.wake). Lists each
-- user's latest events for the console (``{prefix}:user-events:{user}``, trimmed only once it
-- holds twice what is kept). Counts for the audit, per subscriber (``{prefix}:tally:{sub}``:
-- ``fanned_out``, ``superseded``) and overall (``{prefix}:tally``: ``drained``, ``unmatched``, an
-- event no subscriber takes).
--
-- KEYS[1] pending: LIST of event ids, publish order
-- KEYS[2] dispatch-armed: STRING, server ms the dispatch trigger was last armed
-- KEYS[3] due: ZSET of delivery ids by lease end or next due time, server ms
-- KEYS[4] active subscribers: SET of subscriber ids
-- ARGV[1] key prefix
-- ARGV[2] batch: most events taken, count
-- ARGV[3] trigger expiry: how long an armed slot lives, ms
-- ARGV[4] record ttl: how long a finished record is kept, s
-- ARGV[5] attempt log size: entries kept per delivery
-- ARGV[6] now: the attempt log's timestamp, RFC 3339 UTC text
-- ARGV[7] keep armed: 1 if the caller lingers for more events, else 0
-- ARGV[8] user events kept: a user's latest events the console can look up, count
-- ARGV[9] route count: how many event types follow
-- ARGV[10...] routes: per event type: type, n, then n x (subscriber, ordered 0/1, coalesce 0/1)
--
-- Returns {events taken, events whose record expired, triggers, 1 if more are pending, events
-- that matched no subscriber}.
-- luacheck: std lua51
-- luacheck: globals ARGV KEYS redis cjson
-- luacheck: read globals server_now ensure_slot WAITING_MS tally flush_tally (prelude.lua)

local UPDATED = 'reseller.user.updated'
local SUPERSEDABLE = {blocked = true, ready = true, waiting = true}

-- {event type = {{sub, ordered, coalesce}, ...}} from ARGV[first] on.
local function decode_routes(first)
  local routes, i = {}, first + 1
  for _ = 1, tonumber(ARGV[first]) do
    local n, subs = tonumber(ARGV[i + 1]), {}
    for k = 0, n - 1 do
      local j = i + 2 + 3 * k
      subs[k + 1] = {sub = ARGV[j], ordered = ARGV[j + 1] == '1', coalesce = ARGV[j + 2] == '1'}
    end
    routes[ARGV[i]] = subs
    i = i + 2 + 3 * n
  end
  return routes
end

local args = {
  prefix = ARGV[1],
  batch = tonumber(ARGV[2]),
  expiry_ms = tonumber(ARGV[3]),
  ttl = ARGV[4],
  log_size = tonumber(ARGV[5]),
  now_iso = ARGV[6],
  keep_armed = ARGV[7] == '1',
  user_events_kept = tonumber(ARGV[8]),
  routes = decode_routes(9),
}
local prefix = args.prefix
local now = server_now()
local touched, order = {}, {}  -- the subscribers given ready work, in the order they got it
local counts = {}  -- the audit's (prelude.lua: tally)

local function delivery_key(did)
  return prefix .. ':delivery:' .. did
end

local function queue_ready(sub, did)
  redis.call('RPUSH', prefix .. ':ready:' .. sub, did)
  if not touched[sub] then
    touched[sub] = true
    order[#order + 1] = sub
  end
end

local function supersede(sub, did, by)
  local key = delivery_key(did)
  redis.call('ZREM', prefix .. ':open:' .. sub, did)
  tally(counts, sub, 'superseded')
  redis.call('HSET', key, 'state', 'superseded', 'done', now, 'reason', 'superseded by ' .. by)
  redis.call('EXPIRE', key, args.ttl)
  local log = prefix .. ':attempts:' .. did
  redis.call('RPUSH', log, cjson.encode({at = args.now_iso, trigger = 'coalesce',
                                         outcome = 'superseded', superseded_by = by}))
  redis.call('LTRIM', log, -args.log_size, -1)
  redis.call('EXPIRE', log, args.ttl)
end

-- A waiting delivery leaves the retry schedule: {due, attempts made}, or nil if it had no place.
local function take_schedule(did, attempts)
  local due = redis.call('ZSCORE', KEYS[3], did)
  redis.call('ZREM', KEYS[3], did)
  if due then return {due, attempts} end
  return nil
end

-- Supersedes the chain's undelivered updates by event ``by``; returns the schedule of a waiting
-- one, which passes to the newcomer (nil if none waited).
local function coalesce(sub, chain, by)
  local inherit = nil
  for _, did in ipairs(redis.call('LRANGE', chain, 0, -1)) do
    local rec = redis.call('HMGET', delivery_key(did), 'state', 'type', 'attempts')
    if rec[2] == UPDATED and SUPERSEDABLE[rec[1]] then
      if rec[1] == 'waiting' then inherit = take_schedule(did, rec[3]) or inherit end
      supersede(sub, did, by)
      redis.call('LREM', chain, 1, did)
    end
  end
  return inherit
end

-- Puts delivery ``did`` at the end of its user's chain. Returns the chain key, the state it
-- starts in (ready at the head; waiting at the head with an inherited schedule; else blocked)
-- and the inherited schedule {due, attempts} when waiting.
local function join_chain(route, ev, eid, did)
  local chain = prefix .. ':chain:' .. route.sub .. ':' .. ev.user
  local head = redis.call('LINDEX', chain, 0)
  local inherit = nil
  if route.coalesce and ev.type == UPDATED then inherit = coalesce(route.sub, chain, eid) end
  local new_head = redis.call('LINDEX', chain, 0)
  local state = 'blocked'
  if not new_head then
    state = inherit and 'waiting' or 'ready'
  elseif new_head ~= head and redis.call('HGET', delivery_key(new_head), 'state') == 'blocked' then
    redis.call('HSET', delivery_key(new_head), 'state', 'ready')  -- the head was superseded:
    queue_ready(route.sub, new_head)                                -- the next in line goes now
  end
  redis.call('RPUSH', chain, did)
  if state ~= 'waiting' then inherit = nil end
  return chain, state, inherit
end

local function create_delivery(route, ev, eid)
  local did = eid .. ':' .. route.sub
  local key = delivery_key(did)
  if redis.call('EXISTS', key) == 1 then return end
  local chain, state, inherit = '', 'ready', nil
  if route.ordered and ev.user ~= '' then chain, state, inherit = join_chain(route, ev, eid, did) end
  redis.call('HSET', key, 'event', eid, 'sub', route.sub, 'type', ev.type, 'state', state,
             'attempts', inherit and inherit[2] or 0, 'trigger', 'scheduled',
             'created', now, 'chain', chain)
  redis.call('ZADD', prefix .. ':open:' .. route.sub, ev.published_at or now, did)
  tally(counts, route.sub, 'fanned_out')
  if state == 'ready' then
    queue_ready(route.sub, did)
  elseif state == 'waiting' then
    redis.call('HSET', key, 'next', inherit[1])
    redis.call('ZADD', KEYS[3], inherit[1], did)
  end
end

-- The console's lookup by user.
local function index_user_event(eid, user)
  if user == '' then return end
  local key = prefix .. ':user-events:' .. user
  if redis.call('LPUSH', key, eid) > 2 * args.user_events_kept then
    redis.call('LTRIM', key, 0, args.user_events_kept - 1)
  end
  redis.call('EXPIRE', key, args.ttl)
end

-- The event's routes, less the subscriber an operational event is about.
local function targets_of(ev)
  local routes = args.routes[ev.type] or {}
  if not ev.about then return routes end
  local others = {}
  for _, route in ipairs(routes) do
    if route.sub ~= ev.about then others[#others + 1] = route end
  end
  return others
end

-- Creates the event's deliveries; false if its record expired.
local function fan_out(eid)
  local rec = redis.call('HMGET', prefix .. ':event:' .. eid, 'type', 'user', 'about',
                         'published_at')
  if not rec[1] then return false end
  local ev = {type = rec[1], user = rec[2] or '', about = rec[3], published_at = rec[4]}
  index_user_event(eid, ev.user)
  local targets = targets_of(ev)
  if #targets == 0 then tally(counts, '', 'unmatched') end
  for _, route in ipairs(targets) do create_delivery(route, ev, eid) end
  return true
end

-- Refreshes the dispatch trigger while events wait, else disarms it; a caller that lingers keeps
-- it armed (publishers need send no trigger) and is woken by the next publish. 1 if more wait.
local function settle_dispatch()
  if redis.call('LLEN', KEYS[1]) > 0 then
    redis.call('SET', KEYS[2], now)
    return 1
  end
  if args.keep_armed then
    redis.call('SET', KEYS[2], now)
    redis.call('SET', prefix .. ':dispatch-waiting', 1, 'PX', WAITING_MS)
  else
    redis.call('DEL', KEYS[2], prefix .. ':dispatch-waiting')
  end
  return 0
end

local ids = redis.call('LPOP', KEYS[1], args.batch) or {}
local missing = 0
for _, eid in ipairs(ids) do
  if not fan_out(eid) then missing = missing + 1 end
end
local more = settle_dispatch()
tally(counts, '', 'drained', #ids)
flush_tally(prefix, counts)
local triggers = {}
for _, sub in ipairs(order) do
  redis.call('SADD', KEYS[4], sub)
  ensure_slot(prefix, sub, now, now + args.expiry_ms, triggers)
end
return {#ids, missing, triggers, more, (counts[''] or {}).unmatched or 0}
