"""The Lua scripts of a store-backed admission (router/shared_state.py): ADMIT (a key's slot, budget, rate and PRADA
flag checked and taken together), UNDO (what an admission whose reply was lost took, back) and GIVE_BACK (a
refund, or a malformed body's drain of the key's tokens)."""

from .defenses.token_bucket import LUA_TOKENS_NOW, lua_take_tokens_or_refuse

ADMIT = """
-- KEYS: 1 slots in flight (sorted set: request id -> lease deadline ms), 2 query budget (hash), 3 prada (hash),
--       4 this request's receipt (what it took, for an undo if its reply is lost; 'undone': the undo came first)
-- ARGV: 1 request id, 2 samples, 3 max in flight per client (0: none), 4 lease ms, 5 max samples (0: none),
--       6 rate samples/s (0: none), 7 burst samples, 8 prada action ('' when prada is off), 9 throttle samples/s,
--       10 receipt ms
-- Reply: {verdict, value}, and when admitted with prada on also the key's prada version and flag ('' none), so
-- that a worker's copy of the key's prada state can tell that it is behind (router/defenses/prada_store.py)
if redis.call('GET', KEYS[4]) == 'undone' then return {'undone', 0} end
local t = redis.call('TIME')
local now = t[1] * 1000 + t[2] / 1000
local n, max_in_flight, lease = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local max_samples, rate, burst = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local p = ARGV[8] ~= '' and redis.call('HMGET', KEYS[3], 'flagged_at', 'tt', 'ta', 'ver')
if p and p[1] and ARGV[8] == 'block' then return {'blocked', 0} end  -- for good: before anything transient
if max_in_flight > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)  -- leases of requests a dead router never released
  local busy = redis.call('ZCARD', KEYS[1])
  if busy >= max_in_flight then return {'in_flight', busy} end
end
local b = redis.call('HMGET', KEYS[2], 'spent', 'tokens', 'at')
local spent, tokens = tonumber(b[1]) or 0, nil
if max_samples > 0 and spent + n > max_samples then return {'budget', spent} end
TAKE_TOKENS_OR_REFUSE
local throttle = nil
if p and p[1] and ARGV[8] == 'throttle' then
  local trate = tonumber(ARGV[9])
  if n > trate then return {'throttle_burst', 0} end
  throttle = math.min(trate, (tonumber(p[2]) or trate) + (now - (tonumber(p[3]) or now)) / 1000 * trate)
  if throttle < n then
    redis.call('HSET', KEYS[3], 'tt', throttle, 'ta', now)
    return {'throttled', tostring((n - throttle) / trate)}
  end
end
if max_in_flight > 0 then
  redis.call('ZADD', KEYS[1], now + lease, ARGV[1])
  redis.call('PEXPIRE', KEYS[1], math.ceil(lease))
end
if max_samples > 0 then redis.call('HSET', KEYS[2], 'spent', spent + n) end
if rate > 0 then redis.call('HSET', KEYS[2], 'tokens', tokens - n, 'at', now) end
if throttle then redis.call('HSET', KEYS[3], 'tt', throttle - n, 'ta', now) end
redis.call('SET', KEYS[4], n, 'PX', ARGV[10])
if p then return {'ok', spent + n, p[4] or '0', p[1] or ''} end
return {'ok', spent + n}
""".replace("TAKE_TOKENS_OR_REFUSE\n", lua_take_tokens_or_refuse("KEYS[2]"))

# The undo of an admission whose reply was lost (the store stalled past the socket timeout, the connection was
# cut): it may have run, so what it took goes back, whichever of the two reaches the store first.
UNDO = """
-- KEYS: 1 slots in flight, 2 query budget, 3 the request's receipt. ARGV: 1 request id, 2 burst, 3 rate samples/s
-- (0: none), 4 receipt ms, 5 the budget lease the admission took ('' or absent: none; router/budget_leases.py)
local r = redis.call('GET', KEYS[3])
redis.call('SET', KEYS[3], 'undone', 'PX', ARGV[4])
if not r or r == 'undone' then return 0 end
local n, burst, rate = tonumber(r), tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZREM', KEYS[1], ARGV[1])
if ARGV[5] and ARGV[5] ~= '' then redis.call('HDEL', KEYS[2], 'l:' .. ARGV[5]) end  -- its units come back below
local b = redis.call('HMGET', KEYS[2], 'spent', 'tokens', 'at')
if b[1] then redis.call('HSET', KEYS[2], 'spent', math.max(0, tonumber(b[1]) - n)) end
if rate > 0 and b[2] then redis.call('HSET', KEYS[2], 'tokens', math.min(burst, tonumber(b[2]) + n)) end
return 1
"""
RECEIPT_MS = 3_600_000  # an undo is honoured up to an hour after the admission it undoes

GIVE_BACK = """
-- KEYS: 1 query budget (hash). ARGV: 1 samples, 2 burst, 3 'refund' (spent and tokens back) or 'drain' (tokens
-- out, down to 0: a malformed body's penalty), 4 rate samples/s (0: none)
local t = redis.call('TIME')
local now = t[1] * 1000 + t[2] / 1000
local n, burst, rate = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[4])
local b = redis.call('HMGET', KEYS[1], 'spent', 'tokens', 'at')
if ARGV[3] == 'refund' and b[1] then redis.call('HSET', KEYS[1], 'spent', math.max(0, tonumber(b[1]) - n)) end
if rate > 0 then
  local tokens = TOKENS_NOW
  tokens = ARGV[3] == 'refund' and math.min(burst, tokens + n) or math.max(0, tokens - n)
  redis.call('HSET', KEYS[1], 'tokens', tokens, 'at', now)
end
return 1
""".replace("TOKENS_NOW", LUA_TOKENS_NOW)
