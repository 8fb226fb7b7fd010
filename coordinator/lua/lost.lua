-- Jobs to send again: started and silent (no heartbeat for ARGV[1] s), or sent long ago,
-- never started and not waiting anywhere (ARGV[3]: JSON list of jobs whose message is
-- queued or just taken by a worker). Their clocks restart, so one supervisor sends each.
local sent, beat, ctr, running = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local age, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
local waiting = {}
for _, j in ipairs(cjson.decode(ARGV[3])) do waiting[tostring(j)] = true end
local out = {}
local all = redis.call('HGETALL', sent)
for i = 1, #all, 2 do
  if #out >= limit then break end
  local job = all[i]
  local b = redis.call('HGET', beat, job)
  local lost
  if b then
    lost = now - tonumber(b) > age
  else
    lost = now - tonumber(all[i + 1]) > age and not waiting[job]
  end
  if lost then
    redis.call('HSET', sent, job, now)
    redis.call('HDEL', beat, job)
    redis.call('HDEL', running, job)
    redis.call('HINCRBY', ctr, 'resent', 1)
    table.insert(out, job)
  end
end
return out
