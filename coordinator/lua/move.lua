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
