-- ---------------------------------------------------------------- script --
-- The state of given tasks (and, with "rows", their hashes) in O(1) per task,
-- whatever the size of the network: no list or set is read whole.
-- KEYS[1] the running set, KEYS[2] the failed set, KEYS[3] the finished list
-- (searched only for a task key of another Redis type), KEYS[4] the rows
-- hash, KEYS[5..] task hashes
-- ARGV[1] "states" or "rows", ARGV[2..] task keys, one per hash
-- A task is running or failed when it is in that set; finished when it has a
-- row (store_row) or its hash carries "finished_at" or "ys" (written only when a task finishes or fails,
-- and "finished_at" is deleted by retry.lua), else queued (a queue, a
-- priority queue or a pending list: all read as queued). A task key that
-- holds another Redis type (damaged data) cannot tell by its fields: it is
-- finished if it is in the finished list (LPOS, O(N), only for such keys),
-- else queued. A key whose hash does not exist and that is in neither set is
-- unknown.
-- Returns per key its state code ("q", "r", "f", "x" for failed, "" for
-- unknown); with "rows", per key {code, flat HGETALL reply, {packed row} for
-- a task with a row, or, for a key that holds another Redis type, that type's
-- name}.
local rows = ARGV[1] == "rows"
local out = {}
for i = 5, #KEYS do
  local hash = KEYS[i]
  local key = ARGV[i - 3]
  local code
  local row = nil
  if redis.call("SISMEMBER", KEYS[1], key) == 1 then
    code = "r"
  elseif redis.call("SISMEMBER", KEYS[2], key) == 1 then
    code = "x"
  elseif redis.call("HEXISTS", KEYS[4], key) == 1 then
    code = "f"
    if rows then row = {redis.call("HGET", KEYS[4], key)} end
  else
    local got = redis.pcall("HMGET", hash, "finished_at", "ys")
    if got.err then
      code = redis.call("LPOS", KEYS[3], key) and "f" or "q"
    elseif got[1] or got[2] then
      code = "f"
    elseif redis.call("EXISTS", hash) == 1 then
      code = "q"
    else
      code = ""
    end
  end
  if row then
    out[#out + 1] = {code, row}
  elseif rows then
    local flat = redis.pcall("HGETALL", hash)
    if type(flat) == "table" and flat.err then flat = redis.call("TYPE", hash).ok end
    out[#out + 1] = {code, flat}
  else
    out[#out + 1] = code
  end
end
return out
