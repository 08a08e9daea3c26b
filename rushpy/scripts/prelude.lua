-- rushpy prelude: helpers shared by every script. It is prepended to each
-- script when the script is loaded, so the SHA a script runs by is that of
-- prelude + script. Only local definitions live here: scripts stay pure.

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

-- The task's "conditions" history with `condition` (a decoded table) appended,
-- packed, ready to be written.
local function with_condition(hash, condition)
  local raw = redis.call("HGET", hash, "conditions")
  local history = raw and cmsgpack.unpack(raw) or {}
  history[#history + 1] = condition
  return cmsgpack.pack(history)
end

-- Whether a task may run again: its attempts (the number of claims; a hash
-- without the field was never claimed, so 0, as claim.lua counts) are at most
-- its max_retries (absent: 0). claim.lua writes attempts before a task runs,
-- so a running task always has at least 1 here.
local function attempts_left(hash)
  local attempts = redis.call("HGET", hash, "attempts")
  local retries = redis.call("HGET", hash, "max_retries")
  attempts = attempts and cmsgpack.unpack(attempts) or 0
  retries = retries and cmsgpack.unpack(retries) or 0
  return attempts <= retries
end

-- A failure of a running task (already removed from the running sets): the
-- condition joins its history; with attempts left, `retry_fields` are written
-- and true returned (the caller re-queues it); otherwise the task fails with
-- the condition (raw msgpack) and `fail_fields`, joins `failed_set`, and false
-- is returned.
local function retry_or_fail(hash, key, condition, decoded, failed_set, retry_fields, fail_fields)
  local history = with_condition(hash, decoded)
  if attempts_left(hash) then
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

-- Publish "F <index of the first key in the finished list> <keys...>" for
-- keys just appended to the finished list, so listeners read exactly the new
-- results without first reading the list.
local function announce_finished(finished, channel, keys)
  local first = redis.call("LLEN", finished) - #keys
  redis.call("PUBLISH", channel, "F " .. first .. " " .. table.concat(keys, " "))
end

-- ---------------------------------------------------------------- script --
