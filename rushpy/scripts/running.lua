-- Create tasks that a worker already runs: nothing -> running.
-- KEYS[1] the running set, KEYS[2] the worker's running set,
-- KEYS[3] list of every task key, KEYS[4..] task hashes
-- ARGV[1] number of fields per task (F), ARGV[2..] F field names, then per
-- task its key and F values ("" = field absent).
-- Returns the number of tasks created (existing hashes are skipped).
local nfields = tonumber(ARGV[1])
local names = {}
for i = 1, nfields do names[i] = ARGV[1 + i] end
local pos = 2 + nfields
local created = 0
for t = 4, #KEYS do
  local key = ARGV[pos]
  pos = pos + 1
  if redis.call("EXISTS", KEYS[t]) == 0 then
    local args = {}
    for i = 1, nfields do
      local value = ARGV[pos + i - 1]
      if value ~= "" then
        args[#args + 1] = names[i]
        args[#args + 1] = value
      end
    end
    redis.call("HSET", KEYS[t], unpack(args))
    redis.call("SADD", KEYS[1], key)
    redis.call("SADD", KEYS[2], key)
    redis.call("RPUSH", KEYS[3], key)
    created = created + 1
  end
  pos = pos + nfields
end
return created
