-- STATS: what a metrics scrape reads, in one call and read only, on the server's clock. Reads
-- the small indexes the transitions keep in step (``{prefix}:open:{sub}``,
-- ``{prefix}:dead-of:{sub}``, ``{prefix}:stats:dead-lettered``), so a scrape never scans.
--
-- KEYS[1] pending: LIST of event ids not yet fanned out
-- KEYS[2] due: ZSET of delivery ids by lease end or next due time, server ms
-- KEYS[3] active subscribers: SET of subscriber ids that have had deliveries
-- ARGV[1] key prefix
-- ARGV[2] dead-letter ttl: how long a dead letter is kept, ms
-- ARGV[3...] configured subscriber ids, 1 field each
--
-- Returns {rows, undispatched events, oldest undispatched age ms, due entries, most overdue ms,
-- global tally}; a row is {subscriber id, backlog, oldest age ms, dead letters held, dead letters
-- ever, disabled 0/1, failing for ms, tally, breaker (0 closed, 1 half-open, 2 open), ms until
-- its next probe (0: none waited for)}, one per configured or active subscriber. A tally is
-- the audit's counts (``{prefix}:tally:{sub}``: TALLY_FIELDS; ``{prefix}:tally``: GLOBAL_FIELDS),
-- read in the same call as the open deliveries they must balance against.
-- luacheck: std lua51
-- luacheck: globals ARGV KEYS redis
-- luacheck: read globals server_now (prelude.lua)

local prefix, dead_ttl = ARGV[1], tonumber(ARGV[2])
local TALLY_FIELDS = {'fanned_out', 'delivered', 'dead', 'superseded', 'removed', 'erased'}
local GLOBAL_FIELDS = {'published', 'drained', 'unmatched'}
local now = server_now()

local function subscriber_ids()
  local subs, seen = {}, {}
  local function add(sub)
    if not seen[sub] then
      seen[sub] = true
      subs[#subs + 1] = sub
    end
  end
  for i = 3, #ARGV do add(ARGV[i]) end
  for _, sub in ipairs(redis.call('SMEMBERS', KEYS[3])) do add(sub) end
  return subs
end

-- Age of the lowest score in a ZSET (0 when empty), ms.
local function oldest_age(key)
  local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')[2]
  if not first then return 0 end
  return math.max(0, now - tonumber(first))
end

local function counts(key, fields)
  local raw = redis.call('HMGET', key, unpack(fields))
  for i = 1, #fields do raw[i] = tonumber(raw[i] or 0) end
  return raw
end

-- The circuit breaker: 0 closed, 1 half-open, 2 open; and the ms until its next probe.
local function breaker_of(sub)
  local b = redis.call('HMGET', prefix .. ':subscriber:' .. sub, 'breaker', 'probe_at')
  if b[1] == 'half_open' then return 1, 0 end
  if b[1] ~= 'open' then return 0, 0 end
  return 2, math.max(0, tonumber(b[2] or 0) - now)
end

local function row(sub)
  local open = prefix .. ':open:' .. sub
  local backlog = redis.call('ZCARD', open)
  local held = redis.call('ZCOUNT', prefix .. ':dead-of:' .. sub, '(' .. (now - dead_ttl), '+inf')
  local ever = redis.call('HGET', prefix .. ':stats:dead-lettered', sub) or 0
  local h = redis.call('HMGET', prefix .. ':subscriber:' .. sub, 'disabled', 'failing_since')
  local failing = 0
  if h[2] then failing = math.max(0, now - tonumber(h[2])) end
  local breaker, next_probe = breaker_of(sub)
  return {sub, backlog, oldest_age(open), held, tonumber(ever), h[1] == '1' and 1 or 0, failing,
          counts(prefix .. ':tally:' .. sub, TALLY_FIELDS), breaker, next_probe}
end

local function oldest_undispatched()
  local head = redis.call('LINDEX', KEYS[1], 0)
  if not head then return 0 end
  local at = redis.call('HGET', prefix .. ':event:' .. head, 'published_at')
  if not at then return 0 end
  return math.max(0, now - tonumber(at))
end

local rows = {}
for _, sub in ipairs(subscriber_ids()) do rows[#rows + 1] = row(sub) end
local due, overdue = redis.call('ZCOUNT', KEYS[2], '-inf', now), 0
if due > 0 then overdue = oldest_age(KEYS[2]) end
return {rows, redis.call('LLEN', KEYS[1]), oldest_undispatched(), due, overdue,
        counts(prefix .. ':tally', GLOBAL_FIELDS)}
