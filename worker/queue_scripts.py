"""The Lua scripts of the model queues' Redis side (worker/redis_queue.py, worker/held.py):
the take, a moved take's marks, the settle and the backlog, each one atomic call for many
jobs."""

from aimass.protocol.records import ResultState

# Commands that take many keys or fields, called in slices: unpack() has a bound on how
# many values it passes.
SLICED = """
local function sliced(command, key, items)
  for i = 1, #items, 1000 do
    redis.call(command, key, unpack(items, i, math.min(i + 999, #items)))
  end
end
local function sliced_read(command, key, items)
  local out = {}
  for i = 1, #items, 1000 do
    local part
    if key then
      part = redis.call(command, key, unpack(items, i, math.min(i + 999, #items)))
    else
      part = redis.call(command, unpack(items, i, math.min(i + 999, #items)))
    end
    for j = 1, #part do out[#out + 1] = part[j] end
  end
  return out
end
"""

# What a take does for its jobs' ids, in one step (TAKE) or after a move (MARKS): a
# STARTED record each, where the worker writes them (never replacing an answer), and
# their cancel marks and run counts read, one command each for all of them; where the
# worker counts first runs as it takes them (AIMASS_COUNT_RUNS_AT=take), a run of 1 for
# each job with none counted yet, in one more command (a job with runs behind it runs
# alone, and its run is counted as it starts: worker/redis_queue.py, mark_runs).
JOB_MARKS = """
local function write_started(result_prefix, id, head, tail, ttl)
  redis.call('SET', result_prefix .. id, head .. cjson.encode(id) .. tail, 'NX', 'EX', ttl)
end
-- The cancel marks and run counts as they were; with count_first, a run of 1 written
-- for each id with none.
local function read_marks(cancelled_prefix, runs_hash, ids, count_first)
  local marks = {}
  for i, id in ipairs(ids) do marks[i] = cancelled_prefix .. id end
  local cancelled, runs = sliced_read('MGET', nil, marks), sliced_read('HMGET', runs_hash, ids)
  if count_first then
    local first = {}
    for i, id in ipairs(ids) do
      if not runs[i] then
        first[#first + 1] = id
        first[#first + 1] = '1'
      end
    end
    sliced('HSET', runs_hash, first)  -- slices of an even length: pairs stay whole
  end
  return cancelled, runs
end
"""

# KEYS: unacked hash, unacked index, runs hash, delivery-tag counter, holds index, the
#       worker's hold, then the lists to serve in order (all of one shard on a cluster:
#       KeySpace.bookkeeping, hold and lists).
# ARGV: limit, now, result ttl, the started record's bytes before and after its task id
#       (records.started_template), max message bytes, "1" to write started records,
#       the aimass encoder's mark (queues.ENCODER_MARK), the prefixes of result keys and
#       of cancel marks (the job id follows), the least take to move (0: never
#       move), "1" to move this take if it can, "1" to count first runs (JOB_MARKS),
#       then each list's base queue name.
# Returns 0 (2: the take was full and left jobs behind, where takes may move)
# then (tag, message, runs its job died in so far, base queue name, 1 if its job was
# cancelled) for each message taken; or, where asked to move, the limit is at least the
# least to move and the first list that holds jobs holds more than the limit, 1, the
# holds index's member for the hold, and the list's base queue name: its oldest messages
# (the limit) are then moved, oldest first, onto the hold (a name the worker never used
# before), without ever entering Lua (worker/held.py reads and records them).
# A message above the size cap is not decoded (the worker fails it unread) but is
# recorded under a fresh tag like any other, so that its job is not lost either.
# What a take costs Redis does not grow with the jobs it takes, but for the started
# records: one EXISTS for all the lists and one RPOP per list up to the last that holds
# jobs (an idle poll costs the EXISTS alone), then one HSET and one ZADD for kombu's
# bookkeeping, one MGET for cancel marks and one HMGET for run counts, for all of them,
# and one HSET of first runs where they are counted as taken (where a move is asked
# for, an LLEN of each list up to the first that holds jobs, instead of the RPOPs of the
# empty ones; a move is a SORT, an LTRIM and a ZADD).
# Each message enters Lua once as it is popped and once more as kombu's entry is built
# around it, and Lua hashes every byte of each string it makes (most of what a take
# costs Redis in large takes): a move costs a SORT and an LTRIM, whatever the messages.
TAKE = (
    SLICED
    + JOB_MARKS
    + """
local limit = tonumber(ARGV[1])
local now, ttl = ARGV[2], ARGV[3]
local started_head, started_tail = ARGV[4], ARGV[5]
local max_bytes = tonumber(ARGV[6])
local track_started = ARGV[7] == '1'
local mark = ARGV[8]
local result_prefix, cancelled_prefix = ARGV[9], ARGV[10]
local move_at, move_now = tonumber(ARGV[11]), ARGV[12] == '1'
local count_first = ARGV[13] == '1'
local first = 7  -- the first list's place in KEYS; its base queue name is ARGV[first + 7]
-- How many of the lists hold jobs (an empty list does not exist): one command tells an
-- idle worker's poll there is nothing, and the pops stop at the last list with jobs.
local holding = redis.call('EXISTS', unpack(KEYS, first))
if holding == 0 then return {0} end
-- A move: from the first list that holds jobs, where it holds more than the take may
-- carry (a backlog: the worker is behind, and the take is full). SORT ... STORE copies
-- the oldest onto the hold (a name never used before: nothing is overwritten). The
-- lists found empty on the way are not popped below.
local empty_before = first
if move_now and move_at > 0 and limit >= move_at then
  for i = first, #KEYS do
    local length = redis.call('LLEN', KEYS[i])
    if length > limit then
      redis.call('SORT', KEYS[i], 'BY', 'nosort', 'LIMIT', 0, limit, 'DESC', 'STORE', KEYS[6])
      redis.call('LTRIM', KEYS[i], 0, -limit - 1)
      local member = cjson.encode({KEYS[6], KEYS[i]})
      redis.call('ZADD', KEYS[5], now, member)
      return {1, member, ARGV[i + 7]}
    elseif length > 0 then
      break
    end
    empty_before = i + 1
  end
end
local out, unacked, index, ids, places = {0}, {}, {}, {}, {}
local taken = 0
-- A message the aimass client encoded (it starts with the mark): valid JSON by
-- construction, beginning with its properties, the first two of them its delivery tag
-- and its correlation id (its job id), plain strings: read by their place. Decoding a
-- message is most of what a take costs Redis; even searching it for the two cost 6,000
-- instructions a job, a thirtieth of the whole (each quote in its headers is a candidate
-- match). Returns nothing when the message is not marked, or not laid out so (an older
-- client's): it is then decoded.
local lead = mark .. '{"properties":{"delivery_tag":"'
local between = '","correlation_id":"'
local function marked(raw)
  if string.sub(raw, 1, #lead) ~= lead then return nil end
  local t = #lead + 1
  local u = string.find(raw, '"', t, true)
  if not u or u == t or string.sub(raw, u, u + #between - 1) ~= between then return nil end
  local i = u + #between
  local j = string.find(raw, '"', i, true)
  if not j or j == i then return nil end
  return string.sub(raw, t, u - 1), string.sub(raw, i, j - 1)
end
-- Any other message, as a table, read without its body where it can be: the body
-- (base64 text, no quotes) is nearly all of the bytes, and only the headers and
-- properties are needed here. Anything unexpected falls back to decoding the whole
-- message. Decoding also checks that the message is JSON, which kombu's restore needs
-- of what the unacked hash holds.
local function envelope(raw)
  local _, e = string.find(raw, '"body"%s*:%s*"')
  if e then
    local close = string.find(raw, '"', e + 1, true)
    if close then
      local ok, msg = pcall(cjson.decode, string.sub(raw, 1, e) .. string.sub(raw, close))
      if ok and type(msg) == 'table' then return true, msg end
    end
  end
  return pcall(cjson.decode, raw)
end
-- (tag, exchange, routing key, job id) of a decoded message; false if it is not a
-- kombu envelope (then it is not recorded: kombu could not restore it).
local function decoded(raw, base)
  local ok, msg = envelope(raw)
  if not ok or type(msg) ~= 'table' then return false end
  local tag, ex, rk, id = nil, '', base, nil
  local p = msg['properties']
  if type(p) == 'table' then
    if type(p['delivery_tag']) == 'string' then tag = p['delivery_tag'] end
    local info = p['delivery_info']
    if type(info) == 'table' then
      if type(info['exchange']) == 'string' then ex = info['exchange'] end
      if type(info['routing_key']) == 'string' and info['routing_key'] ~= '' then
        rk = info['routing_key']
      end
    end
  end
  local h = msg['headers']
  if type(h) == 'table' and type(h['id']) == 'string' and h['id'] ~= '' then
    id = h['id']
  end
  return true, tag, ex, rk, id
end
-- kombu's index holds each tag for as long as its message is unacknowledged. Redis keeps
-- a sorted set whose members are all at most 64 bytes (zset-max-ziplist-value) as one
-- flat list, where an insertion compares with every member and a removal searches them
-- all (~7-14 us a job with a worker's 64 jobs in flight); longer tags keep it a skip
-- list (~1.6 us). The '#' ends the tag, so that two tags never pad alike.
-- Each string a script makes costs Redis a pass over its bytes (Lua hashes every byte of
-- it), so what is the same for many messages is made once a call: the paddings by their
-- length, and the end of kombu's entry (exchange, routing key) by routing key.
local pads, tails = {}, {}
local function long(tag)
  local n = math.max(64 - #tag, 0)
  local pad = pads[n]
  if not pad then
    pad = '#' .. string.rep('-', n)
    pads[n] = pad
  end
  return tag .. pad
end
-- kombu's entry for a message: '[' message ',' exchange ',' routing key ']'.
local function entry(raw, ex, rk)
  local tail = ex == '' and tails[rk]
  if not tail then
    tail = ',' .. cjson.encode(ex) .. ',' .. cjson.encode(rk) .. ']'
    if ex == '' then tails[rk] = tail end
  end
  return '[' .. raw .. tail
end
local function record(raw, base)
  taken = taken + 1
  local tag, ex, rk, id = nil, '', base, nil
  if #raw <= max_bytes then
    tag, id = marked(raw)
    if not tag then
      local ok
      ok, tag, ex, rk, id = decoded(raw, base)
      if not ok then
        out[#out + 1] = ''
        out[#out + 1] = raw
        out[#out + 1] = 0
        out[#out + 1] = base
        out[#out + 1] = 0
        return
      end
    end
  end
  -- A fresh tag, from the shard's counter: its hash tag (none on one Redis) keeps it apart
  -- from the same count on another shard.
  if not tag then
    tag = 'aimass-' .. redis.call('INCR', KEYS[4]) .. (string.match(KEYS[4], '{.*}$') or '')
  end
  tag = long(tag)
  unacked[#unacked + 1] = tag
  unacked[#unacked + 1] = entry(raw, ex, rk)
  index[#index + 1] = now
  index[#index + 1] = tag
  if id then
    ids[#ids + 1] = id
    places[#places + 1] = #out
    if track_started then write_started(result_prefix, id, started_head, started_tail, ttl) end
  end
  out[#out + 1] = tag
  out[#out + 1] = raw
  out[#out + 1] = 0
  out[#out + 1] = base
  out[#out + 1] = 0
end
-- Whether a take leaves jobs behind (then the worker is behind, and its next take, if
-- at least the least to move, may move), whatever its size: a take under the least
-- follows one that made room for few jobs, and a move as the room grows saves most.
-- Each list is asked for one more than the take wants, and that one, if it comes, goes
-- back where it was (RPUSH: the oldest again). A take that empties the queue learns it
-- for nothing.
local probe = move_at > 0 and 1 or 0
local behind = false
for i = empty_before, #KEYS do
  local wanted = limit - taken
  if wanted <= 0 or holding <= 0 then break end
  local popped = redis.call('RPOP', KEYS[i], wanted + probe)
  if popped then
    holding = holding - 1
    if #popped > wanted then
      redis.call('RPUSH', KEYS[i], table.remove(popped))
      behind = true
    end
    for _, raw in ipairs(popped) do record(raw, ARGV[i + 7]) end
  end
end
if probe == 1 and taken >= limit and (behind or holding > 0) then out[1] = 2 end
sliced('HSET', KEYS[1], unacked)
sliced('ZADD', KEYS[2], index)
if #ids > 0 then
  local cancelled, runs = read_marks(cancelled_prefix, KEYS[3], ids, count_first)
  for i, at in ipairs(places) do
    out[at + 3] = tonumber(runs[i] or '0') or 0
    if cancelled[i] then out[at + 5] = 1 end
  end
end
return out
"""
)

# A moved take's reading of its jobs' marks (worker/held.py), given only their ids, run
# in the same transaction as its record. KEYS: runs hash. ARGV: the prefix of cancel
# marks, "1" to write started records, the prefix of result keys, result ttl, the
# started record's bytes before and after its task id, "1" to count first runs
# (JOB_MARKS), then the job ids. Returns (runs its job died in so far, 1 if it was
# cancelled) for each id.
MARKS = (
    SLICED
    + JOB_MARKS
    + """
local cancelled_prefix, track_started = ARGV[1], ARGV[2] == '1'
local result_prefix, ttl, started_head, started_tail = ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local count_first = ARGV[7] == '1'
local ids, out = {}, {}
for i = 8, #ARGV do
  local id = ARGV[i]
  ids[#ids + 1] = id
  if track_started then write_started(result_prefix, id, started_head, started_tail, ttl) end
end
if #ids == 0 then return out end
local cancelled, runs = read_marks(cancelled_prefix, KEYS[1], ids, count_first)
for i = 1, #ids do
  out[#out + 1] = tonumber(runs[i] or '0') or 0
  out[#out + 1] = cancelled[i] and 1 or 0
end
return out
"""
)

# KEYS: unacked hash, unacked index, runs hash. ARGV: ttl, "1" when this worker writes
# started records, the command that publishes a result (PUBLISH; SPUBLISH on a cluster),
# then (tag, result key, record, job id, dead-letter list, message) for each job; the
# list and the message are "" unless the job is parked. A stored final
# result is never replaced: a job run twice keeps its first answer. Per job: the result's
# SET and its PUBLISH (and, where started records are written, the GET that reads one);
# the acknowledgements and the run counts go in one command each for the whole call.
SETTLE = (
    SLICED
    + """
-- As given, a string: a number passed to a command is first formatted as text, each time.
local ttl = ARGV[1]
local read_first = ARGV[2] == '1'
local publish = ARGV[3]
local tags, ids = {}, {}
local function replaceable(key)
  local current = redis.call('GET', key)
  return (not current) or string.find(string.sub(current, 1, 32), '"""
    + ResultState.started
    + """',
                                       1, true)
end
for i = 4, #ARGV, 6 do
  local tag, key, record, id = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local dead, raw = ARGV[i + 4], ARGV[i + 5]
  if dead ~= '' then redis.call('LPUSH', dead, raw) end
  if id ~= '' then ids[#ids + 1] = id end
  if key ~= '' then
    local stored
    if read_first then
      stored = replaceable(key)
      if stored then redis.call('SET', key, record, 'EX', ttl) end
    else
      -- Nearly always nothing is stored yet. Else: a final answer stays; a started
      -- record (a worker that writes them, Celery's consumer) is replaced.
      stored = redis.call('SET', key, record, 'NX', 'EX', ttl)
      if not stored and replaceable(key) then
        redis.call('SET', key, record, 'EX', ttl)
        stored = true
      end
    end
    if stored then redis.call(publish, key, record) end
  end
  if tag ~= '' then tags[#tags + 1] = tag end
end
sliced('HDEL', KEYS[3], ids)
sliced('HDEL', KEYS[1], tags)
sliced('ZREM', KEYS[2], tags)
return 1
"""
)


# KEYS: lists. For each, its length and the job id of its oldest message (the next one
# taken), or "" when it is empty or the id is not found: read in Redis, so that the
# message itself (megabytes, at times) never crosses the network.
BACKLOG = """
local out = {}
for i = 1, #KEYS do
  local length, id = redis.call('LLEN', KEYS[i]), ''
  if length > 0 then
    local raw = redis.call('LINDEX', KEYS[i], -1)
    id = string.match(raw, '"id"%s*:%s*"([^"\\\\]+)"') or ''
  end
  out[#out + 1] = length
  out[#out + 1] = id
end
return out
"""
