-- Read tasks in one call: one reply instead of one per task.
-- KEYS[1] the rows hash, KEYS[2..] task hashes, one per key in ARGV order
-- ARGV[1..] task keys
-- Returns, per key, {packed row} for a finished task (store_row), else the
-- flat HGETALL reply of its hash (empty for a missing task), or, for a task
-- key that holds another Redis type, that type's name: one bad key must not
-- fail the read of every other task.
expect_types({KEYS[1], "hash"})
local out = {}
for i = 2, #KEYS do
  local row = redis.call("HGET", KEYS[1], ARGV[i - 1])
  if row then
    out[i - 1] = {row}
  else
    local flat = redis.pcall("HGETALL", KEYS[i])
    if type(flat) == "table" and flat.err then
      out[i - 1] = redis.call("TYPE", KEYS[i]).ok
    else
      out[i - 1] = flat
    end
  end
end
return out
