-- Give back a worker's popped-but-unclaimed tasks: pending -> queued.
-- They go to the head of the shared queue, in their original order, so they
-- run next. Used when a worker exits or is found dead.
-- KEYS[1] the worker's pending list, KEYS[2] the shared queue
-- Returns the number of keys moved.
local keys = redis.call("LRANGE", KEYS[1], 0, -1)
if #keys == 0 then return 0 end
redis.call("DEL", KEYS[1])
for i = #keys, 1, -1000 do
  local lo = math.max(1, i - 999)
  local chunk = {}
  for j = i, lo, -1 do chunk[#chunk + 1] = keys[j] end
  redis.call("LPUSH", KEYS[2], unpack(chunk))
end
return #keys
