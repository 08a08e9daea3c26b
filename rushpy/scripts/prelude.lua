-- rushpy prelude: helpers shared by every script. It is prepended to each
-- script when the script is loaded, so the SHA a script runs by is that of
-- prelude + script. Only local definitions live here: scripts stay pure.

-- The publishing command. On a Redis Cluster the scripts are loaded with
-- SPUBLISH here (rushpy.scripts.script(sharded=True)): a sharded channel's
-- messages stay within the shard that owns the network's slot instead of
-- crossing the cluster bus to every node.
local PUBLISH = "PUBLISH"

-- RPUSH many items; unpack() is limited by Lua's stack, so push in chunks.
local function rpush_all(key, items)
  for i = 1, #items, 1000 do
    redis.call("RPUSH", key, unpack(items, i, math.min(i + 999, #items)))
  end
end

-- Put items at the head of a list keeping their order (items[1] ends first).
local function lpush_in_order(key, items)
  for i = #items, 1, -1000 do
    local chunk = {}
    for j = i, math.max(1, i - 999), -1 do chunk[#chunk + 1] = items[j] end
    redis.call("LPUSH", key, unpack(chunk))
  end
end

-- The field preamble of scripts that write task hashes: at ARGV[pos], C, then
-- C name/value pairs common to every task, then F, then F field names.
-- Returns the common pairs (flat), the names, and the position after them.
local function parse_fields(pos)
  local common = {}
  local ncommon = tonumber(ARGV[pos])
  for i = 1, ncommon * 2 do common[i] = ARGV[pos + i] end
  pos = pos + ncommon * 2 + 1
  local nfields = tonumber(ARGV[pos])
  local names = {}
  for i = 1, nfields do names[i] = ARGV[pos + i] end
  return common, names, pos + nfields + 1
end

-- HSET arguments: appends the common pairs, then the F per-task values at
-- ARGV[pos..] under their names, to the table `args` (which may hold leading
-- pairs) and returns it; "" marks a field left unset. Filling the caller's
-- table saves one table per task on the hot paths.
local function field_args(args, common, names, pos)
  local n = #args
  for i = 1, #common do args[n + i] = common[i] end
  n = n + #common
  for i = 1, #names do
    local value = ARGV[pos + i - 1]
    if value ~= "" then
      args[n + 1] = names[i]
      args[n + 2] = value
      n = n + 2
    end
  end
  return args
end

-- Corrupt data. Redis does not roll a script back when it fails half-way,
-- so a script must never fail after its first write: each checks the types of
-- the collections it writes (expect_types) before writing, and reads task
-- fields only through the checked readers below, which report bad data
-- instead of raising. A task with bad bookkeeping data fails alone
-- (fail_corrupt) while the rest of the batch proceeds.

-- Raise (before any write) when a collection key holds the wrong Redis type;
-- pairs is a flat list of key, expected type ("list", "set"). A missing key
-- is fine: it is created on first write.
local function expect_types(pairs)
  for i = 1, #pairs, 2 do
    local found = redis.call("TYPE", pairs[i]).ok
    if found ~= "none" and found ~= pairs[i + 1] then
      error("key " .. pairs[i] .. " holds a " .. found .. ", not a " .. pairs[i + 1]
        .. ": it was changed by something other than rushpy; reset() the network")
    end
  end
end

-- Whether a task hash can be read and written as a hash (missing is fine).
local function is_hash(hash)
  local found = redis.call("TYPE", hash).ok
  return found == "hash" or found == "none"
end

-- A msgpack number field of a task hash: the number (`default` when the
-- field is absent), or nil and a message naming the field.
-- One pcall'd HGET also tells a task key of the wrong type (no TYPE call on
-- the hot paths of claim and complete).
local function number_field(hash, key, name, default)
  local raw = redis.pcall("HGET", hash, name)
  if type(raw) == "table" and raw.err then
    return nil, "task " .. key .. " is stored as a " .. redis.call("TYPE", hash).ok .. ", not a hash"
  end
  if not raw then return default end
  local ok, value = pcall(cmsgpack.unpack, raw)
  if ok and type(value) == "number" then return value end
  return nil, "field '" .. name .. "' of task " .. key .. " is not a number"
end

-- The task's "conditions" history (a list; absent: empty), or nil and a
-- message naming the field.
local function history_field(hash, key)
  local raw = redis.call("HGET", hash, "conditions")
  if not raw then return {} end
  local ok, value = pcall(cmsgpack.unpack, raw)
  if ok and type(value) == "table" and (next(value) == nil or value[1] ~= nil) then return value end
  return nil, "field 'conditions' of task " .. key .. " is not a list of conditions"
end

-- nil when the task's retry bookkeeping (attempts, max_retries, conditions)
-- can be read, else a message naming the first bad field (or the bad type).
local function check_retry_fields(hash, key)
  if not is_hash(hash) then
    return "task " .. key .. " is stored as a " .. redis.call("TYPE", hash).ok .. ", not a hash"
  end
  local _, err = number_field(hash, key, "attempts", 0)
  if err then return err end
  _, err = number_field(hash, key, "max_retries", 0)
  if err then return err end
  _, err = history_field(hash, key)
  return err
end

-- The task's "conditions" history with `condition` (a decoded table) appended,
-- packed, ready to be written. An unreadable history is replaced: it could
-- not be shown anyway, and the new condition must be kept.
local function with_condition(hash, condition)
  local history = history_field(hash, "") or {}
  history[#history + 1] = condition
  return cmsgpack.pack(history)
end

-- Fail a task whose stored data is corrupt: a "CorruptTask" condition naming
-- the bad field becomes its final condition and joins its history (when the
-- hash is a hash at all), and the key joins `failed_set`. The caller has
-- already removed the key from its previous state.
local function fail_corrupt(hash, key, failed_set, message, time)
  local condition = {type = "CorruptTask", message = message}
  if is_hash(hash) then
    redis.call("HSET", hash, "conditions", with_condition(hash, condition),
      "condition", cmsgpack.pack(condition), "finished_at", time)
  end
  redis.call("SADD", failed_set, key)
end

-- Whether a task may run again: its attempts (the number of claims; a hash
-- without the field was never claimed, so 0, as claim.lua counts) are at most
-- its max_retries (absent: 0). claim.lua writes attempts before a task runs,
-- so a running task always has at least 1 here. Unreadable counts allow no
-- retry (callers that must tell check check_retry_fields first).
local function attempts_left(hash)
  if not is_hash(hash) then return false end
  local attempts = number_field(hash, "", "attempts", 0)
  local retries = number_field(hash, "", "max_retries", 0)
  return attempts ~= nil and retries ~= nil and attempts <= retries
end

-- A failure of a running task (already removed from the running sets): the
-- condition joins its history; with attempts left (and not `final`),
-- `retry_fields` are written and true returned (the caller re-queues it);
-- otherwise the task fails with the condition (raw msgpack) and
-- `fail_fields`, joins `failed_set`, and false is returned. A task with
-- unreadable bookkeeping fails alone (fail_corrupt, at `time`) and false is
-- returned.
local function retry_or_fail(hash, key, condition, decoded, failed_set, retry_fields, fail_fields, time, final)
  local corrupt = check_retry_fields(hash, key)
  if corrupt then
    fail_corrupt(hash, key, failed_set, corrupt, time)
    return false
  end
  local history = with_condition(hash, decoded)
  if not final and attempts_left(hash) then
    redis.call("HSET", hash, "conditions", history, unpack(retry_fields))
    return true
  end
  redis.call("HSET", hash, "conditions", history, "condition", condition, unpack(fail_fields))
  redis.call("SADD", failed_set, key)
  return false
end

-- Empty a worker's list into the shared queue; returns how many keys moved.
-- Its pending list goes to the head, in order, so those keys run next (they
-- were next already); its priority queue goes to the tail, behind work that
-- was queued before it.
local function release_list(list, queue, to_head)
  local keys = redis.call("LRANGE", list, 0, -1)
  if #keys == 0 then return 0 end
  redis.call("DEL", list)
  if to_head then lpush_in_order(queue, keys) else rpush_all(queue, keys) end
  return #keys
end

-- Remove from a list every item for which take(item) is true, rebuilding the
-- list in one pass: removing N items from a list of L costs O(N + L), not
-- O(N * L). Returns how many were removed.
local function remove_where(list, take)
  local items = redis.call("LRANGE", list, 0, -1)
  local keep = {}
  local removed = 0
  for _, item in ipairs(items) do
    if take(item) then removed = removed + 1 else keep[#keep + 1] = item end
  end
  if removed > 0 then
    redis.call("DEL", list)
    rpush_all(list, keep)
  end
  return removed
end

-- Finished tasks. A task that finishes leaves its own hash: its fields are
-- packed into one row, stored under its key in the network's rows hash, and
-- the hash is deleted. That saves the per-key overhead of a Redis key (about
-- 150 bytes of the 350 a small finished task took as a hash) and lets a read
-- fetch a finished task's fields as one value. A row is a msgpack array: the
-- value of each field of ROW_SLOTS in that order (false: absent), trailing
-- absent ones left out, then any other field as a name, value pair (every
-- slot is then written). rushpy/stored_rows.py reads it and must agree.
local ROW_SLOTS = {"xs", "ys", "worker_id", "created_at", "started_at", "finished_at", "attempts", "claim",
  "xs_extra", "ys_extra", "seed", "timeout", "max_retries", "conditions", "done"}
local ROW_SLOT = {}
for i, name in ipairs(ROW_SLOTS) do ROW_SLOT[name] = i end

-- The packed row of a flat HGETALL-style list of fields.
local function pack_row(flat)
  local row = {}
  local nslots = #ROW_SLOTS
  for i = 1, nslots do row[i] = false end
  local extra = {}
  local used = 0
  for i = 1, #flat, 2 do
    local slot = ROW_SLOT[flat[i]]
    if slot then
      row[slot] = flat[i + 1]
      if slot > used then used = slot end
    else
      extra[#extra + 1] = flat[i]
      extra[#extra + 1] = flat[i + 1]
    end
  end
  if #extra > 0 then
    for i = 1, #extra do row[nslots + i] = extra[i] end
  else
    for i = used + 1, nslots do row[i] = nil end
  end
  return cmsgpack.pack(row)
end

-- Store a finished task's fields (flat) as its row and delete its hash.
local function store_row(rows, key, hash, flat)
  redis.call("HSET", rows, key, pack_row(flat))
  redis.call("DEL", hash)
end

-- The "claim" field of a finished task's row (nil: no row, or unreadable).
local function row_claim(rows, key)
  local blob = redis.call("HGET", rows, key)
  if not blob then return nil end
  local ok, row = pcall(cmsgpack.unpack, blob)
  if ok and type(row) == "table" then return row[ROW_SLOT.claim] end
  return nil
end

-- Most bytes of task rows one announcement carries (see announce_finished).
local ANNOUNCE_ROWS_BYTES = 4096

-- Publish "F <index of the first key in the finished list> <keys...>" for
-- keys just appended to the finished list, so listeners read exactly the new
-- results without first reading the list. When `flats` (the keys' fields as
-- flat name, value lists, in order) is given and they add up to at most
-- ANNOUNCE_ROWS_BYTES, the message goes on with a newline and the msgpack
-- array of those lists: a waiter then has the rows without reading them (one
-- round trip less on every result's critical path). Larger batches announce
-- keys only, so a message stays small for every subscriber.
local function announce_finished(finished, channel, keys, flats)
  local first = redis.call("LLEN", finished) - #keys
  local message = "F " .. first .. " " .. table.concat(keys, " ")
  if flats and #flats == #keys then
    local rows = {}
    local size = 0
    for i = 1, #flats do
      local row = flats[i]
      for j = 1, #row do size = size + #row[j] end
      if size > ANNOUNCE_ROWS_BYTES then
        rows = nil
        break
      end
      rows[i] = row
    end
    if rows then message = message .. "\n" .. cmsgpack.pack(rows) end
  end
  redis.call(PUBLISH, channel, message)
end

-- ---------------------------------------------------------------- script --

-- Append keys that just failed for good to the failed log (append-only, in
-- failure order) and publish "X <index of the first key in the log> <keys...>",
-- so the failure stream reads them like finished ones. Called once per script
-- with every key it failed; nothing happens for none.
local function log_failed(log, channel, keys)
  if #keys == 0 then return end
  rpush_all(log, keys)
  local first = redis.call("LLEN", log) - #keys
  redis.call(PUBLISH, channel, "X " .. first .. " " .. table.concat(keys, " "))
end
