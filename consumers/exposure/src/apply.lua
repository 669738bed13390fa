-- apply.lua - applies one loan event to one borrower's state, atomically.
--
-- This is the body of the script loanwire-exposure runs once per event
-- (EVALSHA). lw_script_build() prepends the rule pack and options as Lua
-- constants (RULES, MAXLEN, STRICT, STREAM), so the rules cost nothing per call and a
-- new rules file simply gives a new script SHA. consumers/README.md documents
-- the key layout; lw_state_read() (state.c) is its only other reader.
--
-- KEYS[1] lw:b:{borrower}   the borrower hash (everything of one borrower)
-- KEYS[2] lw:alerts         alert stream (XADD when STREAM)
-- KEYS[3] lw:epoch:<t>:<p>  partition epoch, read only when STRICT
-- ARGV    partition epoch type platform loan lender product sequence
--         occurred_at outstanding limit dpd past_due income event_id borrower
--
-- Returns an integer code (0 applied, 1 duplicate / no change, 2 out of order,
-- 3 fenced)
-- or, when alerts are to be published, {code, alert_json, ...}. A duplicate
-- of an event that raised a still-open alert returns that alert again, so a
-- consumer that crashed before publishing it publishes it on redelivery.
--
-- Numbers: Lua numbers are doubles; every amount is <= 10^13 fen (validated
-- before we get here) so sums of them stay exact; numbers are written with
-- string.format('%d') or as msgpack/struct integers, never with tostring().

local D30 = 2592000000
local k = KEYS[1]
local part, epoch = tonumber(ARGV[1]), tonumber(ARGV[2])
if STRICT and KEYS[3] then
    local cur = tonumber(redis.call('GET', KEYS[3]) or '0')
    if epoch < cur then return 3 end
end

local et = tonumber(ARGV[3])
local pid, lid, lender = ARGV[4], ARGV[5], ARGV[6]
local prod, seq, at = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
local out, lim, dpd, pd = tonumber(ARGV[10]), tonumber(ARGV[11]), tonumber(ARGV[12]),
    tonumber(ARGV[13])
local inc, evid, bid = ARGV[14], ARGV[15], ARGV[16]

-- Read the whole (small, listpack-encoded) hash once.
local h = redis.call('HGETALL', k)
local ep, ee, t, w, iv, iat = nil, nil, 0, '', nil, nil
local lf, lv = {}, {} -- loan fields and packed values
local flags, nflags = {}, 0
local me = pid .. ':' .. lid
local mine = nil
for i = 1, #h, 2 do
    local f, v = h[i], h[i + 1]
    local c = string.byte(f, 1)
    if #f == 1 then
        if c == 116 then t = tonumber(v) -- 't'
        elseif c == 119 then w = v -- 'w'
        elseif c == 101 then ep, ee = cmsgpack.unpack(v) -- 'e'
        elseif c == 105 then iv, iat = cmsgpack.unpack(v) -- 'i'
        end
    elseif c == 33 then -- '!rule_id' -> open alert json
        flags[string.sub(f, 2)] = v
        nflags = nflags + 1
    else
        lf[#lf + 1] = f
        lv[#lv + 1] = v
        if f == me then mine = #lf end
    end
end

-- Fencing: a writer with an older epoch of the same partition is refused.
if ep == part and epoch < ee then return 3 end
local newfence = (ep ~= part or epoch ~= ee)

-- Alerts this event raised before (it is a redelivery): publish them again.
local function replay_alerts(code)
    if nflags == 0 then return code end
    local res = {code}
    for r, j in pairs(flags) do
        local id = string.sub(redis.sha1hex(bid .. '|' .. r .. '|' .. evid), 1, 32)
        if string.sub(j, 14, 45) == id then res[#res + 1] = j end
    end
    if #res == 1 then return code end
    return res
end

-- Window entries: 16 bytes each, '>I6I6I4' = event time, id hash with the
-- kind in its lowest bit (0 new loan, 1 application), lender hash.
local function hash48(s) return tonumber(string.sub(redis.sha1hex(s), 1, 12), 16) end
local function hash32(s) return tonumber(string.sub(redis.sha1hex(s), 1, 8), 16) end
local nw = #w / 16
local newt = t
if at > newt then newt = at end
local add = nil

local cur = nil
if et == 0 then
    -- APPLICATION: no loan state; counted once by its id.
    local idh = hash48(me)
    idh = idh - idh % 2 + 1
    for i = 0, nw - 1 do
        local _, x = struct.unpack('>I6I6', w, i * 16 + 1)
        if x == idh then return replay_alerts(1) end
    end
    if at > newt - D30 then add = struct.pack('>I6I6I4', at, idh, hash32(lender)) end
else
    if mine then
        local s = cmsgpack.unpack(lv[mine])
        if seq == s then return replay_alerts(1) end
        if seq < s then return replay_alerts(2) end
    elseif (et == 1 or et == 2) and at > newt - D30 then
        -- A DRAWDOWN or CREDIT_LINE that opens a loan we never saw: a new loan.
        local idh = hash48(me)
        add = struct.pack('>I6I6I4', at, idh - idh % 2, hash32(lender))
    end
    local st
    if et == 5 then st = 3
    elseif et == 6 then st = 4
    elseif out > 0 then
        if dpd > 0 then st = 2 else st = 0 end
    else st = 1 end
    local v = cmsgpack.pack(seq, out, lim, dpd, pd, at, st, prod, lender)
    if not mine then
        lf[#lf + 1] = me
        mine = #lf
    end
    lv[mine] = v
    cur = v
end

-- Build the new field set (only what changed).
local hs = {}
if cur then hs[#hs + 1] = me; hs[#hs + 1] = cur end
if newt ~= t then hs[#hs + 1] = 't'; hs[#hs + 1] = string.format('%d', newt) end
if inc ~= '' then
    local n = tonumber(inc)
    if iat == nil or at > iat or (at == iat and n > iv) then
        iv, iat = n, at
        hs[#hs + 1] = 'i'; hs[#hs + 1] = cmsgpack.pack(n, at)
    end
end

-- Prune window entries past 30 days of the borrower's latest event time,
-- add the new one.
local lo = newt - D30
local nwv, keep = {}, 0
local changed = false
for i = 0, nw - 1 do
    local e = string.sub(w, i * 16 + 1, i * 16 + 16)
    local x = struct.unpack('>I6', e)
    if x > lo then nwv[#nwv + 1] = e else changed = true end
end
if add then nwv[#nwv + 1] = add; changed = true end
local hd = nil
if changed then
    w = table.concat(nwv)
    if w == '' then hd = 'w' else hs[#hs + 1] = 'w'; hs[#hs + 1] = w end
end
nw = #w / 16

-- Aggregates over the loans' latest states (derived, not stored).
local total, nact, nlend, pastdue, otherdpd, anydpd = 0, 0, 0, 0, false, false
local lenders = {}
for i = 1, #lf do
    local s, o, l, d, p, u, stt, pr, ld = cmsgpack.unpack(lv[i])
    if stt == 0 or stt == 2 then
        total = total + o
        nact = nact + 1
        pastdue = pastdue + p
        if not lenders[ld] then lenders[ld] = true; nlend = nlend + 1 end
    end
    if d > 0 and stt ~= 4 then
        anydpd = true
        if i ~= mine then otherdpd = true end
    end
end

-- Rules, evaluated on the state after this event (event time only).
local res = nil
local function winlenders(len)
    local seen, n, cnt = {}, 0, 0
    local from = newt - len
    for i = 0, nw - 1 do
        local x, _, lh = struct.unpack('>I6I6I4', w, i * 16 + 1)
        if x > from then
            cnt = cnt + 1
            if not seen[lh] then seen[lh] = true; n = n + 1 end
        end
    end
    return n, cnt
end
local function jstr(s) return cjson.encode(s) end
local function fire(r, limit, wcount, wms, reason)
    local id = string.sub(redis.sha1hex(bid .. '|' .. r.id .. '|' .. evid), 1, 32)
    local incs = 'null'
    if iv then incs = string.format('%d', iv) end
    local j = '{"alert_id":"' .. id .. '","borrower_id":' .. jstr(bid) .. ',"rule_id":' ..
        jstr(r.id) .. ',"rule_version":' .. string.format('%d', r.version) ..
        ',"severity":"' .. r.severity .. '","reason":' .. jstr(reason) ..
        ',"total_outstanding_fen":' .. string.format('%d', total) ..
        ',"active_lenders":' .. string.format('%d', nlend) ..
        ',"active_loans":' .. string.format('%d', nact) ..
        ',"window_count":' .. string.format('%d', wcount) ..
        ',"window_ms":' .. string.format('%d', wms) ..
        ',"annual_income_fen":' .. incs .. ',"limit":' .. string.format('%d', limit) ..
        ',"trigger_event_id":' .. jstr(evid) .. ',"trigger_platform_id":' .. jstr(pid) ..
        ',"trigger_lender_id":' .. jstr(lender) .. ',"raised_at":' .. string.format('%d', at) ..
        '}'
    hs[#hs + 1] = '!' .. r.id
    hs[#hs + 1] = j
    if STREAM then
        redis.call('XADD', KEYS[2], 'MAXLEN', '~', MAXLEN, '*', 'alert_id', id, 'borrower_id', bid,
            'rule_id', r.id, 'severity', r.severity, 'platform_id', pid, 'lender_id', lender,
            'json', j)
    end
    if not res then res = {0} end
    res[#res + 1] = j
end
local hdel = {}
if hd then hdel[1] = hd end
for _, r in ipairs(RULES) do
    local on = flags[r.id] ~= nil
    if r.kind == 1 then -- income_cap
        local cap = r.cap
        if iv then
            local c = math.floor(iv / r.div)
            if c < cap then cap = c end
        end
        local cond = total > cap
        if cond and not on then
            fire(r, cap, 0, 0, string.format('total outstanding %d fen > limit %d fen', total, cap))
        elseif on and not cond then hdel[#hdel + 1] = '!' .. r.id end
    elseif r.kind == 2 then -- multi_lender
        local cond = nlend >= r.n
        if cond and not on then
            fire(r, r.n, 0, 0, string.format('%d distinct active lenders >= %d', nlend, r.n))
        elseif on and not cond then hdel[#hdel + 1] = '!' .. r.id end
    elseif r.kind == 3 then -- stacking
        local n, cnt = winlenders(r.window)
        local cond = n >= r.n
        if cond and not on then
            fire(r, r.n, n, r.window, string.format(
                '%d distinct lenders among %d new loans and applications in %d ms >= %d',
                n, cnt, r.window, r.n))
        elseif on and not cond then hdel[#hdel + 1] = '!' .. r.id end
    elseif r.kind == 4 then -- borrow_while_delinquent
        if et == 2 and otherdpd and not on then
            fire(r, 0, 0, 0, 'drawdown while another loan is past due')
        elseif on and not anydpd then hdel[#hdel + 1] = '!' .. r.id end
    end
end

-- Nothing changed (e.g. an application already pruned from the window, a
-- repeated income): write nothing, not even the fence stamp, and report a
-- duplicate, so "applied" means "changed".
if #hs == 0 and #hdel == 0 then return 1 end
if newfence then hs[#hs + 1] = 'e'; hs[#hs + 1] = cmsgpack.pack(part, epoch) end
redis.call('HSET', k, unpack(hs))
if #hdel > 0 then redis.call('HDEL', k, unpack(hdel)) end
if res then return res end
return 0
