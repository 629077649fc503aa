"""The Lua scripts of PRADA's state in the store (router/defenses/prada_store.py): FETCH (what a worker's copy of a
key lacks: the appended tails, or the whole state at a new epoch) and COMMIT (a copy's staged batches, applied
only at the epoch and version the copy holds)."""

FETCH = """
-- KEYS: 1 prada hash, 2 distances. ARGV: 1 members' key prefix, 2 epoch held ('' none), 3 distances held, then
-- per class held: class, member rows held
-- Reply: version, epoch, flagged_at ('' none), meta, 1 when the rest is the whole state (a new epoch) else 0, the
-- distances past those held (at most those kept), then per class: class, its member rows past those held
local h = redis.call('HMGET', KEYS[1], 'ver', 'epoch', 'flagged_at', 'meta')
local epoch = h[2] or ''
local whole = epoch ~= ARGV[2]
local out = {h[1] or '0', epoch, h[3] or '', h[4] or '', whole and 1 or 0, ''}
if not h[4] then return out end
local m = cjson.decode(h[4])
local nd, held = 0, {}
if not whole then
  nd = tonumber(ARGV[3])
  for i = 4, #ARGV, 2 do held[ARGV[i]] = tonumber(ARGV[i + 1]) end
end
if m.nd > nd then out[6] = redis.call('GETRANGE', KEYS[2], -4 * (m.nd - nd), -1) end
for c, _ in pairs(m.g) do
  out[#out + 1] = c
  out[#out + 1] = redis.call('GETRANGE', ARGV[1] .. c, (held[c] or 0) * 4 * m.dim, -1)
end
return out
"""

COMMIT = """
-- KEYS: 1 prada hash, 2 distances. ARGV: 1 epoch held, 2 version held, 3 meta JSON, 4 flagged_at ('' none new),
-- 5 distances held (0: written afresh), 6 new distances, 7 most distance bytes kept, 8 distance bytes kept after a
-- trim, 9 members' key prefix, then per class that grew: class, member rows held (0: written afresh), new rows
-- Reply: {new version, epoch}, or {0, ''} when the key is no longer at the epoch and version held (nothing written)
local h = redis.call('HMGET', KEYS[1], 'ver', 'epoch')
local epoch = h[2] or ''
if epoch ~= ARGV[1] or (tonumber(h[1]) or 0) ~= tonumber(ARGV[2]) then return {0, ''} end
if epoch == '' then  -- a new key, or one an operator reset: a new epoch
  local t = redis.call('TIME')
  epoch = t[1] .. '.' .. t[2]
end
local ver = (tonumber(h[1]) or 0) + 1
redis.call('HSET', KEYS[1], 'ver', ver, 'meta', ARGV[3], 'epoch', epoch)
if ARGV[4] ~= '' then redis.call('HSETNX', KEYS[1], 'flagged_at', ARGV[4]) end
if ARGV[5] == '0' then
  redis.call('SET', KEYS[2], ARGV[6])
elseif #ARGV[6] > 0 and redis.call('APPEND', KEYS[2], ARGV[6]) > tonumber(ARGV[7]) then
  redis.call('SET', KEYS[2], redis.call('GETRANGE', KEYS[2], -tonumber(ARGV[8]), -1))
end
for i = 10, #ARGV, 3 do
  if ARGV[i + 1] == '0' then redis.call('SET', ARGV[9] .. ARGV[i], ARGV[i + 2])
  else redis.call('APPEND', ARGV[9] .. ARGV[i], ARGV[i + 2]) end
end
return {ver, epoch}
"""
