-- Create tasks that a worker already runs: nothing -> running.
-- KEYS[1] the running set, KEYS[2] the worker's running set,
-- KEYS[3] list of every task key, KEYS[4..] task hashes
-- ARGV[1..] the field preamble (parse_fields: worker id, times and attempts
-- are common to every task), then per task its key and F values ("" = absent).
-- First writer wins: a key whose hash already exists is skipped.
-- Returns the number of tasks created.
local common, names, pos = parse_fields(1)
local nfields = #names
local created = 0
for t = 4, #KEYS do
  local key = ARGV[pos]
  pos = pos + 1
  if redis.call("EXISTS", KEYS[t]) == 0 then
    redis.call("HSET", KEYS[t], unpack(field_args({}, common, names, pos)))
    redis.call("SADD", KEYS[1], key)
    redis.call("SADD", KEYS[2], key)
    redis.call("RPUSH", KEYS[3], key)
    created = created + 1
  end
  pos = pos + nfields
end
return created
