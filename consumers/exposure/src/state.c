/*
 * state.c - lw_state_read(): one borrower's exposure, read back from the
 * packed string apply.lua writes (byte layout in consumers/README.md) and the
 * borrower's open-alert hash.
 *
 * Totals and window counts are not stored; they are derived here exactly as
 * apply.lua derives them for its rules (active = ACTIVE or DELINQUENT; a
 * window counts entries with event time > last_event_at - window).
 */
#include "exposure_int.h"

#include "loanwire/id.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *status_names[LW_LOAN_STATUS__CNT] = {"ACTIVE", "PAID", "DELINQUENT",
                                                        "WRITTEN_OFF", "CLOSED"};

const char *lw_loan_status_name(lw_loan_status_t s)
{
    return (int)s >= 0 && s < LW_LOAN_STATUS__CNT ? status_names[s] : NULL;
}

void lw_borrower_state_clear(lw_borrower_state_t *st)
{
    if (!st)
        return;
    free(st->loans);
    free(st->open_alerts);
    memset(st, 0, sizeof *st);
}

/* A cursor over the packed string (the msgpack subset cmsgpack writes for
 * integers, strings, nil and arrays); every read checks the bounds, so a
 * malformed value is an error, never an overrun. */
typedef struct cur {
    const unsigned char *p, *end;
} cur_t;

static bool need(const cur_t *c, size_t n)
{
    return (size_t)(c->end - c->p) >= n;
}

static uint64_t be(const unsigned char *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v = (v << 8) | p[i];
    return v;
}

/* Any msgpack integer, or an integral float64 (cmsgpack never writes one for
 * our numbers, but it is a valid encoding of one). */
static bool mp_int(cur_t *c, int64_t *out)
{
    if (!need(c, 1))
        return false;
    unsigned char t = *c->p++;
    if (t <= 0x7f) {
        *out = t;
        return true;
    }
    if (t >= 0xe0) {
        *out = (int8_t)t;
        return true;
    }
    int n;
    bool sign = false, dbl = false;
    switch (t) {
    case 0xcc:
        n = 1;
        break;
    case 0xcd:
        n = 2;
        break;
    case 0xce:
        n = 4;
        break;
    case 0xcf:
        n = 8;
        break;
    case 0xd0:
        n = 1;
        sign = true;
        break;
    case 0xd1:
        n = 2;
        sign = true;
        break;
    case 0xd2:
        n = 4;
        sign = true;
        break;
    case 0xd3:
        n = 8;
        sign = true;
        break;
    case 0xcb:
        n = 8;
        dbl = true;
        break;
    default:
        return false;
    }
    if (!need(c, (size_t)n))
        return false;
    uint64_t v = be(c->p, n);
    c->p += n;
    if (dbl) {
        double d;
        memcpy(&d, &v, sizeof d);
        if (!(d >= -9007199254740992.0 && d <= 9007199254740992.0) || d != (double)(int64_t)d)
            return false;
        *out = (int64_t)d;
    } else if (sign) {
        int shift = 64 - 8 * n;
        *out = (int64_t)(v << shift) >> shift;
    } else {
        if (v > INT64_MAX)
            return false;
        *out = (int64_t)v;
    }
    return true;
}

/* A string: pointer into the value and its length. */
static bool mp_str(cur_t *c, const unsigned char **str, size_t *len)
{
    if (!need(c, 1))
        return false;
    unsigned char t = *c->p++;
    size_t n;
    if ((t & 0xe0) == 0xa0) {
        n = t & 0x1f;
    } else if ((t == 0xd9 || t == 0xc4) && need(c, 1)) {
        n = be(c->p, 1);
        c->p += 1;
    } else if ((t == 0xda || t == 0xc5) && need(c, 2)) {
        n = be(c->p, 2);
        c->p += 2;
    } else if ((t == 0xdb || t == 0xc6) && need(c, 4)) {
        n = be(c->p, 4);
        c->p += 4;
    } else {
        return false;
    }
    if (!need(c, n))
        return false;
    *str = c->p;
    *len = n;
    c->p += n;
    return true;
}

static bool mp_array(cur_t *c, size_t *n)
{
    if (!need(c, 1))
        return false;
    unsigned char t = *c->p++;
    if ((t & 0xf0) == 0x90) {
        *n = t & 0x0f;
    } else if (t == 0xdc && need(c, 2)) {
        *n = be(c->p, 2);
        c->p += 2;
    } else if (t == 0xdd && need(c, 4)) {
        *n = be(c->p, 4);
        c->p += 4;
    } else {
        return false;
    }
    return true;
}

static bool copy_id(const unsigned char *s, size_t n, char *buf)
{
    if (n == 0 || n > LW_ID_MAX)
        return false;
    memcpy(buf, s, n);
    buf[n] = '\0';
    return true;
}

/* One loan: 8 array slots - me ('platform:loan'), lender, sd (dpd * 32 +
 * product * 8 + status), outstanding, past_due, sequence, limit, t - updated_at. */
static bool decode_loan(cur_t *c, int64_t t, lw_loan_state_t *l)
{
    const unsigned char *me, *lender;
    size_t mlen, llen;
    int64_t sd, out, pd, seq, lim, dt;
    memset(l, 0, sizeof *l);
    if (!mp_str(c, &me, &mlen) || !mp_str(c, &lender, &llen) || !mp_int(c, &sd) ||
        !mp_int(c, &out) || !mp_int(c, &pd) || !mp_int(c, &seq) || !mp_int(c, &lim) ||
        !mp_int(c, &dt))
        return false;
    const unsigned char *colon = memchr(me, ':', mlen);
    if (!colon || !copy_id(me, (size_t)(colon - me), l->platform_id) ||
        !copy_id(colon + 1, mlen - (size_t)(colon - me) - 1, l->loan_id) ||
        !copy_id(lender, llen, l->lender_id))
        return false;
    if (sd < 0 || (sd & 7) >= LW_LOAN_STATUS__CNT || ((sd >> 3) & 3) >= LW_PRODUCT__CNT ||
        (sd >> 5) > INT32_MAX || dt < 0 || dt > t)
        return false;
    l->status = (lw_loan_status_t)(sd & 7);
    l->product = (lw_product_t)((sd >> 3) & 3);
    l->days_past_due = (int32_t)(sd >> 5);
    l->sequence = seq;
    l->outstanding_fen = out;
    l->credit_limit_fen = lim;
    l->past_due_fen = pd;
    l->updated_at = t - dt;
    return true;
}

/* Decodes the string into out (loans allocated here): LW_OK, LW_ERR_PARSE
 * (malformed or another layout version) or LW_ERR_NOMEM. */
static lw_err_t decode_state(const unsigned char *s, size_t len, lw_borrower_state_t *out,
                             const unsigned char **w, size_t *nw)
{
    cur_t c = {s, s + len};
    int64_t ver, mask, fpart, fepoch;
    const unsigned char *ws;
    size_t wlen, nslots;
    if (!mp_int(&c, &ver) || ver != LW_STATE_VERSION || !mp_int(&c, &out->last_event_at) ||
        !mp_int(&c, &mask) || !mp_int(&c, &fpart) || !mp_int(&c, &fepoch) ||
        !mp_str(&c, &ws, &wlen) || wlen % LW_WIN_ENTRY_LEN || !mp_array(&c, &nslots) || nslots % 8)
        return LW_ERR_PARSE;
    *w = ws;
    *nw = wlen / LW_WIN_ENTRY_LEN;
    /* a loan is at least 10 bytes: a corrupt count cannot make us allocate much */
    if (nslots / 8 > len / 10)
        return LW_ERR_PARSE;
    if (nslots) {
        out->loans = calloc(nslots / 8, sizeof *out->loans);
        if (!out->loans)
            return LW_ERR_NOMEM;
    }
    for (size_t i = 0; i < nslots / 8; i++)
        if (!decode_loan(&c, out->last_event_at, &out->loans[i]))
            return LW_ERR_PARSE;
    out->n_loans = nslots / 8;
    if (c.p < c.end) {
        int64_t iat;
        if (!mp_int(&c, &out->annual_income_fen) || !mp_int(&c, &iat))
            return LW_ERR_PARSE;
        out->has_annual_income = true;
    }
    return c.p == c.end ? LW_OK : LW_ERR_PARSE;
}

lw_err_t lw_state_read(redisContext *rc, const char *borrower_id, lw_borrower_state_t *out,
                       bool *found, char *errstr, size_t errstr_size)
{
    memset(out, 0, sizeof *out);
    *found = false;
    if (!borrower_id || !lw_borrower_id_is_valid(borrower_id)) {
        snprintf(errstr, errstr_size, "borrower id '%s': expected 22 base64url characters",
                 borrower_id ? borrower_id : "(null)");
        return LW_ERR_INVALID_ARG;
    }
    if (!rc) {
        snprintf(errstr, errstr_size, "no Redis connection");
        return LW_ERR_REDIS;
    }
    char key[LW_STATE_KEY_MAX], akey[LW_STATE_KEY_MAX];
    lw_state_key(borrower_id, key, sizeof key);
    lw_alerts_key(borrower_id, akey, sizeof akey);
    /* one round trip: the state string and the open alerts' rule ids */
    redisReply *r = NULL, *a = NULL;
    if (redisAppendCommand(rc, "GET %s", key) != REDIS_OK ||
        redisAppendCommand(rc, "HKEYS %s", akey) != REDIS_OK ||
        redisGetReply(rc, (void **)&r) != REDIS_OK || redisGetReply(rc, (void **)&a) != REDIS_OK) {
        snprintf(errstr, errstr_size, "Redis GET %s: %s", key, rc->errstr);
        freeReplyObject(r);
        return LW_ERR_REDIS;
    }
    lw_err_t err = LW_OK;
    if ((r->type != REDIS_REPLY_STRING && r->type != REDIS_REPLY_NIL) ||
        a->type != REDIS_REPLY_ARRAY) {
        redisReply *bad = r->type == REDIS_REPLY_ERROR ? r : a;
        snprintf(errstr, errstr_size, "Redis GET %s / HKEYS %s: %s", key, akey,
                 bad->type == REDIS_REPLY_ERROR ? bad->str : "unexpected reply");
        err = LW_ERR_REDIS;
        goto done;
    }
    if (r->type == REDIS_REPLY_NIL)
        goto done;
    snprintf(out->borrower_id, sizeof out->borrower_id, "%s", borrower_id);
    const unsigned char *w = NULL;
    size_t ne = 0;
    err = decode_state((const unsigned char *)r->str, r->len, out, &w, &ne);
    if (err != LW_OK) {
        if (err == LW_ERR_NOMEM)
            snprintf(errstr, errstr_size, "out of memory");
        else
            snprintf(errstr, errstr_size,
                     "borrower state %s: malformed value (%zu bytes; not layout version %d)", key,
                     r->len, LW_STATE_VERSION);
        lw_borrower_state_clear(out);
        err = err == LW_ERR_NOMEM ? err : LW_ERR_REDIS;
        goto done;
    }
    size_t na = 0;
    if (a->elements) {
        out->open_alerts = calloc(a->elements, sizeof *out->open_alerts);
        if (!out->open_alerts) {
            lw_borrower_state_clear(out);
            snprintf(errstr, errstr_size, "out of memory");
            err = LW_ERR_NOMEM;
            goto done;
        }
        for (size_t i = 0; i < a->elements; i++)
            if (a->element[i]->type == REDIS_REPLY_STRING && a->element[i]->len <= LW_ID_MAX &&
                a->element[i]->str[0] != '~') /* "~rule": a cleared alert, kept for replay */
                snprintf(out->open_alerts[na++], LW_ID_MAX + 1, "%s", a->element[i]->str);
    }
    size_t nl = out->n_loans;
    out->n_open_alerts = na;

    /* Aggregates over active loans, as apply.lua computes them. */
    for (size_t i = 0; i < nl; i++) {
        const lw_loan_state_t *l = &out->loans[i];
        if (l->status != LW_LOAN_ACTIVE && l->status != LW_LOAN_DELINQUENT)
            continue;
        out->total_outstanding_fen += l->outstanding_fen;
        out->active_loans++;
        out->past_due_fen += l->past_due_fen;
        bool seen_lender = false, seen_platform = false;
        for (size_t j = 0; j < i; j++) {
            const lw_loan_state_t *o = &out->loans[j];
            if (o->status != LW_LOAN_ACTIVE && o->status != LW_LOAN_DELINQUENT)
                continue;
            seen_lender |= !strcmp(o->lender_id, l->lender_id);
            seen_platform |= !strcmp(o->platform_id, l->platform_id);
        }
        out->active_lenders += !seen_lender;
        out->active_platforms += !seen_platform;
    }

    /* Windows, relative to the borrower's latest event time. */
    static const int64_t wl[LW_WIN__CNT] = {LW_WINDOW_24H, LW_WINDOW_7D, LW_WINDOW_30D};
    for (int k = 0; k < LW_WIN__CNT; k++) {
        int64_t from = out->last_event_at - wl[k];
        uint32_t seen[256];
        size_t nseen = 0;
        for (size_t e = 0; e < ne; e++) {
            const unsigned char *p = (const unsigned char *)w + e * LW_WIN_ENTRY_LEN;
            int64_t at = (int64_t)be(p, 6);
            uint64_t idh = be(p + 6, 6);
            uint32_t lh = (uint32_t)be(p + 12, 4);
            if (at <= from)
                continue;
            if (idh & 1)
                out->applications[k]++;
            else
                out->new_loans[k]++;
            bool dup = false;
            for (size_t s = 0; s < nseen; s++)
                dup |= seen[s] == lh;
            if (!dup && nseen < sizeof seen / sizeof seen[0])
                seen[nseen++] = lh;
        }
        out->distinct_lenders[k] = (int32_t)nseen;
    }
    *found = true;
done:
    freeReplyObject(r);
    freeReplyObject(a);
    return err;
}
