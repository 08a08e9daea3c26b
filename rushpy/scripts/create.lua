-- Create tasks directly in one state: nothing -> queued | finished | failed.
-- KEYS[1]  destination (list for queued/finished, set for failed)
-- KEYS[2]  list of every task key of the network (creation order)
-- KEYS[3]  the failed log (tasks created failed are appended)
-- KEYS[4]  the rows hash (a task created finished is stored as its row)
-- KEYS[5..] task hashes, one per task, in ARGV order
-- ARGV[1]  destination kind: "list" (queued), "finished" (the finished list)
--          or "set" (failed)
-- ARGV[2]  results channel to announce to, or "" for none
-- ARGV[3..] the field preamble (parse_fields), then per task its key followed
--          by F values ("" = field absent)
-- First writer wins: a key whose hash or row already exists is skipped.
-- Publishes "F <first index> <keys...>" for finished tasks (with their rows
-- when they are small: announce_finished); failed ones go to the failed log,
-- announced "X <first index> <keys...>" (log_failed).
-- Returns the number of tasks created.
expect_types({KEYS[4], "hash"})
local common, names, pos = parse_fields(3)
local nfields = #names
local finished = ARGV[1] == "finished"
local created = {}
local flats = {}
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
for t = 5, #KEYS do
  local key = ARGV[pos]
  pos = pos + 1
  if redis.call("EXISTS", KEYS[t]) == 0 and redis.call("HEXISTS", KEYS[4], key) == 0 then
    local flat = field_args({}, common, names, pos)
    if finished then
      redis.call("HSET", KEYS[4], key, pack_row(flat))
      flats[#flats + 1] = flat
    else
      redis.call("HSET", KEYS[t], unpack(flat))
    end
    batch[#batch + 1] = key
    created[#created + 1] = key
    if #batch >= 1000 then flush() end
  end
  pos = pos + nfields
end
flush()
if #created > 0 and ARGV[2] ~= "" then
  if finished then
    announce_finished(KEYS[1], ARGV[2], created, flats)
  else
    log_failed(KEYS[3], ARGV[2], created)
  end
end
return #created
