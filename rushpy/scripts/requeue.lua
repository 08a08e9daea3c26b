-- Settle the tasks of a worker that is gone (lost, killed, or exited while
-- running tasks): pending -> queued, and running -> queued while attempts
-- remain, else running -> failed.
-- KEYS[1] the running set, KEYS[2] the failed set, KEYS[3] the worker's
-- running set, KEYS[4] the shared queue, KEYS[5] the worker's pending list,
-- KEYS[6] the worker's priority queue, KEYS[7..] task hashes, one per key in
-- ARGV order
-- ARGV[1] condition (msgpack), ARGV[2] time (msgpack), ARGV[3] channel,
-- ARGV[4..] task keys (the worker's running set, read just before)
-- Popped-but-unclaimed tasks go back to the head of the queue in their order;
-- tasks waiting in the worker's priority queue move to the shared queue's tail.
-- Interrupted tasks go to the head too, so they run next; the condition is
-- appended to their "conditions" history either way.
-- First writer wins: a task whose result arrived meanwhile is skipped.
-- Returns {re-queued keys, failed keys, number of pending and priority keys
-- moved to the shared queue}.
local pending = redis.call("LRANGE", KEYS[5], 0, -1)
if #pending > 0 then
  redis.call("DEL", KEYS[5])
  for i = #pending, 1, -1000 do
    local lo = math.max(1, i - 999)
    local chunk = {}
    for j = i, lo, -1 do chunk[#chunk + 1] = pending[j] end
    redis.call("LPUSH", KEYS[4], unpack(chunk))
  end
end
local priority = redis.call("LRANGE", KEYS[6], 0, -1)
if #priority > 0 then
  redis.call("DEL", KEYS[6])
  for i = 1, #priority, 1000 do
    redis.call("RPUSH", KEYS[4], unpack(priority, i, math.min(i + 999, #priority)))
  end
end
local condition = cmsgpack.unpack(ARGV[1])
local requeued = {}
local failed = {}
for i = 7, #KEYS do
  local key = ARGV[i - 3]
  local hash = KEYS[i]
  if redis.call("SREM", KEYS[3], key) == 1 and redis.call("SREM", KEYS[1], key) == 1 then
    local raw = redis.call("HGET", hash, "conditions")
    local history = raw and cmsgpack.unpack(raw) or {}
    history[#history + 1] = condition
    local attempts = redis.call("HGET", hash, "attempts")
    local retries = redis.call("HGET", hash, "max_retries")
    attempts = attempts and cmsgpack.unpack(attempts) or 1
    retries = retries and cmsgpack.unpack(retries) or 0
    if attempts <= retries then
      redis.call("HSET", hash, "conditions", cmsgpack.pack(history))
      redis.call("LPUSH", KEYS[4], key)
      requeued[#requeued + 1] = key
    else
      redis.call("HSET", hash, "conditions", cmsgpack.pack(history), "condition", ARGV[1], "finished_at", ARGV[2])
      redis.call("SADD", KEYS[2], key)
      failed[#failed + 1] = key
    end
  end
end
if #failed > 0 then redis.call("PUBLISH", ARGV[3], "X") end
return {requeued, failed, #pending + #priority}
