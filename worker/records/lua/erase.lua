-- ERASE: forgets one user's data at their request. For each of the user's events: the event
-- record keeps its type and times but loses its body and user; each of its deliveries still
-- open (blocked, ready, running, waiting) is cancelled as ``erased`` with the reason given,
-- leaves the ready list, the retry schedule and the open index, and is counted ``erased`` for
-- the audit (``{prefix}:tally:{sub}``); every delivery of it loses its chain (which names the
-- user), its attempt log the receivers' response excerpts (which may echo the body), and a dead
-- letter (which holds the body) is deleted with its index entries; the delivery record keeps
-- its ids, times, state and reason. An event not yet drained leaves the pending list (counted
-- ``drained``: it will never fan out). Then the user's chains and console index go. The user's
-- sequence counter stays (its key is named by a hash of the user id, not the id, and a number
-- must never be given twice: a receiver that kept its last applied number would drop a new
-- event numbered from 1 again). A delivery already erased is left as it is, so running the call
-- again changes and counts nothing.
--
-- KEYS[1] due: ZSET of delivery ids by lease end or next due time, server ms
-- KEYS[2] dead: ZSET of dead delivery ids by time of death, server ms
-- KEYS[3] pending: LIST of event ids, publish order
-- ARGV[1] key prefix
-- ARGV[2] record ttl: how long a finished record is kept, s
-- ARGV[3] reason: why the deliveries were cancelled, text
-- ARGV[4] user id
-- ARGV[5] subscriber count: how many subscriber ids follow
-- ARGV[6...] subscriber ids, then event ids, 1 field each
--
-- Returns {events erased, deliveries cancelled, dead letters deleted, attempt logs cleaned}.
-- luacheck: std lua51
-- luacheck: globals ARGV KEYS redis cjson
-- luacheck: read globals server_now tally flush_tally (prelude.lua)

local OPEN = {blocked = true, ready = true, running = true, waiting = true}
local args = {prefix = ARGV[1], ttl = ARGV[2], reason = ARGV[3], user = ARGV[4], subs = {},
              events = {}}
local n_subs = tonumber(ARGV[5])
for i = 6, 5 + n_subs do args.subs[#args.subs + 1] = ARGV[i] end
for i = 6 + n_subs, #ARGV do args.events[#args.events + 1] = ARGV[i] end
local prefix = args.prefix
local now = server_now()
local counts = {}
local done = {events = 0, cancelled = 0, letters = 0, logs = 0}

-- Drops the response excerpts of an attempt log, keeping its entries and its expiry.
local function clean_log(did)
  local log = prefix .. ':attempts:' .. did
  local entries = redis.call('LRANGE', log, 0, -1)
  if #entries == 0 then return end
  local ttl = redis.call('PTTL', log)
  redis.call('DEL', log)
  for _, raw in ipairs(entries) do
    local entry = cjson.decode(raw)
    entry['response'] = nil
    redis.call('RPUSH', log, cjson.encode(entry))
  end
  if ttl > 0 then redis.call('PEXPIRE', log, ttl) end
  done.logs = done.logs + 1
end

local function cancel(did, sub, key)
  redis.call('HSET', key, 'state', 'erased', 'done', now, 'reason', args.reason)
  redis.call('ZREM', KEYS[1], did)
  redis.call('ZREM', prefix .. ':open:' .. sub, did)
  redis.call('LREM', prefix .. ':ready:' .. sub, 0, did)
  redis.call('EXPIRE', key, args.ttl)
  tally(counts, sub, 'erased')
  done.cancelled = done.cancelled + 1
end

local function erase_delivery(eid, sub)
  local did = eid .. ':' .. sub
  local key = prefix .. ':delivery:' .. did
  local state = redis.call('HGET', key, 'state')
  if state and OPEN[state] then cancel(did, sub, key) end
  if state then redis.call('HSET', key, 'chain', '') end
  clean_log(did)
  if redis.call('DEL', prefix .. ':dead:' .. did) == 1 then done.letters = done.letters + 1 end
  redis.call('ZREM', KEYS[2], did)
  redis.call('ZREM', prefix .. ':dead-of:' .. sub, did)
end

for _, eid in ipairs(args.events) do
  local ekey = prefix .. ':event:' .. eid
  if redis.call('HDEL', ekey, 'body', 'user') > 0 then done.events = done.events + 1 end
  tally(counts, '', 'drained', redis.call('LREM', KEYS[3], 0, eid))
  for _, sub in ipairs(args.subs) do erase_delivery(eid, sub) end
end
for _, sub in ipairs(args.subs) do redis.call('DEL', prefix .. ':chain:' .. sub .. ':' .. args.user) end
redis.call('DEL', prefix .. ':user-events:' .. args.user)
flush_tally(prefix, counts)
return {done.events, done.cancelled, done.letters, done.logs}
