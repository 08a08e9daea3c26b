-- Refresh a worker's heartbeat key, only while the worker counts as running.
-- KEYS[1] the running workers set, KEYS[2] the worker's heartbeat key
-- ARGV[1] worker id, ARGV[2] expiry in milliseconds
-- A worker that was declared lost (or stopped) is no longer in the running set,
-- so its heartbeat never comes back to life after it expired.
-- Returns 1 if refreshed, 0 if the worker is not running.
if redis.call("SISMEMBER", KEYS[1], ARGV[1]) == 1 then
  redis.call("SET", KEYS[2], "1", "PX", ARGV[2])
  return 1
end
return 0
