-- Shared by acquire.lua and settle.lua (prepended to each when loaded): the Redis clock, the GCRA arithmetic and
-- the spend periods, mirroring gateway/ratelimit/gcra.py line for line.

-- TIME before writes needs effects replication: the default since Redis 5, the only mode since 7.
if redis.replicate_commands then redis.replicate_commands() end

local RATE_SLACK = 1e-9
local SPEND_GRACE = 86400

local function fmt(x)
  return string.format('%.17g', x)
end

-- Microseconds since the epoch, by this Redis's clock: an integer, exact in a double.
local function clock_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

-- A rate key holds "<measured at, µs> <backlog, s>": TAT - then, never an absolute TAT (see gcra.py).
local function read_backlog(key, now_us)
  local value = redis.call('GET', key)
  if not value then return 0 end
  local at, backlog = string.match(value, '^(%S+) (%S+)$')
  local left = tonumber(backlog) - (now_us - tonumber(at)) / 1e6
  if left < 0 then return 0 end
  return left
end

-- The key lives until its TAT has passed.
local function write_backlog(key, now_us, backlog)
  local ms = math.ceil(backlog * 1000)
  if ms <= 0 then
    redis.call('DEL', key)
  else
    redis.call('SET', key, fmt(now_us) .. ' ' .. fmt(backlog), 'PX', ms)
  end
end

local function rate_remaining(backlog, limit, window)
  if limit <= 0 or window <= 0 then return 0 end
  local remaining = math.floor((window - backlog + window * RATE_SLACK) / (window / limit))
  if remaining < 0 then return 0 end
  return remaining
end

-- allowed, backlog after, retry_after
local function rate_charge(backlog, amount, limit, window)
  if amount > limit or limit <= 0 or window <= 0 then
    return false, backlog, math.max(window, 0)
  end
  local after = backlog + amount * (window / limit)
  if after <= window * (1 + RATE_SLACK) then return true, after, 0 end
  return false, backlog, after - window
end

local function rate_adjust(backlog, amount, limit, window)
  if limit <= 0 or window <= 0 then return backlog end
  return math.max(0, backlog + amount * (window / limit))
end

-- Days since 1970-01-01 ⇄ proleptic Gregorian dates (H. Hinnant's algorithms).
local function civil_from_days(days)
  local z = days + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local d = doy - math.floor((153 * mp + 2) / 5) + 1
  local m = mp < 10 and mp + 3 or mp - 9
  local y = yoe + era * 400
  if m <= 2 then y = y + 1 end
  return y, m, d
end

local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local mp = m > 2 and m - 3 or m + 9
  local doy = math.floor((153 * mp + 2) / 5) + d - 1
  local doe = yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy
  return era * 146097 + doe - 719468
end

-- The UTC period holding `now`: its label and the epoch second it ends (nil for "total").
local function spend_period(period, now)
  if period == 'total' then return 'total', nil end
  local days = math.floor(now / 86400)
  if period == 'day' then
    local y, m, d = civil_from_days(days)
    return string.format('%04d-%02d-%02d', y, m, d), (days + 1) * 86400
  elseif period == 'week' then
    -- 1970-01-01 was a Thursday; an ISO week belongs to the year of its Thursday.
    local monday = days - (days + 3) % 7
    local y = civil_from_days(monday + 3)
    local week = math.floor((monday + 3 - days_from_civil(y, 1, 1)) / 7) + 1
    return string.format('%04d-W%02d', y, week), (monday + 7) * 86400
  elseif period == 'month' then
    local y, m = civil_from_days(days)
    local ny, nm = y, m + 1
    if nm > 12 then ny, nm = y + 1, 1 end
    return string.format('%04d-%02d', y, m), days_from_civil(ny, nm, 1) * 86400
  end
  error('unknown spend period ' .. tostring(period))
end

