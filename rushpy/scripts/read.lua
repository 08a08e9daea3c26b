-- Read task hashes in one call: one reply instead of one per task.
-- KEYS[1..] task hashes
-- Returns, per key, the flat HGETALL reply (empty for a missing task), or,
-- for a task key that holds another Redis type, that type's name: one bad
-- key must not fail the read of every other task.
local out = {}
for i = 1, #KEYS do
  local flat = redis.pcall("HGETALL", KEYS[i])
  if type(flat) == "table" and flat.err then
    out[i] = redis.call("TYPE", KEYS[i]).ok
  else
    out[i] = flat
  end
end
return out
