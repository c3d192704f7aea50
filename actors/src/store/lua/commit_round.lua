-- Concludes a round unless it was concluded already (compare-and-set on the round) or
-- is not the round the conclusion was computed from.
-- KEYS: state, frontier:r+1, finished, reasons, outbox, barrier:r, frontier:r, children:r
-- ARGV: round, conclusion json {finished=[[id, reason]], frontier=[id], done, restarted},
--       outbox key, outbox json, the number of children the conclusion saw
-- Returns 1 when applied, 0 when concluded before, 2 when the round is not complete or
-- has other children than the conclusion saw (the store lost writes since it was
-- read): nothing written.
local st = redis.call('HMGET', KEYS[1], 'round', 'status')
if tonumber(st[1]) ~= tonumber(ARGV[1]) or st[2] ~= 'searching' then
  return 0
end
if redis.call('SCARD', KEYS[6]) < redis.call('LLEN', KEYS[7])
    or redis.call('SCARD', KEYS[8]) ~= tonumber(ARGV[5]) then
  return 2
end
local c = cjson.decode(ARGV[2])
for _, f in ipairs(c.finished) do
  redis.call('RPUSH', KEYS[3], f[1])
  redis.call('HSET', KEYS[4], f[1], f[2])
end
if #c.frontier > 0 then
  redis.call('RPUSH', KEYS[2], unpack(c.frontier))
end
redis.call('HSET', KEYS[1], 'round', tonumber(ARGV[1]) + 1)
if c.done then
  redis.call('HSET', KEYS[1], 'status', 'searched')
end
if c.restarted then
  redis.call('HINCRBY', KEYS[1], 'restarts', 1)
end
redis.call('HSET', KEYS[5], ARGV[3], ARGV[4])
return 1
