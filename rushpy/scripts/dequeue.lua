-- Remove queued tasks and fail them: queued -> failed.
-- KEYS[1] the queue (shared or a worker's priority queue)
-- KEYS[2] the failed set
-- KEYS[3] the failed log (moved keys are appended, announced "X <first> <keys...>")
-- KEYS[4..] task hashes, one per key in ARGV order
-- ARGV[1] condition (msgpack), ARGV[2] time (msgpack), ARGV[3] results channel,
-- ARGV[4..] task keys
-- The condition is also appended to the task's "conditions" history (an
-- unreadable history is replaced: with_condition).
-- First writer wins: keys no longer in the queue (popped meanwhile) are skipped.
-- The queue is rebuilt in one pass (remove_where).
-- Returns the number of tasks moved.
local condition = cmsgpack.unpack(ARGV[1])
expect_types({KEYS[1], "list", KEYS[2], "set", KEYS[3], "list"})
local wanted = {}
for i = 4, #ARGV do wanted[ARGV[i]] = KEYS[i] end
local failed = {}
local moved = remove_where(KEYS[1], function(key)
  local hash = wanted[key]
  if not hash then return false end
  wanted[key] = nil
  redis.call("SADD", KEYS[2], key)
  failed[#failed + 1] = key
  -- A hash of the wrong type cannot take the condition; the key still fails.
  if is_hash(hash) then
    redis.call("HSET", hash, "conditions", with_condition(hash, condition), "condition", ARGV[1], "finished_at", ARGV[2])
  end
  return true
end)
log_failed(KEYS[3], ARGV[3], failed)
return moved
