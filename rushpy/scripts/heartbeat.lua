-- Refresh a worker's heartbeat key, only while the worker counts as running.
-- KEYS[1] the running workers set, KEYS[2] the worker's heartbeat key
-- ARGV[1] worker id, ARGV[2] expiry in milliseconds
-- A worker that was declared lost (or stopped) is no longer in the running set,
-- so its heartbeat never comes back to life after it expired.
-- Returns 1 if refreshed, 0 if the worker is not running.
-- PEXPIRE first: unlike SET it is allowed on a full server (maxmemory), so
-- beats go on while workers wait for memory; SET only if the key is gone.
if redis.call("SISMEMBER", KEYS[1], ARGV[1]) == 1 then
  if redis.call("PEXPIRE", KEYS[2], ARGV[2]) == 0 then
    redis.call("SET", KEYS[2], "1", "PX", ARGV[2])
  end
  return 1
end
return 0
