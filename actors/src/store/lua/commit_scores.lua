-- Stores a frontier node's children's values and counts the node once in the round's
-- barrier. KEYS: values, barrier:r, frontier:r, state   ARGV: round, parent, id, value, ...
-- Returns 0 while other nodes are unscored, 1 when the round must be concluded now,
-- 2 when it was concluded already (a redelivery): then nothing is written, so the
-- values that drove the conclusion stay as they were; 3 when the tree has not reached
-- the round (the store lost the writes the task came from), nothing written either.
local st = redis.call('HMGET', KEYS[4], 'round', 'status')
local round = tonumber(ARGV[1])
if st[2] == 'searching' and tonumber(st[1]) < round then
  return 3
end
if not (tonumber(st[1]) == round and st[2] == 'searching') then
  return 2
end
for i = 3, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
end
redis.call('SADD', KEYS[2], ARGV[2])
if redis.call('SCARD', KEYS[2]) < redis.call('LLEN', KEYS[3]) then
  return 0
end
return 1
