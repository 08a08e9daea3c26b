-- Record results or failures of running tasks: running -> finished | failed,
-- or running -> queued for a failure with attempts left (retry).
-- KEYS[1] the running set
-- KEYS[2] destination: the finished list or the failed set
-- KEYS[3] the worker's running set
-- KEYS[4] the shared queue (retries go to its tail)
-- KEYS[5] the failed set (tasks whose stored data is corrupt fail there)
-- KEYS[6] the failed log (tasks that fail for good are appended)
-- KEYS[7] the rows hash (a finished task's fields move there: store_row)
-- KEYS[8..] task hashes, one per key in ARGV order
-- ARGV[1] destination kind: "list" (finished) or "set" (failed)
-- ARGV[2] results channel to announce to
-- ARGV[3] token, unique per call
-- ARGV[4..] the field preamble (parse_fields), then per task its key, the
-- attempt it reports on ("" = any) and F values ("" = field left unset). For
-- failures the one field is "condition".
-- First writer wins, per attempt: a task that this worker no longer runs
-- (finished, failed, cancelled or re-queued by someone else), or whose
-- current attempt is not the one reported on, is left untouched and the
-- outcome discarded. A client that repeats the call after a lost reply (same
-- token) is told what the first run did with each task instead. The token is
-- stored in the task's "claim" field for a result (kept in its row): the
-- claim token is read only while the task runs, and a finished task never
-- runs again, so one field serves both (a field less per finished task, see
-- docs/performance.md). A failure stores it in "done": a task re-queued for a
-- retry can be claimed again before the repeat arrives, and that claim
-- overwrites "claim".
-- A failure is appended to the task's "conditions" history; with attempts
-- left (attempts_left) the task goes back to the queue's tail, otherwise it
-- fails with that condition. A "CorruptTask" condition (a worker found the
-- task's inputs unusable) is never retried: bad data does not heal. A task
-- whose stored data cannot be read (wrong type, an "attempts", "max_retries"
-- or "conditions" that does not decode) fails alone with a "CorruptTask"
-- condition naming the field; its outcome is discarded (0) when it cannot be
-- matched to an attempt. So does a task that runs on this worker whose
-- "attempts" is missing, not a count, or below the attempt reported on (the
-- count only grows): left alone it would stay running for ever.
-- Publishes on ARGV[2]: "F <first index> <keys...>" for finished tasks (with
-- their rows when they are small: announce_finished), and
-- "X <first index> <keys...>" for tasks that failed for good (log_failed).
-- Returns, per task, 1 if recorded (or re-queued by an earlier run of the
-- same call), 2 if re-queued for a retry, 0 if discarded.
local token = ARGV[3]
local common, names, start = parse_fields(4)
local nfields = #names
local failing = ARGV[1] == "set"
expect_types({KEYS[1], "set", KEYS[2], failing and "set" or "list", KEYS[3], "set", KEYS[4], "list",
  KEYS[5], "set", KEYS[6], "list", KEYS[7], "hash"})
-- The time a corrupt task fails at: the common "finished_at".
local time = nil
for i = 1, #common, 2 do
  if common[i] == "finished_at" then time = common[i + 1] end
end
-- Decode every condition before writing anything: a bad argument must not
-- leave a task removed from running and recorded nowhere.
local decoded = {}
if failing then
  local pos = start
  for t = 8, #KEYS do
    decoded[t] = cmsgpack.unpack(ARGV[pos + 2])
    pos = pos + 2 + nfields
  end
end
local out = {}
local failed = {}
local announce = {}
local announced_rows = {}
local pos = start
for t = 8, #KEYS do
  local key = ARGV[pos]
  local attempt = ARGV[pos + 1]
  local hash = KEYS[t]
  pos = pos + 2
  local ok = redis.call("SISMEMBER", KEYS[3], key) == 1
  -- Why this task must fail alone (unreadable data), if it must.
  local corrupt = nil
  if ok then
    if attempt ~= "" then
      -- Also tells a task key of the wrong type (number_field's pcall).
      local attempts, err = number_field(hash, key, "attempts", nil)
      local reported = tonumber(attempt)
      if not err and (attempts == nil or attempts ~= math.floor(attempts) or attempts < reported) then
        err = "field 'attempts' of task " .. key .. " is " .. (attempts and tostring(attempts) or "missing")
          .. ", but this worker runs attempt " .. attempt .. " of it"
      end
      corrupt = err
      ok = err ~= nil or attempts == reported
    elseif not is_hash(hash) then
      corrupt = "task " .. key .. " is stored as a " .. redis.call("TYPE", hash).ok .. ", not a hash"
    end
  end
  if ok then
    redis.call("SREM", KEYS[3], key)
    ok = redis.call("SREM", KEYS[1], key) == 1
  end
  if not ok then
    local first = is_hash(hash) and redis.call("HMGET", hash, "claim", "done")
    local repeated = first and (first[1] == token or first[2] == token)
    -- A result the first run recorded: the task's fields are in its row now.
    if not repeated then repeated = row_claim(KEYS[7], key) == token end
    out[#out + 1] = repeated and 1 or 0
  elseif corrupt then
    -- The outcome cannot be matched to an attempt: it is discarded.
    fail_corrupt(hash, key, KEYS[5], corrupt, time)
    out[#out + 1] = 0
    failed[#failed + 1] = key
  elseif failing then
    local done = {"done", token}
    local final = type(decoded[t]) == "table" and decoded[t].type == "CorruptTask"
    if retry_or_fail(hash, key, ARGV[pos], decoded[t], KEYS[2], done,
        field_args({"done", token}, common, {}, pos), time, final) then
      redis.call("RPUSH", KEYS[4], key)
      out[#out + 1] = 2
    else
      out[#out + 1] = 1
      failed[#failed + 1] = key
    end
  else
    redis.call("HSET", hash, unpack(field_args({"claim", token}, common, names, pos)))
    local flat = redis.call("HGETALL", hash)
    store_row(KEYS[7], key, hash, flat)
    redis.call("RPUSH", KEYS[2], key)
    announce[#announce + 1] = key
    announced_rows[#announced_rows + 1] = flat
    out[#out + 1] = 1
  end
  pos = pos + nfields
end
if #announce > 0 then
  announce_finished(KEYS[2], ARGV[2], announce, announced_rows)
end
log_failed(KEYS[6], ARGV[2], failed)
return out
