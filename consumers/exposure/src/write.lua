-- write.lua - writes a chunk of borrowers' new states, with the alerts their
-- events raised or cleared, in one atomic call per borrower chunk, refusing
-- a borrower whose stored fence stamp is newer than the writer's: the same
-- writer (topic and partition, as an id of lw:strings) at a newer epoch.
--
-- This is the write path without strict fencing (Redis Cluster: the
-- borrowers of one hash slot per call, with that slot's alert stream, so a
-- call is one slot's atomic unit). With strict fencing (one Redis, the default)
-- store.c writes a WATCH-guarded MULTI/EXEC instead and runs no script.
-- loanwire-exposure decides everything in C (borrower.c: sequence rule,
-- windows, rules); this script only fences and stores. lw_script_build()
-- prepends STREAM and MAXLEN as Lua constants.
--
-- KEYS[1..n] b:{borrower} of each borrower (distinct)
-- KEYS[n+1]  lw:alerts (declared when STREAM; lw:alerts:{TAG} of the slot
--            on a cluster)
-- ARGV[1]    n; then per borrower (borrowers of several partitions can
--            share a call, so each names its own writer):
--            writer    the id of its (topic, partition) in lw:strings
--            epoch     that writer's epoch
--            state     the new state string (layout in consumers/README.md)
--            nops      then nops operations, in the order they happened:
--            'F' rule json alert_id severity platform lender  an alert fired
--            'C' rule                                          a rule cleared
--
-- Returns one integer per borrower: 0 written, else fenced (nothing
-- written): the epoch of its stored fence stamp, newer for the same writer.

local n = tonumber(ARGV[1])
local out = {}
local SKEY = KEYS[n + 1]
local byte, sub = string.byte, string.sub

-- The fence stamp: the varints after the version byte (writer, epoch), in
-- every layout from 3 on (5 appends the inquiries at the end, after the
-- stamp). A layout version 2 stamp named a partition without its topic: no
-- writer.
local function stamp(s)
    if byte(s, 1) < 3 then return 0, 0 end
    local vals, i = {}, 2
    for k = 1, 2 do
        local v, m = 0, 1
        repeat
            local b = byte(s, i)
            if not b then return -1, 0 end
            v = v + (b % 128) * m
            m = m * 128
            i = i + 1
        until b < 128
        vals[k] = v
    end
    return vals[1], vals[2]
end

local kv, a = {}, 2
for i = 1, n do
    local writer, epoch = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
    a = a + 2
    local k, nops = KEYS[i], tonumber(ARGV[a + 1])
    local ok, e = true, 0
    local old = redis.call('GET', k)
    if old then
        local w
        w, e = stamp(old)
        ok = not (w == writer and writer ~= 0 and epoch < e)
    end
    if ok then
        kv[#kv + 1] = k
        kv[#kv + 1] = ARGV[a]
    end
    out[i] = ok and 0 or e
    a = a + 2
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
