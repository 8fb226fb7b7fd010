-- Heartbeats of the jobs in ARGV that are still out (KEYS[1] sent, KEYS[2] beat).
for i = 1, #ARGV do
  if redis.call('HEXISTS', KEYS[1], ARGV[i]) == 1 then redis.call('HSET', KEYS[2], ARGV[i], now) end
end
return tostring(now)
