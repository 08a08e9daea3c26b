-- Give back a worker's popped-but-unclaimed tasks: pending -> queued.
-- They go to the head of the shared queue, in their original order, so they
-- run next. Used when a worker exits or is found dead.
-- KEYS[1] the worker's pending list, KEYS[2] the shared queue
-- Returns the number of keys moved.
return release_list(KEYS[1], KEYS[2], true)
