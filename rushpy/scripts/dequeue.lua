-- Remove queued tasks and fail them: queued -> failed.
-- KEYS[1] the queue (shared or a worker's priority queue)
-- KEYS[2] the failed set
-- KEYS[3..] task hashes, one per key in ARGV order
-- ARGV[1] condition (msgpack), ARGV[2] time (msgpack), ARGV[3] channel,
-- ARGV[4..] task keys
-- The condition is also appended to the task's "conditions" history.
-- First writer wins: keys no longer in the queue (popped meanwhile) are skipped.
-- The queue is rebuilt in one pass, so removing N keys from a queue of M costs
-- O(N + M), not O(N * M).
-- Returns the number of tasks moved.
local condition = cmsgpack.unpack(ARGV[1])
local wanted = {}
for i = 4, #ARGV do wanted[ARGV[i]] = KEYS[i - 1] end
local queue = redis.call("LRANGE", KEYS[1], 0, -1)
local keep = {}
local moved = 0
for _, key in ipairs(queue) do
  local hash = wanted[key]
  if hash then
    wanted[key] = nil
    redis.call("SADD", KEYS[2], key)
    local raw = redis.call("HGET", hash, "conditions")
    local history = raw and cmsgpack.unpack(raw) or {}
    history[#history + 1] = condition
    redis.call("HSET", hash, "conditions", cmsgpack.pack(history), "condition", ARGV[1], "finished_at", ARGV[2])
    moved = moved + 1
  else
    keep[#keep + 1] = key
  end
end
if moved > 0 then
  redis.call("DEL", KEYS[1])
  for i = 1, #keep, 1000 do
    redis.call("RPUSH", KEYS[1], unpack(keep, i, math.min(i + 999, #keep)))
  end
  redis.call("PUBLISH", ARGV[3], "X")
end
return moved
