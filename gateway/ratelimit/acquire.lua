-- acquire: apply every charge or none. KEYS[i]: bucket i (spend: without its period label).
-- ARGV: lease id, then one per bucket: "kind limit window period amount" (period "-" when none): one
-- argument a bucket, since redis-py's cost of packing a command grows with its argument count.
-- Returns strings: allowed (1/0), denied bucket (1-based, 0 if none), retry_after, then remaining, reset_after per
-- bucket (after the charges when allowed, as they stand when denied).
local now_us = clock_us()
local now = now_us / 1e6
local lease = ARGV[1]
local denied, retry = 0, 0
local before, after = {}, {}
local staged = {} -- rate key → backlog once charged (a bucket named twice sees its first charge)
local leases = {} -- bucket index → lease expiry to record

local function deny(i, wait)
  if denied == 0 or wait > retry then denied, retry = i, wait end
end

for i = 1, #KEYS do
  local key = KEYS[i]
  local kind, limit, window, period, amount = string.match(ARGV[i + 1], '^(%S+) (%S+) (%S+) (%S+) (%S+)$')
  limit, window, amount = tonumber(limit), tonumber(window), tonumber(amount)
  if period == '-' then period = '' end
  if kind == 'requests' or kind == 'tokens' then
    local backlog = staged[key] or read_backlog(key, now_us)
    local ok, charged, wait = rate_charge(backlog, amount, limit, window)
    before[i] = {rate_remaining(backlog, limit, window), backlog}
    after[i] = {rate_remaining(charged, limit, window), charged}
    if ok then staged[key] = charged else deny(i, wait) end
  elseif kind == 'concurrent' then
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
    local count = redis.call('ZCARD', key)
    local held = redis.call('ZSCORE', key, lease) and 1 or 0
    local latest = now
    if count > 0 then latest = tonumber(redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')[2]) end
    before[i] = {math.max(0, limit - count), latest - now}
    after[i] = {math.max(0, limit - count - (1 - held)), math.max(latest - now, window)}
    if held == 1 or count < limit then
      leases[i] = now + window
    else
      -- An upper bound: the earliest lease's expiry; a release usually frees a slot sooner.
      local earliest = now + window
      if count > 0 then earliest = tonumber(redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')[2]) end
      deny(i, earliest - now)
    end
  elseif kind == 'spend' then
    local label, ends = spend_period(period, now)
    local total = tonumber(redis.call('GET', key .. ':' .. label) or '0')
    local until_end = 0
    if ends then until_end = ends - now end
    before[i] = {math.max(0, limit - total), until_end}
    after[i] = before[i]
    if total >= limit then deny(i, until_end) end
  else
    return redis.error_reply('unknown bucket kind ' .. tostring(kind))
  end
end

local reply = {'1', '0', '0'}
local states = after
if denied > 0 then
  reply = {'0', tostring(denied), fmt(retry)}
  states = before
else
  for key, backlog in pairs(staged) do write_backlog(key, now_us, backlog) end
  for i, expiry in pairs(leases) do
    redis.call('ZADD', KEYS[i], expiry, lease)
    local last = tonumber(redis.call('ZRANGE', KEYS[i], -1, -1, 'WITHSCORES')[2])
    redis.call('PEXPIRE', KEYS[i], math.ceil((last - now) * 1000))
  end
end
for i = 1, #KEYS do
  reply[#reply + 1] = fmt(states[i][1])
  reply[#reply + 1] = fmt(states[i][2])
end
return reply
