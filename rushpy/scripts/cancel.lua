-- Cancel tasks wherever they wait or run: queued | pending | running -> failed.
-- KEYS[1] the running set, KEYS[2] the failed set, KEYS[3] the failed log,
-- KEYS[4..3+M] the M lists a queued task can be in (shared queue, priority
-- queues, pending lists), KEYS[4+M..] task hashes, one per key in ARGV order
-- ARGV[1] M, ARGV[2] condition (msgpack), ARGV[3] time (msgpack),
-- ARGV[4] events channel, ARGV[5] results channel, ARGV[6..] task keys
-- Each list is rebuilt in one pass (remove_where), so cancelling N keys in
-- lists of total length L costs O(N + L). A cancelled task records the
-- condition as its final one and in its "conditions" history; it is never
-- retried automatically; an unreadable history is replaced (with_condition).
-- Collections of the wrong type raise before anything is written.
-- First writer wins: finished and failed tasks, and
-- keys found nowhere, are left alone.
-- Publishes "C <keys...>" on the events channel for cancelled running tasks,
-- so their workers interrupt them, then "X <first index> <keys...>" on the
-- results channel for every cancelled task, appended to the failed log
-- (log_failed).
-- Returns {cancelled queued keys, cancelled running keys}.
local m = tonumber(ARGV[1])
local condition = cmsgpack.unpack(ARGV[2])
local hashes = {}
for i = 6, #ARGV do hashes[ARGV[i]] = KEYS[i - 2 + m] end
local types = {KEYS[1], "set", KEYS[2], "set", KEYS[3], "list"}
for l = 4, 3 + m do
  types[#types + 1] = KEYS[l]
  types[#types + 1] = "list"
end
expect_types(types)
local function fail(key)
  local hash = hashes[key]
  -- A hash of the wrong type cannot take the condition; the key still fails.
  if is_hash(hash) then
    redis.call("HSET", hash, "conditions", with_condition(hash, condition), "condition", ARGV[2], "finished_at", ARGV[3])
  end
  redis.call("SADD", KEYS[2], key)
  hashes[key] = nil
end
local running = {}
for i = 6, #ARGV do
  local key = ARGV[i]
  if hashes[key] and redis.call("SREM", KEYS[1], key) == 1 then
    fail(key)
    running[#running + 1] = key
  end
end
local queued = {}
for l = 4, 3 + m do
  if next(hashes) == nil then break end
  remove_where(KEYS[l], function(key)
    if not hashes[key] then return false end
    fail(key)
    queued[#queued + 1] = key
    return true
  end)
end
if #running > 0 then
  redis.call(PUBLISH, ARGV[4], "C " .. table.concat(running, " "))
end
local all = {}
for _, key in ipairs(running) do all[#all + 1] = key end
for _, key in ipairs(queued) do all[#all + 1] = key end
log_failed(KEYS[3], ARGV[5], all)
return {queued, running}
