-- A state change only from the expected states (compare and set): a late collector or a
-- resumed frozen worker cannot move a run that someone else already moved on.
local meta, active, collect = KEYS[1], KEYS[2], KEYS[3]
local sent, beat, running = KEYS[4], KEYS[5], KEYS[6]
-- KEYS[7..]: what only building the file needs (per job and per row).
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
-- Done: jobs still out (sent past the rows the file needed) are not needed any more, nor
-- is what the collector built the file from: the per-job records, and every row's audio
-- hash, which would otherwise stay in Redis for every run ever made (about 270 bytes a
-- row). The totals (ctr, rej) and meta stay for `farm status`. A failed or cancelled run
-- keeps everything, for resume; so does a run whose shards are kept (their record with them).
if ARGV[2] == 'done' then
  redis.call('DEL', sent, beat, running)
  if redis.call('HGET', meta, 'keep_shards') ~= '1' then
    for i = 7, #KEYS do redis.call('DEL', KEYS[i]) end
  end
end
return 'ok'
