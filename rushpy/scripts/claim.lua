-- Mark popped tasks as running on a worker: pending -> running.
-- KEYS[1] the worker's pending list
-- KEYS[2] the running set
-- KEYS[3] the worker's running set
-- KEYS[4] the running workers set
-- KEYS[5..] task hashes, one per key in ARGV order
-- ARGV[1] worker id (plain), ARGV[2] worker id (msgpack), ARGV[3] start time
-- (msgpack), ARGV[4] claim token (unique per call), ARGV[5..] task keys
-- Each claim starts a new attempt: the task's "attempts" count goes up by one.
-- A key no longer in the pending list (re-queued, cancelled, or claimed by a
-- concurrent pop of the same worker) is answered with false, unless this very
-- call claimed it already and the task still runs on this worker: a client
-- that repeats the call after a lost reply (same token) gets the same tasks
-- back, so no claim is ever lost, and never a task cancelled meanwhile.
-- A worker that is no longer running (declared lost, stopped) claims nothing:
-- the script returns -1 and the worker must stop.
-- Returns, per key, false or {xs, xs_extra, timeout, seed, attempts}.
if redis.call("SISMEMBER", KEYS[4], ARGV[1]) == 0 then return -1 end
local out = {}
for i = 5, #KEYS do
  local key = ARGV[i]
  local hash = KEYS[i]
  if redis.call("LREM", KEYS[1], 1, key) == 1 then
    local raw = redis.call("HGET", hash, "attempts")
    local attempts = (raw and cmsgpack.unpack(raw) or 0) + 1
    redis.call("SADD", KEYS[2], key)
    redis.call("SADD", KEYS[3], key)
    redis.call("HSET", hash, "worker_id", ARGV[2], "started_at", ARGV[3], "attempts", cmsgpack.pack(attempts), "claim", ARGV[4])
    local row = redis.call("HMGET", hash, "xs", "xs_extra", "timeout", "seed")
    row[5] = attempts
    out[#out + 1] = row
  elseif redis.call("HGET", hash, "claim") == ARGV[4] and redis.call("SISMEMBER", KEYS[3], key) == 1
      and redis.call("SISMEMBER", KEYS[2], key) == 1 then
    local row = redis.call("HMGET", hash, "xs", "xs_extra", "timeout", "seed", "attempts")
    row[5] = cmsgpack.unpack(row[5])
    out[#out + 1] = row
  else
    out[#out + 1] = false
  end
end
return out
