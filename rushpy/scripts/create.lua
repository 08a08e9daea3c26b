-- Create tasks directly in one state: nothing -> queued | finished | failed.
-- KEYS[1]  destination (list for queued/finished, set for failed)
-- KEYS[2]  list of every task key of the network (creation order)
-- KEYS[3]  the failed log (tasks created failed are appended)
-- KEYS[4..] task hashes, one per task, in ARGV order
-- ARGV[1]  destination kind: "list" or "set"
-- ARGV[2]  results channel to announce to, or "" for none
-- ARGV[3..] the field preamble (parse_fields), then per task its key followed
--          by F values ("" = field absent)
-- First writer wins: a key whose hash already exists is skipped.
-- Publishes "F <first index> <keys...>" for finished tasks; failed ones go
-- to the failed log, announced "X <first index> <keys...>" (log_failed).
-- Returns the number of tasks created.
local common, names, pos = parse_fields(3)
local nfields = #names
local created = {}
local batch = {}
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
for t = 4, #KEYS do
  local key = ARGV[pos]
  pos = pos + 1
  if redis.call("EXISTS", KEYS[t]) == 0 then
    redis.call("HSET", KEYS[t], unpack(field_args({}, common, names, pos)))
    batch[#batch + 1] = key
    created[#created + 1] = key
    if #batch >= 1000 then flush() end
  end
  pos = pos + nfields
end
flush()
if #created > 0 and ARGV[2] ~= "" then
  if ARGV[1] == "list" then
    announce_finished(KEYS[1], ARGV[2], created)
  else
    log_failed(KEYS[3], ARGV[2], created)
  end
end
return #created
