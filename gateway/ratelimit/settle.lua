-- settle: the request has ended. KEYS[i]: bucket i (spend: without its period label).
-- ARGV: lease id, then one per bucket: "kind limit window period amount" (period "-" when none): one
-- argument a bucket, since redis-py's cost of packing a command grows with its argument count.
-- tokens: move TAT by amount·T; spend: add amount to this period's total; concurrent: release the lease.
-- The last KEY marks this settle done: one retried after a lost answer must not add tokens or spend twice (releasing
-- a lease twice is harmless, so a release alone does not need the mark).
local now_us = clock_us()
local now = now_us / 1e6
local lease = ARGV[1]
local buckets = #KEYS - 1
local adds = false
for i = 1, buckets do
  local kind = string.match(ARGV[i + 1], '^(%S+) ')
  if kind == 'tokens' or kind == 'spend' then adds = true end
end
if adds and not redis.call('SET', KEYS[#KEYS], '1', 'NX', 'EX', 86400) then
  return 0
end
for i = 1, buckets do
  local key = KEYS[i]
  local kind, limit, window, period, amount = string.match(ARGV[i + 1], '^(%S+) (%S+) (%S+) (%S+) (%S+)$')
  limit, window = tonumber(limit), tonumber(window)
  if period == '-' then period = '' end
  if kind == 'tokens' then
    local backlog = rate_adjust(read_backlog(key, now_us), tonumber(amount), limit, window)
    write_backlog(key, now_us, backlog)
  elseif kind == 'spend' then
    local label, ends = spend_period(period, now)
    local spent = key .. ':' .. label
    redis.call('INCRBYFLOAT', spent, amount)
    if ends then redis.call('EXPIREAT', spent, ends + SPEND_GRACE) end
  elseif kind == 'concurrent' then
    redis.call('ZREM', key, lease)
  end
end
return 1
