-- Jobs to send again: started and silent (no heartbeat for ARGV[1] s), or sent long ago,
-- never started and not waiting anywhere (ARGV[3]: JSON list of jobs whose message is
-- queued or just taken by a worker). Their clocks restart, so one supervisor sends each.
-- ST = (
--  _NOW
--  + """
-- al sent, beat, ctr, running = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
-- al age, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
-- al waiting = {}
--  _, j in ipairs(cjson.decode(ARGV[3])) do waiting[tostring(j)] = true end
-- al out = {}
-- al all = redis.call('HGETALL', sent)
--  i = 1, #all, 2 do
-- f #out >= limit then break end
-- ocal job = all[i]
-- ocal b = redis.call('HGET', beat, job)
-- ocal lost
-- f b then
--  lost = now - tonumber(b) > age
-- lse
--  lost = now - tonumber(all[i + 1]) > age and not waiting[job]
-- nd
-- f lost then
--  redis.call('HSET', sent, job, now)
--  redis.call('HDEL', beat, job)
--  redis.call('HDEL', running, job)
--  redis.call('HINCRBY', ctr, 'resent', 1)
--  table.insert(out, job)
-- nd
-- 
-- urn out
-- 
-- 
-- A state change only from the expected states (compare and set): a late collector or a
-- resumed frozen worker cannot move a run that someone else already moved on.
local meta, active, collect = KEYS[1], KEYS[2], KEYS[3]
local sent, beat, running = KEYS[4], KEYS[5], KEYS[6]
local state = redis.call('HGET', meta, 'state')
if not state then return '' end
local ok = false
for _, s in ipairs(cjson.decode(ARGV[1])) do if s == state then ok = true end end
if not ok then return state end
local fields = cjson.decode(ARGV[3])
redis.call('HSET', meta, 'state', ARGV[2], 'updated', now)
for k, v in pairs(fields) do redis.call('HSET', meta, k, v) end
if ARGV[2] == 'running' or ARGV[2] == 'collecting' then
  redis.call('SADD', active, ARGV[4])
else
  redis.call('SREM', active, ARGV[4])
end
if ARGV[2] == 'running' then redis.call('DEL', collect) end
if ARGV[2] == 'collecting' then redis.call('SET', collect, now) end
-- Done: jobs still out (sent past the rows the file needed) are not needed any more. A
-- failed or cancelled run keeps them, for resume.
if ARGV[2] == 'done' then redis.call('DEL', sent, beat, running) end
return 'ok'
