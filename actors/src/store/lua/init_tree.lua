-- Creates a tree with its root as round 0's frontier unless it exists.
-- KEYS: state, frontier:0, nodes   ARGV: root id, root json
-- Returns whether the tree's first task is published ("1") or not ("0").
if redis.call('HSETNX', KEYS[1], 'round', 0) == 1 then
  redis.call('HSET', KEYS[1], 'status', 'searching', 'restarts', 0, 'enqueued', 0)
  redis.call('RPUSH', KEYS[2], ARGV[1])
  redis.call('HSET', KEYS[3], ARGV[1], ARGV[2])
end
return redis.call('HGET', KEYS[1], 'enqueued')
