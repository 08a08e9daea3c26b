-- Record that a running worker's process ended in a crash (an error out of
-- its loop, not a clean stop). The worker stays in the running set, so
-- lost-worker detection finds it (on any host, with or without a heartbeat),
-- settles what it still holds and, for a controller that started it, replaces
-- it. Its heartbeat key goes at once, so no detector waits for it to expire.
-- KEYS[1] the running workers set, KEYS[2] the worker's hash, KEYS[3] the
-- worker's heartbeat key
-- ARGV[1] worker id, ARGV[2] what happened (msgpack), ARGV[3] events channel
-- Nothing is written for a worker that is not running (declared lost meanwhile,
-- or its records were reset): its keys are not recreated.
-- Returns 1 if recorded, 0 otherwise.
if redis.call("SISMEMBER", KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call("HSET", KEYS[2], "crashed", ARGV[2])
redis.call("DEL", KEYS[3])
redis.call(PUBLISH, ARGV[3], "W")
return 1
