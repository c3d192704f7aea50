-- Stores a frontier node's children's values and counts the node once in the round's
-- barrier. KEYS: values, barrier:r, frontier:r, state   ARGV: round, parent, id, value, ...
-- Returns 0 while other nodes are unscored, 1 when the round must be concluded now,
-- 2 when it was concluded already (a redelivery): then nothing is written, so the
-- values that drove the conclusion stay as they were.
local st = redis.call('HMGET', KEYS[4], 'round', 'status')
if not (tonumber(st[1]) == tonumber(ARGV[1]) and st[2] == 'searching') then
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
