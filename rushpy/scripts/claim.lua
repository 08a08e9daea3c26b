-- Mark popped tasks as running on a worker: pending -> running.
-- KEYS[1] the worker's pending list
-- KEYS[2] the running set
-- KEYS[3] the worker's running set
-- KEYS[4..] task hashes, one per key in ARGV order
-- ARGV[1] worker id (msgpack), ARGV[2] start time (msgpack), ARGV[3..] task keys
-- First writer wins: a key no longer in the pending list (re-queued meanwhile)
-- is skipped and answered with false.
-- Returns, per key, false or {xs, xs_extra}.
local out = {}
for i = 4, #KEYS do
  local key = ARGV[i - 1]
  if redis.call("LREM", KEYS[1], 1, key) == 1 then
    redis.call("SADD", KEYS[2], key)
    redis.call("SADD", KEYS[3], key)
    redis.call("HSET", KEYS[i], "worker_id", ARGV[1], "started_at", ARGV[2])
    out[#out + 1] = redis.call("HMGET", KEYS[i], "xs", "xs_extra")
  else
    out[#out + 1] = false
  end
end
return out
