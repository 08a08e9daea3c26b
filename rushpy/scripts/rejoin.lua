-- Bring back a worker that was declared lost while its process lived on
-- (paused, cut off, its event loop stalled): lost -> running.
-- KEYS[1] the running workers set, KEYS[2] the lost workers set,
-- KEYS[3] the worker's hash, KEYS[4] the worker's heartbeat key
-- ARGV[1] worker id, ARGV[2] state "running" (msgpack), ARGV[3] heartbeat
-- expiry in milliseconds ("" for a worker without heartbeat), ARGV[4] time
-- (msgpack)
-- Only a worker recorded as lost comes back: a killed or terminated worker was
-- stopped on purpose, and a worker whose records are gone (reset, a server
-- restarted without persistence) has no network to come back to. The tasks it
-- held were settled when it was declared lost; the outcomes of those attempts
-- are discarded by complete.lua (the task no longer runs on this worker, or
-- runs a newer attempt), so coming back is safe. The first heartbeat is set in
-- the same step: a detector never sees the worker running without one.
-- Counts the returns in the hash field "rejoins" (msgpack integer).
-- Returns 1 if the worker was running already, 2 if it came back, 0 if it must stop.
if redis.call("SISMEMBER", KEYS[1], ARGV[1]) == 1 then return 1 end
if redis.call("SISMEMBER", KEYS[2], ARGV[1]) == 0 or redis.call("EXISTS", KEYS[3]) == 0 then
  return 0
end
local count = 0
local raw = redis.call("HGET", KEYS[3], "rejoins")
if raw then
  local ok, value = pcall(cmsgpack.unpack, raw)
  if ok and type(value) == "number" then count = value end
end
redis.call("SMOVE", KEYS[2], KEYS[1], ARGV[1])
redis.call("HSET", KEYS[3], "state", ARGV[2], "rejoins", cmsgpack.pack(count + 1), "rejoined_at", ARGV[4])
redis.call("HDEL", KEYS[3], "crashed")
if ARGV[3] ~= "" then
  redis.call("SET", KEYS[4], "1", "PX", ARGV[3])
end
return 2
