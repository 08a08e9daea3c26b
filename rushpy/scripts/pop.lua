-- Move up to N queued keys to a worker's pending list: queued -> pending.
-- Tasks already in the pending list (moved there by a blocking BLMOVE) come
-- first, then the worker's priority queue, then the shared queue.
-- KEYS[1] the worker's pending list
-- KEYS[2] the worker's priority queue
-- KEYS[3] the shared queue
-- ARGV[1] N, the most keys to return
-- Returns the keys in the pending list (at most N), oldest first.
local n = tonumber(ARGV[1])
local have = redis.call("LLEN", KEYS[1])
for _, source in ipairs({KEYS[2], KEYS[3]}) do
  local want = n - have
  if want <= 0 then break end
  local moved = redis.call("LPOP", source, want)
  if moved then
    rpush_all(KEYS[1], moved)
    have = have + #moved
  end
end
if have == 0 then return {} end
return redis.call("LRANGE", KEYS[1], 0, n - 1)
