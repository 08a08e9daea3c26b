-- Read a network's keys per state, or its counts, in one atomic call.
-- KEYS[1] the workers set
-- KEYS[2] the shared queue, KEYS[3] the running set, KEYS[4] the finished
-- list, KEYS[5] the failed set, KEYS[6] the list of all tasks
-- KEYS[7..10] the running, terminated, killed and lost worker sets
-- KEYS[11..] per worker, in ARGV order, its priority queue and its pending list
-- ARGV[1] "keys", "counts" or "priority", ARGV[2..] the worker ids the caller
-- expects
-- The per-worker keys come from the caller (a script declares every key it
-- touches), so the script first checks that the workers set holds exactly
-- those ids; if not, it returns {-1, members} and the caller calls again with
-- the ids it got (a worker registered or was removed meanwhile).
-- It only reads: it also answers on a server that is out of memory, where
-- MULTI is refused.
-- Returns for "keys": {queued, (priority, pending) per worker, running,
-- finished, failed} as key lists; for "counts" the same as lengths, followed
-- by the lengths of the all-tasks list, the workers set and KEYS[7..10]; for
-- "priority" only each worker's priority queue.
local members = redis.call("SMEMBERS", KEYS[1])
local same = #members == #ARGV - 1
if same then
  local known = {}
  for _, id in ipairs(members) do known[id] = true end
  for i = 2, #ARGV do
    if not known[ARGV[i]] then same = false break end
  end
end
if not same then return {-1, members} end
if ARGV[1] == "priority" then
  local out = {}
  for i = 11, #KEYS, 2 do out[#out + 1] = redis.call("LRANGE", KEYS[i], 0, -1) end
  return out
end
local counting = ARGV[1] == "counts"
local function list(key)
  if counting then return redis.call("LLEN", key) end
  return redis.call("LRANGE", key, 0, -1)
end
local function set(key)
  if counting then return redis.call("SCARD", key) end
  return redis.call("SMEMBERS", key)
end
local out = {list(KEYS[2])}
for i = 11, #KEYS do out[#out + 1] = list(KEYS[i]) end
out[#out + 1] = set(KEYS[3])
out[#out + 1] = list(KEYS[4])
out[#out + 1] = set(KEYS[5])
if counting then
  out[#out + 1] = redis.call("LLEN", KEYS[6])
  out[#out + 1] = #members
  for i = 7, 10 do out[#out + 1] = redis.call("SCARD", KEYS[i]) end
end
return out
