-- settle: the request has ended. KEYS[i]: bucket i (spend: without its period label).
-- ARGV: lease id, then five per bucket: kind, limit, window, period, amount.
-- tokens: move TAT by amount·T; spend: add amount to this period's total; concurrent: release the lease.
local now_us = clock_us()
local now = now_us / 1e6
local lease = ARGV[1]
for i = 1, #KEYS do
  local key, base = KEYS[i], 1 + (i - 1) * 5
  local kind, limit, window = ARGV[base + 1], tonumber(ARGV[base + 2]), tonumber(ARGV[base + 3])
  local period, amount = ARGV[base + 4], ARGV[base + 5]
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
