-- Settle the tasks of a worker that is gone (lost, killed, or exited while
-- running tasks): pending -> queued, and running -> queued while attempts
-- remain, else running -> failed.
-- KEYS[1] the running set, KEYS[2] the failed set, KEYS[3] the worker's
-- running set, KEYS[4] the shared queue, KEYS[5] the worker's pending list,
-- KEYS[6] the worker's priority queue, KEYS[7] the failed log, KEYS[8..] task
-- hashes, one per key in ARGV order
-- ARGV[1] condition (msgpack), ARGV[2] time (msgpack), ARGV[3] results channel,
-- ARGV[4..] task keys (the worker's running set, read just before)
-- Tasks failed for good join the failed log, announced "X <first> <keys...>".
-- Popped-but-unclaimed tasks go back to the head of the queue in their order;
-- tasks waiting in the worker's priority queue move to the shared queue's tail.
-- Interrupted tasks go to the head too, so they run next; the condition is
-- appended to their "conditions" history either way (retry_or_fail).
-- First writer wins: a task whose result arrived meanwhile is skipped.
-- A task whose stored data cannot be read fails alone with a "CorruptTask"
-- condition naming the field (retry_or_fail), so every task is settled.
-- Returns {re-queued keys, failed keys, number of pending and priority keys
-- moved to the shared queue}.
local condition = cmsgpack.unpack(ARGV[1])
expect_types({KEYS[1], "set", KEYS[2], "set", KEYS[3], "set", KEYS[4], "list", KEYS[5], "list", KEYS[6], "list", KEYS[7], "list"})
local released = release_list(KEYS[5], KEYS[4], true) + release_list(KEYS[6], KEYS[4], false)
local requeued = {}
local failed = {}
for i = 8, #KEYS do
  local key = ARGV[i - 4]
  local hash = KEYS[i]
  if redis.call("SREM", KEYS[3], key) == 1 and redis.call("SREM", KEYS[1], key) == 1 then
    if retry_or_fail(hash, key, ARGV[1], condition, KEYS[2], {}, {"finished_at", ARGV[2]}, ARGV[2]) then
      redis.call("LPUSH", KEYS[4], key)
      requeued[#requeued + 1] = key
    else
      failed[#failed + 1] = key
    end
  end
end
log_failed(KEYS[7], ARGV[3], failed)
return {requeued, failed, released}
