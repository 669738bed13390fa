/*
 * state.c - lw_state_read(): one borrower's exposure, read back from the
 * hash apply.lua writes (layout in consumers/README.md).
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

static bool decode_loan(const char *field, size_t flen, const char *v, size_t vlen,
                        lw_loan_state_t *l)
{
    const char *colon = memchr(field, ':', flen);
    if (!colon || colon == field || (size_t)(colon - field) > LW_ID_MAX ||
        flen - (size_t)(colon - field) - 1 > LW_ID_MAX)
        return false;
    memset(l, 0, sizeof *l);
    memcpy(l->platform_id, field, (size_t)(colon - field));
    memcpy(l->loan_id, colon + 1, flen - (size_t)(colon - field) - 1);
    lw_mp_t m = {(const unsigned char *)v, (const unsigned char *)v + vlen};
    int64_t seq, out, lim, dpd, pd, at, st, prod;
    if (!lw_mp_int(&m, &seq) || !lw_mp_int(&m, &out) || !lw_mp_int(&m, &lim) ||
        !lw_mp_int(&m, &dpd) || !lw_mp_int(&m, &pd) || !lw_mp_int(&m, &at) || !lw_mp_int(&m, &st) ||
        !lw_mp_int(&m, &prod) || !lw_mp_str(&m, l->lender_id, sizeof l->lender_id))
        return false;
    if (st < 0 || st >= LW_LOAN_STATUS__CNT || prod < 0 || prod >= LW_PRODUCT__CNT)
        return false;
    l->sequence = seq;
    l->outstanding_fen = out;
    l->credit_limit_fen = lim;
    l->days_past_due = (int32_t)dpd;
    l->past_due_fen = pd;
    l->updated_at = at;
    l->status = (lw_loan_status_t)st;
    l->product = (lw_product_t)prod;
    return true;
}

static uint64_t be(const unsigned char *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v = (v << 8) | p[i];
    return v;
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
    char key[LW_STATE_KEY_MAX];
    lw_state_key(borrower_id, key, sizeof key);
    redisReply *r = redisCommand(rc, "HGETALL %s", key);
    if (!r) {
        snprintf(errstr, errstr_size, "Redis HGETALL %s: %s", key, rc->errstr);
        return LW_ERR_REDIS;
    }
    if (r->type != REDIS_REPLY_ARRAY || r->elements % 2) {
        snprintf(errstr, errstr_size, "Redis HGETALL %s: %s", key,
                 r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
        freeReplyObject(r);
        return LW_ERR_REDIS;
    }
    if (r->elements == 0) {
        freeReplyObject(r);
        return LW_OK;
    }
    size_t nf = r->elements / 2, nl = 0, na = 0;
    out->loans = calloc(nf, sizeof *out->loans);
    out->open_alerts = calloc(nf, sizeof *out->open_alerts);
    if (!out->loans || !out->open_alerts) {
        freeReplyObject(r);
        lw_borrower_state_clear(out);
        snprintf(errstr, errstr_size, "out of memory");
        return LW_ERR_NOMEM;
    }
    snprintf(out->borrower_id, sizeof out->borrower_id, "%s", borrower_id);
    const char *w = NULL;
    size_t wlen = 0;
    for (size_t i = 0; i < nf; i++) {
        redisReply *f = r->element[2 * i], *v = r->element[2 * i + 1];
        if (f->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING || f->len == 0)
            continue;
        if (f->len == 1) {
            lw_mp_t m = {(const unsigned char *)v->str, (const unsigned char *)v->str + v->len};
            switch (f->str[0]) {
            case 't':
                out->last_event_at = strtoll(v->str, NULL, 10);
                break;
            case 'i': {
                int64_t inc;
                if (lw_mp_int(&m, &inc)) {
                    out->has_annual_income = true;
                    out->annual_income_fen = inc;
                }
                break;
            }
            case 'w':
                w = v->str;
                wlen = v->len;
                break;
            default:
                break;
            }
        } else if (f->str[0] == '!') {
            snprintf(out->open_alerts[na++], LW_ID_MAX + 1, "%s", f->str + 1);
        } else if (decode_loan(f->str, f->len, v->str, v->len, &out->loans[nl])) {
            nl++;
        }
    }
    out->n_loans = nl;
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
    size_t ne = wlen / LW_WIN_ENTRY_LEN;
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
    freeReplyObject(r);
    *found = true;
    return LW_OK;
}
