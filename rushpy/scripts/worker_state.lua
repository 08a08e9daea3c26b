-- Move a running worker to another state: running -> terminated | killed | lost.
-- KEYS[1] the running workers set, KEYS[2] the destination set,
-- KEYS[3] the worker's hash
-- ARGV[1] worker id, ARGV[2] state (msgpack)
-- Only a worker that is still running moves; nothing is written otherwise, so a
-- worker exiting after reset() does not recreate its keys.
-- Returns 1 if the worker moved, 0 otherwise.
if redis.call("SMOVE", KEYS[1], KEYS[2], ARGV[1]) == 1 then
  redis.call("HSET", KEYS[3], "state", ARGV[2])
  return 1
end
return 0
