-- Mark popped tasks as running on a worker: pending -> running.
-- KEYS[1] the worker's pending list
-- KEYS[2] the running set
-- KEYS[3] the worker's running set
-- KEYS[4] the running workers set
-- KEYS[5] the failed set (tasks whose stored data is corrupt fail there)
-- KEYS[6] the finished list (read only for a key that looks finished)
-- KEYS[7] the failed log (corrupt tasks are appended)
-- KEYS[8] the constants' version (read only)
-- KEYS[9] the rows hash (read only: a key with a row has finished)
-- KEYS[10..] task hashes, one per key in ARGV order
-- ARGV[1] worker id (plain), ARGV[2] worker id (msgpack), ARGV[3] start time
-- (msgpack), ARGV[4] claim token (unique per call), ARGV[5] results channel,
-- ARGV[6..] task keys
-- Each claim starts a new attempt: the task's "attempts" count goes up by one.
-- A key no longer in the pending list (re-queued, cancelled, or claimed by a
-- concurrent pop of the same worker) is answered with false, unless this very
-- call claimed it already and the task still runs on this worker: a client
-- that repeats the call after a lost reply (same token) gets the same tasks
-- back, so no claim is ever lost, and never a task cancelled meanwhile.
-- A key is never claimed twice: a pending entry of a key that already runs,
-- has failed or has finished (it was queued twice, or queued again by hand),
-- or that this call claimed already, is dropped and answered with false.
-- Finished is told in O(1) for every key that does not look finished: a task
-- that finished has a row (store_row), and a task hash (one written by hand)
-- gets "finished_at" (or "ys") only when it finishes or fails, and retry.lua
-- deletes "finished_at" when it re-queues a failed task. Only a key that
-- looks finished, or whose data cannot be read, is searched in the finished
-- list (LPOS), so a task whose marker fields were written by hand is claimed,
-- not dropped into no state, and a finished task whose data went bad is not
-- failed as well.
-- A task whose stored data cannot be read (a task hash of the wrong type, an
-- "attempts" that is not a count) fails alone with a "CorruptTask" condition
-- naming the field (logged and announced by log_failed), answered with false; the rest of the
-- batch is claimed.
-- A worker that is no longer running (declared lost, stopped) claims nothing:
-- the script returns -1 and the worker must stop.
-- Returns, per key, false or {xs, xs_extra, timeout, seed, attempts}, then
-- one more item: the constants' version (false: none). A worker that has the
-- constants of that version needs no round trip of its own to check them:
-- the version moves before the tasks of a push exist, so the version read
-- with a claim is at least the one the claimed tasks were pushed with.
if redis.call("SISMEMBER", KEYS[4], ARGV[1]) == 0 then return -1 end
expect_types({KEYS[1], "list", KEYS[2], "set", KEYS[3], "set", KEYS[5], "set", KEYS[6], "list", KEYS[7], "list",
  KEYS[9], "hash"})
local out = {}
local seen = {}
local failed = {}
-- Fail a task with unreadable data (`err`): the caller removed it from the
-- pending list already, or it runs on this worker (a repeated claim).
local function corrupt(hash, key, err)
  redis.call("SREM", KEYS[2], key)
  redis.call("SREM", KEYS[3], key)
  fail_corrupt(hash, key, KEYS[5], err, ARGV[3])
  failed[#failed + 1] = key
  return false
end
-- The task's attempts (absent: 0) and whether it looks finished, or nil and
-- why it cannot be read. One pcall'd HMGET also tells a key of the wrong type.
local function bookkeeping(hash, key)
  local got = redis.pcall("HMGET", hash, "attempts", "finished_at", "ys")
  if got.err then
    return nil, false, "task " .. key .. " is stored as a " .. redis.call("TYPE", hash).ok .. ", not a hash"
  end
  local attempts = 0
  if got[1] then
    local ok, value = pcall(cmsgpack.unpack, got[1])
    -- A count: a fraction or a huge value would never match the attempt a
    -- worker reports, leaving the task running for ever.
    if not (ok and type(value) == "number" and value == math.floor(value) and value >= 0 and value < 2^53) then
      return nil, false, "field 'attempts' of task " .. key .. " is not a count (an integer >= 0)"
    end
    attempts = value
  end
  return attempts, (got[2] or got[3]) and true or false, nil
end
for i = 10, #KEYS do
  local key = ARGV[i - 4]
  local hash = KEYS[i]
  local row = false
  if seen[key] or redis.call("SISMEMBER", KEYS[2], key) == 1 then
    -- Already running: drop a duplicate pending entry; answer a repeat of
    -- this call (same token, lost reply) with the task it claimed.
    redis.call("LREM", KEYS[1], 1, key)
    if not seen[key] and redis.call("SISMEMBER", KEYS[3], key) == 1 and is_hash(hash)
        and redis.call("HGET", hash, "claim") == ARGV[4] then
      local attempts, _, err = bookkeeping(hash, key)
      if err then
        row = corrupt(hash, key, err)
      else
        row = redis.call("HMGET", hash, "xs", "xs_extra", "timeout", "seed")
        row[5] = attempts
      end
    end
  elseif redis.call("LREM", KEYS[1], 1, key) == 1 and redis.call("SISMEMBER", KEYS[5], key) == 0 then
    local attempts, done, err = bookkeeping(hash, key)
    if (err or done or redis.call("HEXISTS", KEYS[9], key) == 1) and redis.call("LPOS", KEYS[6], key) then
      -- Finished already: this entry was a duplicate, now dropped. Data that
      -- went bad after the task finished must not record it a second time.
      row = false
    elseif err then
      row = corrupt(hash, key, err)
    else
      attempts = attempts + 1
      redis.call("SADD", KEYS[2], key)
      redis.call("SADD", KEYS[3], key)
      redis.call("HSET", hash, "worker_id", ARGV[2], "started_at", ARGV[3], "attempts", cmsgpack.pack(attempts), "claim", ARGV[4])
      row = redis.call("HMGET", hash, "xs", "xs_extra", "timeout", "seed")
      row[5] = attempts
    end
  end
  seen[key] = true
  out[#out + 1] = row
end
log_failed(KEYS[7], ARGV[5], failed)
-- A version key of the wrong type answers "!", which matches no version: the
-- worker then reads it itself and reports the damage as it always did.
local version = redis.pcall("GET", KEYS[8])
if type(version) == "table" then version = "!" end
out[#out + 1] = version
return out
