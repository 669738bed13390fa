-- apply.lua - applies a chunk of loan events, each to its borrower's state
-- atomically, in one script call.
--
-- This is the body of the script loanwire-exposure runs once per chunk of up
-- to --chunk events (EVALSHA). lw_script_build() prepends the rule pack and
-- options as Lua constants (RULES, MAXLEN, STRICT, STREAM), so the rules cost
-- nothing per call and a new rules file simply gives a new script SHA.
-- consumers/README.md documents the key layout; lw_state_read() (state.c) is
-- its only other reader. One call per chunk amortises the EVALSHA overhead
-- (~5 us); events of a chunk are applied one after the other, each reading
-- the state the previous one wrote, so the result equals one call per event.
--
-- KEYS[1..n] lw:b:{borrower} of event i (repeats allowed)
-- KEYS[n+1]  lw:alerts (declared when STREAM or STRICT)
-- KEYS[n+2]  lw:epoch:<t>:<p>, read only when STRICT
-- ARGV[1..3] partition epoch n; then 4 per event:
--            numbers  struct '<BBBi8i8i8i8i4i8i8': type product has_income
--                     sequence occurred_at outstanding limit dpd past_due income
--            loan     '<platform_id>:<loan_id>' (the loan's field name)
--            lender   lender_id
--            event_id
--
-- Returns one entry per event: an integer code (0 applied, 1 duplicate / no
-- change, 2 out of order, 3 fenced) or, when alerts are to be published,
-- {code, alert_json, ...}. A duplicate of an event that raised a still-open
-- alert returns that alert again, so a consumer that crashed before
-- publishing it publishes it on redelivery.
--
-- Numbers: Lua numbers are doubles; every amount is <= 10^13 fen (validated
-- before we get here) so sums of them stay exact; numbers are written with
-- string.format('%d') or as msgpack/struct integers, never with tostring().

local D30 = 2592000000
local NUMFMT = '<BBBi8i8i8i8i4i8i8'
local n = tonumber(ARGV[3])
local part, epoch = tonumber(ARGV[1]), tonumber(ARGV[2])
local out = {}
if STRICT then
    local cur = tonumber(redis.call('GET', KEYS[n + 2]) or '0')
    if epoch < cur then
        for i = 1, n do out[i] = 3 end
        return out
    end
end
local SKEY = KEYS[n + 1]
local sha1hex, sub, byte, fmt = redis.sha1hex, string.sub, string.byte, string.format
local mpack, munpack, sunpack, spack = cmsgpack.pack, cmsgpack.unpack, struct.unpack, struct.pack

-- the borrower id is inside the key's hash tag: lw:b:{<id>}
local function bid_of(k) return sub(k, 7, -2) end
local function platform_of(me) return sub(me, 1, string.find(me, ':', 1, true) - 1) end
local function alert_id(bid, r, evid) return sub(sha1hex(bid .. '|' .. r .. '|' .. evid), 1, 32) end

-- Alerts this event raised before (it is a redelivery): publish them again.
local function replay_alerts(code, flags, k, evid)
    if not flags then return code end
    local res = nil
    local bid = bid_of(k)
    for r, j in pairs(flags) do
        if sub(j, 14, 45) == alert_id(bid, r, evid) then
            if not res then res = {code} end
            res[#res + 1] = j
        end
    end
    return res or code
end

-- Window entries: 16 bytes each, '>I6I6I4' = event time, id hash with the
-- kind in its lowest bit (0 new loan, 1 application), lender hash.
local function hash48(s) return tonumber(sub(sha1hex(s), 1, 12), 16) end
local function hash32(s) return tonumber(sub(sha1hex(s), 1, 8), 16) end

local function winlenders(w, nw, from)
    local seen, nl, cnt = {}, 0, 0
    for i = 0, nw - 1 do
        local x, _, lh = sunpack('>I6I6I4', w, i * 16 + 1)
        if x > from then
            cnt = cnt + 1
            if not seen[lh] then seen[lh] = true; nl = nl + 1 end
        end
    end
    return nl, cnt
end

local jstr = cjson.encode

local function apply1(k, nums, me, lender, evid)
    local et, prod, hasinc, seq, at, o, lim, dpd, pd, incv = sunpack(NUMFMT, nums)

    -- Read the whole (small, listpack-encoded) hash once; aggregate the
    -- other loans on the way (this event's loan is added after the decision).
    local h = redis.call('HGETALL', k)
    local ep, ee, t, w, iv, iat = nil, nil, 0, '', nil, nil
    local flags = nil
    local mine = nil
    local total, nact, pastdue, otherdpd = 0, 0, 0, false
    local lenders, nlend = {}, 0
    for i = 1, #h, 2 do
        local f = h[i]
        if #f == 1 then
            local c = byte(f)
            if c == 116 then t = tonumber(h[i + 1]) -- 't'
            elseif c == 119 then w = h[i + 1] -- 'w'
            elseif c == 101 then ep, ee = munpack(h[i + 1]) -- 'e'
            elseif c == 105 then iv, iat = munpack(h[i + 1]) -- 'i'
            end
        elseif byte(f) == 33 then -- '!rule_id' -> open alert json
            if not flags then flags = {} end
            flags[sub(f, 2)] = h[i + 1]
        elseif f == me then
            mine = h[i + 1]
        else
            local _, lo, _, ld, lp, _, stt, _, lnd = munpack(h[i + 1])
            if stt == 0 or stt == 2 then
                total = total + lo
                nact = nact + 1
                pastdue = pastdue + lp
                if not lenders[lnd] then lenders[lnd] = true; nlend = nlend + 1 end
            end
            if ld > 0 and stt ~= 4 then otherdpd = true end
        end
    end

    -- Fencing: a writer with an older epoch of the same partition is refused.
    if ep == part and epoch < ee then return 3 end
    local newfence = (ep ~= part or epoch ~= ee)

    local nw = #w / 16
    local newt = t
    if at > newt then newt = at end
    local add = nil
    local cur = nil
    local anydpd = otherdpd
    if et == 0 then
        -- APPLICATION: no loan state; counted once by its id.
        local idh = hash48(me)
        idh = idh - idh % 2 + 1
        for i = 0, nw - 1 do
            local _, x = sunpack('>I6I6', w, i * 16 + 1)
            if x == idh then return replay_alerts(1, flags, k, evid) end
        end
        if at > newt - D30 then add = spack('>I6I6I4', at, idh, hash32(lender)) end
        if mine then
            -- a loan field named like the application's id: still aggregate it
            local _, lo, _, ld, lp, _, stt, _, lnd = munpack(mine)
            if stt == 0 or stt == 2 then
                total = total + lo
                nact = nact + 1
                pastdue = pastdue + lp
                if not lenders[lnd] then lenders[lnd] = true; nlend = nlend + 1 end
            end
            if ld > 0 and stt ~= 4 then anydpd = true end
        end
    else
        if mine then
            local s = munpack(mine)
            if seq == s then return replay_alerts(1, flags, k, evid) end
            if seq < s then return replay_alerts(2, flags, k, evid) end
        elseif (et == 1 or et == 2) and at > newt - D30 then
            -- A DRAWDOWN or CREDIT_LINE that opens a loan we never saw: a new loan.
            local idh = hash48(me)
            add = spack('>I6I6I4', at, idh - idh % 2, hash32(lender))
        end
        local st
        if et == 5 then st = 3
        elseif et == 6 then st = 4
        elseif o > 0 then
            if dpd > 0 then st = 2 else st = 0 end
        else st = 1 end
        cur = mpack(seq, o, lim, dpd, pd, at, st, prod, lender)
        if st == 0 or st == 2 then
            total = total + o
            nact = nact + 1
            pastdue = pastdue + pd
            if not lenders[lender] then lenders[lender] = true; nlend = nlend + 1 end
        end
        if dpd > 0 and st ~= 4 then anydpd = true end
    end

    -- Build the new field set (only what changed).
    local hs = {}
    local nh = 0
    if cur then hs[1] = me; hs[2] = cur; nh = 2 end
    if newt ~= t then hs[nh + 1] = 't'; hs[nh + 2] = fmt('%d', newt); nh = nh + 2 end
    if hasinc == 1 then
        if iat == nil or at > iat or (at == iat and incv > iv) then
            iv, iat = incv, at
            hs[nh + 1] = 'i'; hs[nh + 2] = mpack(incv, at); nh = nh + 2
        end
    end

    -- Prune window entries past 30 days of the borrower's latest event time,
    -- add the new one (the common case, nothing to prune, copies nothing).
    local lo = newt - D30
    local hd = nil
    local npruned = 0
    for i = 0, nw - 1 do
        if sunpack('>I6', w, i * 16 + 1) <= lo then npruned = npruned + 1 end
    end
    if npruned > 0 or add then
        local nw2 = w
        if npruned > 0 then
            local keep = {}
            for i = 0, nw - 1 do
                local e = sub(w, i * 16 + 1, i * 16 + 16)
                if sunpack('>I6', e) > lo then keep[#keep + 1] = e end
            end
            nw2 = table.concat(keep)
        end
        if add then nw2 = nw2 .. add end
        w = nw2
        if w == '' then hd = 'w' else hs[nh + 1] = 'w'; hs[nh + 2] = w; nh = nh + 2 end
    end
    nw = #w / 16

    -- Rules, evaluated on the state after this event (event time only).
    local res = nil
    local bid = nil
    local function fire(r, limit, wcount, wms, reason)
        if not bid then bid = bid_of(k) end
        local pid = platform_of(me)
        local id = alert_id(bid, r.id, evid)
        local incs = 'null'
        if iv then incs = fmt('%d', iv) end
        local j = '{"alert_id":"' .. id .. '","borrower_id":' .. jstr(bid) .. ',"rule_id":' ..
            jstr(r.id) .. ',"rule_version":' .. fmt('%d', r.version) ..
            ',"severity":"' .. r.severity .. '","reason":' .. jstr(reason) ..
            ',"total_outstanding_fen":' .. fmt('%d', total) ..
            ',"active_lenders":' .. fmt('%d', nlend) ..
            ',"active_loans":' .. fmt('%d', nact) ..
            ',"window_count":' .. fmt('%d', wcount) ..
            ',"window_ms":' .. fmt('%d', wms) ..
            ',"annual_income_fen":' .. incs .. ',"limit":' .. fmt('%d', limit) ..
            ',"trigger_event_id":' .. jstr(evid) .. ',"trigger_platform_id":' .. jstr(pid) ..
            ',"trigger_lender_id":' .. jstr(lender) .. ',"raised_at":' .. fmt('%d', at) ..
            '}'
        hs[nh + 1] = '!' .. r.id
        hs[nh + 2] = j
        nh = nh + 2
        if STREAM then
            redis.call('XADD', SKEY, 'MAXLEN', '~', MAXLEN, '*', 'alert_id', id, 'borrower_id',
                bid, 'rule_id', r.id, 'severity', r.severity, 'platform_id', pid, 'lender_id',
                lender, 'json', j)
        end
        if not res then res = {0} end
        res[#res + 1] = j
    end
    local hdel = nil
    if hd then hdel = {hd} end
    local function clear(r)
        if not hdel then hdel = {} end
        hdel[#hdel + 1] = '!' .. r.id
    end
    for _, r in ipairs(RULES) do
        local on = flags ~= nil and flags[r.id] ~= nil
        if r.kind == 1 then -- income_cap
            local cap = r.cap
            if iv then
                local c = math.floor(iv / r.div)
                if c < cap then cap = c end
            end
            local cond = total > cap
            if cond and not on then
                fire(r, cap, 0, 0, fmt('total outstanding %d fen > limit %d fen', total, cap))
            elseif on and not cond then clear(r) end
        elseif r.kind == 2 then -- multi_lender
            local cond = nlend >= r.n
            if cond and not on then
                fire(r, r.n, 0, 0, fmt('%d distinct active lenders >= %d', nlend, r.n))
            elseif on and not cond then clear(r) end
        elseif r.kind == 3 then -- stacking
            local nl, cnt = 0, 0
            if nw > 0 then nl, cnt = winlenders(w, nw, newt - r.window) end
            local cond = nl >= r.n
            if cond and not on then
                fire(r, r.n, nl, r.window, fmt(
                    '%d distinct lenders among %d new loans and applications in %d ms >= %d',
                    nl, cnt, r.window, r.n))
            elseif on and not cond then clear(r) end
        elseif r.kind == 4 then -- borrow_while_delinquent
            if et == 2 and otherdpd and not on then
                fire(r, 0, 0, 0, 'drawdown while another loan is past due')
            elseif on and not anydpd then clear(r) end
        end
    end

    -- Nothing changed (e.g. an application already pruned from the window, a
    -- repeated income): write nothing, not even the fence stamp, and report a
    -- duplicate, so "applied" means "changed".
    if nh == 0 and not hdel then return 1 end
    if newfence then hs[nh + 1] = 'e'; hs[nh + 2] = mpack(part, epoch); nh = nh + 2 end
    if nh > 0 then redis.call('HSET', k, unpack(hs)) end
    if hdel then redis.call('HDEL', k, unpack(hdel)) end
    return res or 0
end

for i = 1, n do
    local a = 4 * i
    out[i] = apply1(KEYS[i], ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3])
end
return out
