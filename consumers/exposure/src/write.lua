-- write.lua - writes a chunk of borrowers' new states, with the alerts their
-- events raised or cleared, in one atomic call per borrower chunk, each
-- borrower only if its key still holds the state its new state was computed
-- from (compare-on-write): otherwise nothing of it is written and the
-- consumer reads it again, applies its events again and retries.
--
-- Why a compare: after the events topic gained partitions, a borrower's old
-- events sit on p and its new ones on p', and two consumers holding p and p'
-- each read, apply and write the borrower; without the compare the later
-- write overwrote the earlier (a lost update; consumers/README.md, "Adding
-- partitions"). The compare also carries the fence: the consumer checked the
-- stamp of the state it read (borrower.c refuses a write by an older epoch of
-- the stamp's writer), so a key still holding that very state has that very
-- stamp, and a key holding anything else is refused here whatever its stamp
-- (the retry's read then meets the newer stamp and is FENCED in C). Lua
-- interns strings, so the compare of two equal states is a pointer compare.
--
-- This is the whole write path: without strict fencing (Redis Cluster: the
-- borrowers of one hash slot per call, with that slot's alert stream, so a
-- call is one slot's atomic unit) on its own, and with strict fencing (one
-- Redis, the default) inside the MULTI/EXEC guarded by the WATCHed epoch keys.
-- loanwire-exposure decides everything in C (borrower.c: sequence rule,
-- windows, rules); this script only compares and stores. lw_script_build()
-- prepends STREAM and MAXLEN as Lua constants.
--
-- KEYS[1..n] b:{borrower} of each borrower (distinct)
-- KEYS[n+1]  lw:alerts (declared when STREAM; lw:alerts:{TAG} of the slot
--            on a cluster)
-- ARGV[1]    n; then per borrower:
--            old       the state read (its exact bytes), '' when there was none
--                      (or the key held another type)
--            state     the new state string (layout in consumers/README.md)
--            nops      then nops operations, in the order they happened:
--            'F' rule json alert_id severity platform lender  an alert fired
--            'C' rule                                          a rule cleared
--
-- Returns one integer per borrower: 0 written, -1 changed since it was read
-- (nothing of it written).

local n = tonumber(ARGV[1])
local out = {}
local SKEY = KEYS[n + 1]
local sub = string.sub

-- one MGET for the call, not a GET per borrower (a redis.call costs more
-- than the key); a key of another type reads as none (false, as for a
-- missing key), and MSET replaces it
local cur = redis.call('MGET', unpack(KEYS, 1, n))
local kv, a = {}, 2
for i = 1, n do
    local k, nops = KEYS[i], tonumber(ARGV[a + 2])
    local ok = (cur[i] or '') == ARGV[a]
    if ok then
        kv[#kv + 1] = k
        kv[#kv + 1] = ARGV[a + 1]
    end
    out[i] = ok and 0 or -1
    a = a + 3
    -- most borrowers have no alert operation: no alert key made for them
    local ak = nops > 0 and 'a:' .. sub(k, 3)
    for _ = 1, nops do
        if ARGV[a] == 'F' then
            if ok then
                local rule, j = ARGV[a + 1], ARGV[a + 2]
                redis.call('HSET', ak, rule, j)
                if STREAM then
                    redis.call('XADD', SKEY, 'MAXLEN', '~', MAXLEN, '*', 'alert_id', ARGV[a + 3],
                        'borrower_id', sub(k, 4, -2), 'rule_id', rule, 'severity', ARGV[a + 4],
                        'platform_id', ARGV[a + 5], 'lender_id', ARGV[a + 6], 'json', j)
                end
            end
            a = a + 7
        else
            if ok then
                -- the last cleared alert stays as '~rule', so a redelivered
                -- trigger can publish it again
                local rule = ARGV[a + 1]
                local j = redis.call('HGET', ak, rule)
                if j then redis.call('HSET', ak, '~' .. rule, j) end
                redis.call('HDEL', ak, rule)
            end
            a = a + 2
        end
    end
end
if #kv > 0 then redis.call('MSET', unpack(kv)) end
return out
