-- Read task hashes in one call: one reply instead of one per task.
-- KEYS[1..] task hashes
-- Returns, per key, the flat HGETALL reply (empty for a missing task).
local out = {}
for i = 1, #KEYS do
  out[i] = redis.call("HGETALL", KEYS[i])
end
return out
