-- Settle the running tasks of a worker that is gone: running -> failed.
-- KEYS[1] the running set, KEYS[2] the failed set, KEYS[3] the worker's
-- running set, KEYS[4..] task hashes, one per key in ARGV order
-- ARGV[1] condition (msgpack), ARGV[2] time (msgpack), ARGV[3] channel,
-- ARGV[4..] task keys
-- First writer wins: a task no longer running (its result arrived) is skipped.
-- Returns the keys that were failed.
local out = {}
for i = 4, #KEYS do
  local key = ARGV[i]
  redis.call("SREM", KEYS[3], key)
  if redis.call("SREM", KEYS[1], key) == 1 then
    redis.call("SADD", KEYS[2], key)
    redis.call("HSET", KEYS[i], "condition", ARGV[1], "finished_at", ARGV[2])
    out[#out + 1] = key
  end
end
if #out > 0 then redis.call("PUBLISH", ARGV[3], "X") end
return out
