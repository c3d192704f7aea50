-- Stores a frontier node's children's values and counts the node once in the round's
-- barrier. KEYS: values, barrier:r, frontier:r, state, children:r
-- ARGV: round, parent, n, the n children's ids, then id, value, ...
-- Returns 0 while other nodes are unscored, 1 when the round must be concluded now,
-- 2 when it was concluded already (a redelivery): then nothing is written, so the
-- values that drove the conclusion stay as they were; 3 when the tree has not reached
-- the round (the store lost the writes the task came from), nothing written either;
-- 4 when the tree is at the round but lacks the parent in its frontier or one of the
-- children (it lost the expansion after the worker read it): nothing written, since
-- counting the parent would conclude the round without those children.
local st = redis.call('HMGET', KEYS[4], 'round', 'status')
local round = tonumber(ARGV[1])
if st[2] == 'searching' and tonumber(st[1]) < round then
  return 3
end
if not (tonumber(st[1]) == round and st[2] == 'searching') then
  return 2
end
if not redis.call('LPOS', KEYS[3], ARGV[2]) then
  return 4
end
local n = tonumber(ARGV[3])
for i = 4, 3 + n do
  if redis.call('SISMEMBER', KEYS[5], ARGV[i]) == 0 then
    return 4
  end
end
for i = 4 + n, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
end
redis.call('SADD', KEYS[2], ARGV[2])
if redis.call('SCARD', KEYS[2]) < redis.call('LLEN', KEYS[3]) then
  return 0
end
return 1
