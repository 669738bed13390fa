-- apply.lua - applies a chunk of loan events, each to its borrower's state
-- atomically, in one script call.
--
-- This is the body of the script loanwire-exposure runs once per chunk of up
-- to --chunk events (EVALSHA). lw_script_build() prepends the rule pack and
-- options as Lua constants (RULES, MAXLEN, STRICT, STREAM), so the rules cost
-- nothing per call and a new rules file simply gives a new script SHA.
-- consumers/README.md documents the key layout byte for byte; lw_state_read()
-- (state.c) is its only other reader. One call per chunk amortises the
-- EVALSHA overhead (~5 us); events of a chunk are applied one after the
-- other, each reading the state the previous one wrote, so the result equals
-- one call per event.
--
-- A borrower is ONE packed string b:{<id>}, read with GET and written with one
-- SET only when something changed: a msgpack sequence (header numbers, the
-- window entries, one flat array of the loans) that cmsgpack decodes and
-- encodes in one C call each, so the per-event Lua work stays a loop over a
-- few table slots. Open alerts live apart in the hash a:{<id>} (rule id
-- -> alert JSON), touched only when an alert fires or clears, or when a
-- redelivered event must publish its alert again; the header's bit mask says
-- which rules are open, so the hot path never reads that hash.
--
-- KEYS[1..n] b:{borrower} of event i (repeats allowed)
-- KEYS[n+1]  lw:alerts (declared when STREAM or STRICT)
-- KEYS[n+2]  lw:epoch:<t>:<p>, read only when STRICT
-- ARGV[1..3] partition epoch n; then 4 per event:
--            numbers  struct '<BBBi8i8i8i8i4i8i8I6I4': type product has_income
--                     sequence occurred_at outstanding limit dpd past_due income,
--                     then for APPLICATION / CREDIT_LINE / DRAWDOWN the window
--                     hashes the consumer computed (first 48 bits of SHA1 of
--                     the loan, first 32 of SHA1 of lender_id), else 0 0
--            loan     '<platform_id>:<loan_id>'
--            lender   lender_id
--            event_id
--
-- Returns one entry per event: an integer code (0 applied, 1 duplicate / no
-- change, 2 out of order, 3 fenced) or, when alerts are to be published,
-- {code, alert_json, ...}. A duplicate of an event that raised a still-open
-- alert returns that alert again, so a consumer that crashed before
-- publishing it publishes it on redelivery.
--
-- Numbers: Lua numbers are doubles; every amount is <= 10^13 fen and every
-- stored number is < 2^53 (validated before we get here), so sums stay exact;
-- numbers are written as msgpack or struct integers or with
-- string.format('%d'), never with tostring().

local D30 = 2592000000
local NUMFMT = '<BBBi8i8i8i8i4i8i8I6I4'
local VERSION = 1
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
local sha1hex, sub, fmt = redis.sha1hex, string.sub, string.format
local sunpack, spack, concat = struct.unpack, struct.pack, table.concat
local mpack, munpack = cmsgpack.pack, cmsgpack.unpack

-- Rule i owns bit i-1 of the header's open-alert mask. HIST says a:{..}
-- holds something (an open alert, or the last cleared one of a rule, kept
-- under "~<rule>" so a redelivered trigger can publish it again).
for i, r in ipairs(RULES) do r.bit = 2 ^ (i - 1) end
local HIST = 2 ^ 30

-- the borrower id is inside the key's hash tag: b:{<id>}
local function bid_of(k) return sub(k, 4, -2) end
local function akey_of(k) return 'a:' .. sub(k, 3) end
local function platform_of(me) return sub(me, 1, string.find(me, ':', 1, true) - 1) end
local function alert_id(bid, r, evid) return sub(sha1hex(bid .. '|' .. r .. '|' .. evid), 1, 32) end

-- Alerts this event raised before (it is a redelivery): publish them again,
-- open or cleared since: a crash may have lost the first publication of an
-- alert that a later event of the same batch cleared. Only borrowers that
-- ever had an alert (mask ~= 0) read their alert hash.
local function replay_alerts(code, mask, k, evid)
    if mask == 0 then return code end
    local h = redis.call('HGETALL', akey_of(k))
    local res = nil
    local bid = bid_of(k)
    for i = 1, #h, 2 do
        local j, rid = h[i + 1], h[i]
        if string.byte(rid, 1) == 126 then rid = sub(rid, 2) end -- '~rule': cleared
        if sub(j, 14, 45) == alert_id(bid, rid, evid) then
            if not res then res = {code} end
            res[#res + 1] = j
        end
    end
    return res or code
end

-- Window entries: 16 bytes each, '>I6I6I4' = event time, id hash with the
-- kind in its lowest bit (0 new loan, 1 application), lender hash.

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
    local et, prod, hasinc, seq, at, o, lim, dpd, pd, incv, h48, h32 = sunpack(NUMFMT, nums)

    -- One GET, one C call decodes it all (layout in consumers/README.md):
    -- version, t, open-alert mask, fence partition and epoch, window entries,
    -- the loans (8 values each, flat), [income, its time].
    local s = redis.call('GET', k)
    local ver, t, mask, ep, ee, w, L, iv, iat = VERSION, 0, 0, nil, nil, '', nil, nil, nil
    if s then
        ver, t, mask, ep, ee, w, L, iv, iat = munpack(s)
        if ver ~= VERSION then
            error('borrower state ' .. k .. ': unknown layout version ' .. tostring(ver))
        end
    else
        L = {}
    end

    -- Fencing: a writer with an older epoch of the same partition is refused.
    if ep == part and epoch < ee then return 3 end

    -- Aggregate the other loans; find this event's loan (an application keeps
    -- no loan state, so it has none). A loan: me ('platform:loan'), lender,
    -- sd (dpd * 32 + product * 8 + status), outstanding, past_due, sequence,
    -- limit, dt (t - updated_at).
    local total, nact, pastdue, otherdpd = 0, 0, 0, false
    local lenders, nlend = {}, 0
    local mi = nil
    local nl = #L
    for i = 1, nl, 8 do
        if et ~= 0 and L[i] == me then
            mi = i
        else
            local sd = L[i + 2]
            local stt = sd % 8
            if stt == 0 or stt == 2 then
                total = total + L[i + 3]
                nact = nact + 1
                pastdue = pastdue + L[i + 4]
                local lnd = L[i + 1]
                if not lenders[lnd] then lenders[lnd] = true; nlend = nlend + 1 end
            end
            if sd >= 32 and stt ~= 4 then otherdpd = true end
        end
    end

    local nw = #w / 16
    local newt = t
    if at > newt then newt = at end
    local add = nil
    local changed = newt ~= t
    local anydpd = otherdpd
    if et == 0 then
        -- APPLICATION: no loan state; counted once by its id.
        local idh = h48 - h48 % 2 + 1
        for i = 0, nw - 1 do
            local _, x = sunpack('>I6I6', w, i * 16 + 1)
            if x == idh then return replay_alerts(1, mask, k, evid) end
        end
        if at > newt - D30 then add = spack('>I6I6I4', at, idh, h32) end
    else
        if mi then
            local sq = L[mi + 5]
            if seq == sq then return replay_alerts(1, mask, k, evid) end
            if seq < sq then return replay_alerts(2, mask, k, evid) end
        else
            if (et == 1 or et == 2) and at > newt - D30 then
                -- A DRAWDOWN or CREDIT_LINE that opens a loan we never saw: a new loan.
                add = spack('>I6I6I4', at, h48 - h48 % 2, h32)
            end
            mi = nl + 1
            L[mi] = me
        end
        local st
        if et == 5 then st = 3
        elseif et == 6 then st = 4
        elseif o > 0 then
            if dpd > 0 then st = 2 else st = 0 end
        else st = 1 end
        -- dt is relative to t (small numbers pack small), so it is set after
        -- the t shift below: keep at for now
        L[mi + 1], L[mi + 2], L[mi + 3], L[mi + 4], L[mi + 5], L[mi + 6], L[mi + 7] =
            lender, dpd * 32 + prod * 8 + st, o, pd, seq, lim, t - at
        changed = true
        if st == 0 or st == 2 then
            total = total + o
            nact = nact + 1
            pastdue = pastdue + pd
            if not lenders[lender] then lenders[lender] = true; nlend = nlend + 1 end
        end
        if dpd > 0 and st ~= 4 then anydpd = true end
    end

    if hasinc == 1 then
        if iat == nil or at > iat or (at == iat and incv > iv) then
            iv, iat = incv, at
            changed = true
        end
    end

    -- Prune window entries past 30 days of the borrower's latest event time,
    -- add the new one (the common case, nothing to prune, copies nothing).
    local lo = newt - D30
    local npruned = 0
    for i = 0, nw - 1 do
        if sunpack('>I6', w, i * 16 + 1) <= lo then npruned = npruned + 1 end
    end
    if npruned > 0 or add then
        if npruned > 0 then
            local keep = {}
            for i = 0, nw - 1 do
                local e = sub(w, i * 16 + 1, i * 16 + 16)
                if sunpack('>I6', e) > lo then keep[#keep + 1] = e end
            end
            w = concat(keep)
        end
        if add then w = w .. add end
        changed = true
    end
    nw = #w / 16

    -- Rules, evaluated on the state after this event (event time only).
    local res = nil
    local bid = nil
    local akey = nil
    local newmask = mask
    local function fire(r, limit, wcount, wms, reason)
        if not bid then bid = bid_of(k); akey = akey_of(k) end
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
        redis.call('HSET', akey, r.id, j)
        newmask = newmask + r.bit
        if newmask < HIST then newmask = newmask + HIST end
        if STREAM then
            redis.call('XADD', SKEY, 'MAXLEN', '~', MAXLEN, '*', 'alert_id', id, 'borrower_id',
                bid, 'rule_id', r.id, 'severity', r.severity, 'platform_id', pid, 'lender_id',
                lender, 'json', j)
        end
        if not res then res = {0} end
        res[#res + 1] = j
    end
    local function clear(r)
        local ak = akey_of(k)
        local j = redis.call('HGET', ak, r.id)
        if j then redis.call('HSET', ak, '~' .. r.id, j) end
        redis.call('HDEL', ak, r.id)
        newmask = newmask - r.bit
    end
    for _, r in ipairs(RULES) do
        local on = mask % (2 * r.bit) >= r.bit
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
    if not changed and newmask == mask then return 1 end

    -- t moved: every loan's dt grows by as much (this event's loan included:
    -- its dt was set relative to the old t above).
    local delta = newt - t
    if delta ~= 0 then
        for i = 8, #L, 8 do L[i] = L[i] + delta end
    end
    if iv then
        redis.call('SET', k, mpack(VERSION, newt, newmask, part, epoch, w, L, iv, iat))
    else
        redis.call('SET', k, mpack(VERSION, newt, newmask, part, epoch, w, L))
    end
    return res or 0
end

for i = 1, n do
    local a = 4 * i
    out[i] = apply1(KEYS[i], ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3])
end
return out
