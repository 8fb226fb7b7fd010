-- The broker's clock (seconds): every script's time, whatever the callers' clocks say.
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
