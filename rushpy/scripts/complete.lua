-- Record results or failures: running -> finished | failed.
-- KEYS[1] the running set
-- KEYS[2] destination: the finished list or the failed set
-- KEYS[3] the worker's running set
-- KEYS[4..] task hashes, one per key in ARGV order
-- ARGV[1] destination kind: "list" (finished) or "set" (failed)
-- ARGV[2] pub/sub channel to announce to
-- ARGV[3] C, the number of fields common to every task, then C name/value
-- pairs, then F, the number of per-task fields, then F field names, then per
-- task its key and F values ("" = field left unset).
-- First writer wins: a task no longer in the running set (finished, failed or
-- re-queued by someone else) is left untouched and its result discarded.
-- Publishes on ARGV[2]: "F <first index> <keys...>" for finished tasks, "X"
-- for failed ones.
-- Returns, per task, 1 if recorded and 0 if discarded.
local pos = 3
local common = {}
local ncommon = tonumber(ARGV[pos])
for i = 1, ncommon * 2 do common[i] = ARGV[pos + i] end
pos = pos + ncommon * 2 + 1
local nfields = tonumber(ARGV[pos])
local names = {}
for i = 1, nfields do names[i] = ARGV[pos + i] end
pos = pos + nfields + 1
local out = {}
local recorded = 0
local announce = {}
for t = 4, #KEYS do
  local key = ARGV[pos]
  pos = pos + 1
  if redis.call("SREM", KEYS[1], key) == 1 then
    redis.call("SREM", KEYS[3], key)
    local args = {}
    for i = 1, #common do args[i] = common[i] end
    for i = 1, nfields do
      local value = ARGV[pos + i - 1]
      if value ~= "" then
        args[#args + 1] = names[i]
        args[#args + 1] = value
      end
    end
    if #args > 0 then redis.call("HSET", KEYS[t], unpack(args)) end
    if ARGV[1] == "set" then
      redis.call("SADD", KEYS[2], key)
    else
      redis.call("RPUSH", KEYS[2], key)
      announce[#announce + 1] = key
    end
    out[#out + 1] = 1
    recorded = recorded + 1
  else
    out[#out + 1] = 0
  end
  pos = pos + nfields
end
if #announce > 0 then
  -- "F <index of the first key in the finished list> <key> <key> ...": lets
  -- listeners read new results without first reading the list.
  local first = redis.call("LLEN", KEYS[2]) - #announce
  redis.call("PUBLISH", ARGV[2], "F " .. first .. " " .. table.concat(announce, " "))
elseif recorded > 0 then
  redis.call("PUBLISH", ARGV[2], "X")
end
return out
