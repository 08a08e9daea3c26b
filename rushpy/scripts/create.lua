-- Create tasks directly in one state: nothing -> queued | finished | failed.
-- KEYS[1]  destination (list for queued/finished, set for failed)
-- KEYS[2]  list of every task key of the network (creation order)
-- KEYS[3..] task hashes, one per task, in ARGV order
-- ARGV[1]  destination kind: "list" or "set"
-- ARGV[2]  pub/sub channel to announce to, or "" for none
-- ARGV[3]  C, the number of fields common to every task, then C name/value pairs
-- then     F, the number of per-task fields, then F field names,
-- then     per task: its key followed by F values ("" = field absent)
-- First writer wins: a key whose hash already exists is skipped.
-- Returns the number of tasks created.
local pos = 3
local common = {}
local ncommon = tonumber(ARGV[pos])
for i = 1, ncommon * 2 do common[i] = ARGV[pos + i] end
pos = pos + ncommon * 2 + 1
local nfields = tonumber(ARGV[pos])
local names = {}
for i = 1, nfields do names[i] = ARGV[pos + i] end
pos = pos + nfields + 1
local created = 0
local batch = {}
local all = {}
local function flush()
  if #batch > 0 then
    if ARGV[1] == "set" then
      redis.call("SADD", KEYS[1], unpack(batch))
    else
      redis.call("RPUSH", KEYS[1], unpack(batch))
    end
    redis.call("RPUSH", KEYS[2], unpack(batch))
    batch = {}
  end
end
for t = 3, #KEYS do
  local key = ARGV[pos]
  pos = pos + 1
  if redis.call("EXISTS", KEYS[t]) == 0 then
    local args = {}
    for i = 1, #common do args[i] = common[i] end
    for i = 1, nfields do
      local value = ARGV[pos + i - 1]
      if value ~= "" then
        args[#args + 1] = names[i]
        args[#args + 1] = value
      end
    end
    redis.call("HSET", KEYS[t], unpack(args))
    batch[#batch + 1] = key
    all[#all + 1] = key
    created = created + 1
    if #batch >= 1000 then flush() end
  end
  pos = pos + nfields
end
flush()
if created > 0 and ARGV[2] ~= "" then
  if ARGV[1] == "list" then
    -- Finished tasks: announce their positions, as complete.lua does.
    local first = redis.call("LLEN", KEYS[1]) - created
    redis.call("PUBLISH", ARGV[2], "F " .. first .. " " .. table.concat(all, " "))
  else
    redis.call("PUBLISH", ARGV[2], "X")
  end
end
return created
