-- A delivery of a job starts: refused when done or the run is not running; counts the
-- attempt and stamps the job's heartbeat and worker. Returns {state, attempt, span}
-- (span: "first,size" of the job's presets, '' for a run of fixed-size jobs).
local meta, sent, done = KEYS[1], KEYS[2], KEYS[3]
local attempts, workers, ctr, beat = KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local running, spans = KEYS[8], KEYS[9]
local job = ARGV[1]
local state = redis.call('HGET', meta, 'state')
if not state then return {'unknown', 0, ''} end
if redis.call('HEXISTS', done, job) == 1 then return {'done', 0, ''} end
if state ~= 'running' then return {state, 0, ''} end
redis.call('SADD', workers, ARGV[3])
if redis.call('HEXISTS', sent, job) == 1 then
  redis.call('HSET', sent, job, now)
  redis.call('HSET', beat, job, now)
  redis.call('HSET', running, job, ARGV[3])
end
local attempt = redis.call('HINCRBY', attempts, job, 1)
if attempt > 1 then redis.call('HINCRBY', ctr, 'retries', 1) end
return {'ok', attempt, redis.call('HGET', spans, job) or ''}
