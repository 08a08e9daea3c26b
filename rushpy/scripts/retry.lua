-- Re-queue failed tasks by hand: failed -> queued (tail of the shared queue).
-- KEYS[1] the failed set, KEYS[2] the shared queue, KEYS[3..] task hashes, one
-- per key in ARGV order
-- ARGV[1] "1" to ignore max_retries, ARGV[2] N, the number of new seeds that
-- follow the keys (0 or one per key), ARGV[3..] task keys, then the seeds
-- (msgpack, "" = leave the seed).
-- Without ignoring, only tasks with attempts left (attempts_left: a task that
-- never ran has 0 attempts) are re-queued; a task whose counts cannot be read
-- has none left. The final condition and finish time
-- are cleared; the attempt count and the "conditions" history stay.
-- First writer wins: keys not in the failed set are skipped.
-- Returns the keys re-queued.
expect_types({KEYS[1], "set", KEYS[2], "list"})
local nkeys = #KEYS - 2
local seeded = tonumber(ARGV[2]) > 0
local out = {}
for i = 1, nkeys do
  local key = ARGV[2 + i]
  local hash = KEYS[2 + i]
  if redis.call("SISMEMBER", KEYS[1], key) == 1 and (ARGV[1] == "1" or attempts_left(hash)) then
    redis.call("SREM", KEYS[1], key)
    -- A hash of the wrong type (re-queued by hand) cannot be edited.
    if is_hash(hash) then redis.call("HDEL", hash, "condition", "finished_at") end
    if seeded and is_hash(hash) then
      local seed = ARGV[2 + nkeys + i]
      if seed ~= "" then redis.call("HSET", hash, "seed", seed) end
    end
    redis.call("RPUSH", KEYS[2], key)
    out[#out + 1] = key
  end
end
return out
