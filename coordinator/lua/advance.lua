-- A job recorded once (ARGV[2] 'done'), the prefix of finished jobs advanced in job order
-- (audio duplicates found there), then: the collector triggered once, the run failed after
-- too many barren jobs, or the window topped up. Returns {collect?, first job, count}.
local meta, ctr, sent, done = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local rowsk, rej, collect = KEYS[5], KEYS[6], KEYS[7]
local beat, active, run_id, running = KEYS[8], KEYS[9], ARGV[9], KEYS[10]
local audio, dupk, spans, workersk = KEYS[11], KEYS[12], KEYS[13], KEYS[14]
if ARGV[2] == 'done' then
  local job = ARGV[3]
  if redis.call('HSETNX', done, job, ARGV[5]) == 0 then return {-1, 0, 0} end
  local r = tonumber(ARGV[4])
  redis.call('HSET', rowsk, job, r)
  redis.call('HDEL', sent, job)
  redis.call('HDEL', beat, job)
  redis.call('HDEL', running, job)
  redis.call('HINCRBYFLOAT', ctr, 'job_seconds', tonumber(ARGV[10]))
  redis.call('HSET', ctr, 'last_done', now)
  redis.call('HINCRBY', ctr, 'total_rows', r)
  redis.call('HINCRBY', ctr, 'done_jobs', 1)
  redis.call('HINCRBY', ctr, 'renders', tonumber(ARGV[6]))
  local span = redis.call('HGET', spans, job)
  if span then
    redis.call('HINCRBY', ctr, 'done_presets', tonumber(string.match(span, ',(%d+)$')))
  end
  for reason, count in pairs(cjson.decode(ARGV[7])) do
    redis.call('HINCRBY', rej, reason, count)
  end
  if r > 0 then
    redis.call('HSET', ctr, 'barren', 0)
  else
    redis.call('HINCRBY', ctr, 'barren', 1)
  end
  local pj = tonumber(redis.call('HGET', ctr, 'prefix_job') or '0')
  local pr = tonumber(redis.call('HGET', ctr, 'prefix_rows') or '0')
  while true do
    local v = redis.call('HGET', rowsk, tostring(pj))
    if not v then break end
    -- Rows join the prefix in canonical order, so "the same audio as an earlier row" is
    -- decided the same way whatever order jobs finished in, and whatever their size.
    local hs = cjson.decode(redis.call('HGET', done, tostring(pj)))['hashes']
    local dup = {}
    if type(hs) == 'table' then
      for i, h in ipairs(hs) do
        if redis.call('SADD', audio, h) == 0 then table.insert(dup, i - 1) end
      end
    end
    if #dup > 0 then
      redis.call('HSET', dupk, tostring(pj), cjson.encode(dup))
      redis.call('HINCRBY', rej, 'DUPLICATE_AUDIO', #dup)
      redis.call('HINCRBY', ctr, 'dup_rows', #dup)
    end
    pr = pr + tonumber(v) - #dup
    pj = pj + 1
  end
  redis.call('HSET', ctr, 'prefix_job', pj, 'prefix_rows', pr)
end
local n = tonumber(redis.call('HGET', meta, 'n'))
local pr = tonumber(redis.call('HGET', ctr, 'prefix_rows') or '0')
local state = redis.call('HGET', meta, 'state')
if pr >= n then
  if state == 'running' and redis.call('SETNX', collect, now) == 1 then
    redis.call('HSET', meta, 'state', 'collecting', 'updated', now)
    return {1, 0, 0}
  end
  return {0, 0, 0}
end
if state ~= 'running' then return {0, 0, 0} end
local total = tonumber(redis.call('HGET', ctr, 'total_rows') or '0')
local dj = tonumber(redis.call('HGET', ctr, 'done_jobs') or '0')
if tonumber(redis.call('HGET', ctr, 'barren') or '0') >= tonumber(ARGV[8]) then
  redis.call('HSET', meta, 'state', 'failed', 'updated', now, 'error',
    'no row accepted in ' .. ARGV[8] .. ' jobs in a row; ' ..
    'check the validation thresholds and constraints')
  redis.call('SREM', active, run_id)
  return {0, 0, 0}
end
total = total - tonumber(redis.call('HGET', ctr, 'dup_rows') or '0')
local per = tonumber(redis.call('HGET', meta, 'per_job'))
if dj > 0 then per = math.max(total / dj, 0.01) end
local outstanding = redis.call('HLEN', sent)
local window = tonumber(redis.call('HGET', meta, 'window'))
local tail = tonumber(redis.call('HGET', meta, 'tail') or '0')
if tail < 1 then
  -- Every job is batch presets (job j: presets j * batch onwards).
  local want = math.min(window, math.ceil((n - total) / per)) - outstanding
  if want < 1 then return {0, 0, 0} end
  local first = redis.call('HINCRBY', ctr, 'next', want) - want
  for j = first, first + want - 1 do redis.call('HSET', sent, j, now) end
  return {0, first, want}
end
-- Spans: job j renders presets first .. first + size - 1 ("first,size" in spans), taken in
-- order. A job is batch presets until the presets still needed beyond the outstanding
-- jobs are fewer than tail * batch (tail: half the window, at most the workers seen); then each job takes 1/tail of what is left (at least
-- batch / 8, unless fewer are needed), so the last jobs are small and end together instead of one worker finishing
-- a whole batch while the others idle. Rows are keyed by preset, so spans never change
-- them.
-- No more ways to share the tail than worker processes known to serve the run: those that
-- have taken a job of it, or from the start its known_workers (an embedded run's local
-- workers; on a broker, those stamped in coordinator.nodes), so a small run's first jobs
-- are shared among them. None known: whole jobs, so a cluster's large default window does
-- not cut a small run into tiny jobs.
local known = math.max(redis.call('SCARD', workersk),
  tonumber(redis.call('HGET', meta, 'known_workers') or '0'))
tail = math.max(1, math.min(tail, known))
local batch = tonumber(redis.call('HGET', meta, 'batch'))
local per_preset = per / batch
local dp = tonumber(redis.call('HGET', ctr, 'done_presets') or '0')
if dp > 0 then per_preset = math.max(total / dp, 0.01 / batch) end
local need = math.ceil((n - total) / per_preset)
local out = redis.call('HKEYS', sent)
if #out > 0 then
  for _, span in ipairs(redis.call('HMGET', spans, unpack(out))) do
    need = need - (span and tonumber(string.match(span, ',(%d+)$')) or batch)
  end
end
local slots = window - outstanding
if need < 1 or slots < 1 then return {0, 0, 0} end
local least = math.max(1, math.floor(batch / 8))
local first = tonumber(redis.call('HGET', ctr, 'next') or '0')
local preset = tonumber(redis.call('HGET', ctr, 'next_preset') or '0')
local count = 0
while need > 0 and count < slots do
  local size = math.min(batch, need, math.max(least, math.ceil(need / tail)))
  redis.call('HSET', spans, first + count, preset .. ',' .. size)
  redis.call('HSET', sent, first + count, now)
  preset = preset + size
  need = need - size
  count = count + 1
end
redis.call('HSET', ctr, 'next', first + count, 'next_preset', preset)
return {0, first, count}
