-- Move up to N queued keys to a worker's pending list: queued -> pending.
-- Tasks already in the pending list (moved there by a blocking BLMOVE) come
-- first, then the worker's priority queue, then the shared queue.
-- KEYS[1] the worker's pending list
-- KEYS[2] the worker's priority queue
-- KEYS[3] the shared queue
-- ARGV[1] N, the most keys to return
-- A key is never pending twice: a queue entry of a key already pending is
-- dropped, not moved. An entry of a key that runs or failed already (a key
-- queued twice) is moved, and dropped by claim.lua, which checks every key
-- it claims anyway (blocking moves fill the pending list without this
-- script); checking here too cost two lookups per task on the hot path.
-- Returns the keys in the pending list (at most N), oldest first.
expect_types({KEYS[1], "list", KEYS[2], "list", KEYS[3], "list"})
local n = tonumber(ARGV[1])
local pending = {}
local have = 0
for _, key in ipairs(redis.call("LRANGE", KEYS[1], 0, -1)) do
  pending[key] = true
  have = have + 1
end
for _, source in ipairs({KEYS[2], KEYS[3]}) do
  -- Pop again while dropped duplicates leave room and the source has keys.
  while have < n do
    local moved = redis.call("LPOP", source, n - have)
    if not moved then break end
    local keep = {}
    for _, key in ipairs(moved) do
      if not pending[key] then
        pending[key] = true
        keep[#keep + 1] = key
      end
    end
    if #keep > 0 then
      rpush_all(KEYS[1], keep)
      have = have + #keep
    end
  end
end
if have == 0 then return {} end
return redis.call("LRANGE", KEYS[1], 0, n - 1)
