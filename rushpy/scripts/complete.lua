-- Record results or failures of running tasks: running -> finished | failed,
-- or running -> queued for a failure with attempts left (retry).
-- KEYS[1] the running set
-- KEYS[2] destination: the finished list or the failed set
-- KEYS[3] the worker's running set
-- KEYS[4] the shared queue (retries go to its tail)
-- KEYS[5..] task hashes, one per key in ARGV order
-- ARGV[1] destination kind: "list" (finished) or "set" (failed)
-- ARGV[2] pub/sub channel to announce to
-- ARGV[3] token, unique per call
-- ARGV[4] C, the number of fields common to every task, then C name/value
-- pairs, then F, the number of per-task fields, then F field names, then per
-- task its key, the attempt it reports on ("" = any) and F values ("" = field
-- left unset). For failures the one field is "condition".
-- First writer wins, per attempt: a task that this worker no longer runs
-- (finished, failed, cancelled or re-queued by someone else), or whose
-- current attempt is not the one reported on, is left untouched and the
-- outcome discarded. A client that repeats the call after a lost reply (same
-- token) is told what the first run did with each task instead.
-- A failure is appended to the task's "conditions" history. While its
-- attempts are at most its "max_retries", the task goes back to the queue;
-- otherwise it fails with that condition.
-- Publishes on ARGV[2]: "F <first index> <keys...>" for finished tasks, "X"
-- for failed ones.
-- Returns, per task, 1 if recorded (or re-queued by an earlier run of the
-- same call), 2 if re-queued for a retry, 0 if discarded.
local token = ARGV[3]
local pos = 4
local common = {}
local ncommon = tonumber(ARGV[pos])
for i = 1, ncommon * 2 do common[i] = ARGV[pos + i] end
pos = pos + ncommon * 2 + 1
local nfields = tonumber(ARGV[pos])
local names = {}
for i = 1, nfields do names[i] = ARGV[pos + i] end
pos = pos + nfields + 1
local failing = ARGV[1] == "set"
local out = {}
local failed = 0
local announce = {}
for t = 5, #KEYS do
  local key = ARGV[pos]
  local attempt = ARGV[pos + 1]
  local hash = KEYS[t]
  pos = pos + 2
  local ok = redis.call("SISMEMBER", KEYS[3], key) == 1
  if ok and attempt ~= "" then
    local raw = redis.call("HGET", hash, "attempts")
    ok = raw and cmsgpack.unpack(raw) == tonumber(attempt)
  end
  if ok then
    redis.call("SREM", KEYS[3], key)
    ok = redis.call("SREM", KEYS[1], key) == 1
  end
  if not ok then
    out[#out + 1] = redis.call("HGET", hash, "done") == token and 1 or 0
  elseif failing then
    local condition = ARGV[pos]
    local raw = redis.call("HGET", hash, "conditions")
    local history = raw and cmsgpack.unpack(raw) or {}
    history[#history + 1] = cmsgpack.unpack(condition)
    local attempts = redis.call("HGET", hash, "attempts")
    local retries = redis.call("HGET", hash, "max_retries")
    attempts = attempts and cmsgpack.unpack(attempts) or 1
    retries = retries and cmsgpack.unpack(retries) or 0
    if attempts <= retries then
      redis.call("HSET", hash, "conditions", cmsgpack.pack(history), "done", token)
      redis.call("RPUSH", KEYS[4], key)
      out[#out + 1] = 2
    else
      redis.call("HSET", hash, "conditions", cmsgpack.pack(history), "condition", condition, "done", token, unpack(common))
      redis.call("SADD", KEYS[2], key)
      out[#out + 1] = 1
      failed = failed + 1
    end
  else
    local args = {"done", token}
    for i = 1, #common do args[#args + 1] = common[i] end
    for i = 1, nfields do
      local value = ARGV[pos + i - 1]
      if value ~= "" then
        args[#args + 1] = names[i]
        args[#args + 1] = value
      end
    end
    redis.call("HSET", hash, unpack(args))
    redis.call("RPUSH", KEYS[2], key)
    announce[#announce + 1] = key
    out[#out + 1] = 1
  end
  pos = pos + nfields
end
if #announce > 0 then
  -- "F <index of the first key in the finished list> <key> <key> ...": lets
  -- listeners read new results without first reading the list.
  local first = redis.call("LLEN", KEYS[2]) - #announce
  redis.call("PUBLISH", ARGV[2], "F " .. first .. " " .. table.concat(announce, " "))
elseif failed > 0 then
  redis.call("PUBLISH", ARGV[2], "X")
end
return out
