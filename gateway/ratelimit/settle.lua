-- settle: the request has ended. KEYS[i]: bucket i (spend: without its period label).
-- ARGV: lease id, then one per bucket: "kind limit window period amount" (period "-" when none): one
-- argument a bucket, since redis-py's cost of packing a command grows with its argument count.
-- tokens: move TAT by amount·T; spend: add amount to this period's total; concurrent: release the lease.
local now_us = clock_us()
local now = now_us / 1e6
local lease = ARGV[1]
for i = 1, #KEYS do
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
