/*
 * state.c - lw_state_read(): one borrower's exposure, read back from the
 * state string loanwire-exposure writes (borrower.c; byte layout in
 * consumers/README.md) and the borrower's open-alert hash.
 *
 * Totals and window counts are not stored; they are derived here exactly as
 * borrower.c derives them for its rules (active = ACTIVE or DELINQUENT; a
 * window counts entries with event time > last_event_at - window).
 *
 * Redis is reached through lw_rcluster, so a single Redis and a cluster take
 * the same path: the borrower's two keys share its hash tag, hence a slot,
 * and go as one group (one round trip to the master of that slot); the names
 * come from lw:strings, a key of its own slot, in a second call routed there.
 */
#include "state_int.h"

#include "loanwire/id.h"

#include <inttypes.h>
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

/* Decodes the string into out (loans allocated here), naming platforms and
 * lenders through d (dict.c's table; ids it already knows cost no round
 * trip): LW_OK, LW_ERR_PARSE (malformed or another
 * layout version), LW_ERR_REDIS (an id Redis cannot name) or LW_ERR_NOMEM. */
static lw_err_t decode_state(lw_dict_t *d, lw_rcluster_t *cl, const char *s, size_t len,
                             lw_borrower_state_t *out, lw_bstate_t *bs, char *errstr,
                             size_t errstr_size)
{
    lw_err_t err = lw_bstate_decode(bs, s, len);
    if (err)
        return err;
    out->last_event_at = bs->t;
    out->has_annual_income = bs->has_income;
    out->annual_income_fen = bs->income_fen;
    /* the last inquiries shown, newest first (the state keeps them oldest first) */
    size_t nq = bs->n_inq < LW_STATE_INQUIRIES_SHOWN ? bs->n_inq : LW_STATE_INQUIRIES_SHOWN;
    if (bs->n_loans == 0 && nq == 0)
        return LW_OK;
    out->loans = bs->n_loans ? calloc(bs->n_loans, sizeof *out->loans) : NULL;
    uint32_t *ids = malloc((2 * bs->n_loans + nq) * sizeof *ids);
    if ((bs->n_loans && !out->loans) || !ids) {
        err = LW_ERR_NOMEM;
        goto done;
    }
    for (size_t i = 0; i < bs->n_loans; i++) {
        ids[2 * i] = bs->loans[i].platform;
        ids[2 * i + 1] = bs->loans[i].lender;
    }
    for (size_t i = 0; i < nq; i++)
        ids[2 * bs->n_loans + i] = bs->inq[bs->n_inq - 1 - i].institution;
    if ((err = lw_dict_resolve(d, cl, ids, 2 * bs->n_loans + nq, errstr, errstr_size)) != LW_OK) {
        err = err == LW_ERR_NOMEM ? err : LW_ERR_REDIS;
        goto done;
    }
    for (size_t i = 0; i < bs->n_loans; i++) {
        const lw_bloan_t *b = &bs->loans[i];
        lw_loan_state_t *l = &out->loans[i];
        snprintf(l->platform_id, sizeof l->platform_id, "%s", lw_dict_name(d, b->platform));
        snprintf(l->lender_id, sizeof l->lender_id, "%s", lw_dict_name(d, b->lender));
        snprintf(l->loan_id, sizeof l->loan_id, "%s", b->loan_id);
        l->product = b->product;
        l->status = b->status;
        l->sequence = b->sequence;
        l->outstanding_fen = b->outstanding_fen;
        l->credit_limit_fen = b->credit_limit_fen;
        l->days_past_due = b->days_past_due;
        l->past_due_fen = b->past_due_fen;
        l->updated_at = b->updated_at;
    }
    out->n_loans = bs->n_loans;
    for (size_t i = 0; i < nq; i++) {
        const lw_binq_t *q = &bs->inq[bs->n_inq - 1 - i];
        lw_inquiry_state_t *o = &out->inquiries[i];
        snprintf(o->institution_id, sizeof o->institution_id, "%s",
                 lw_dict_name(d, q->institution));
        o->purpose = (lw_inquiry_purpose_t)q->purpose;
        o->inquired_at = q->at;
    }
    out->n_inquiries = nq;
done:
    free(ids);
    return err;
}

/* The inquiry figures (issue 20), as borrower.c's inquiry_spree counts them:
 * approval purposes only, by event time relative to last_event_at. */
static lw_err_t derive_inquiries(const lw_bstate_t *bs, lw_borrower_state_t *out, char *errstr,
                                 size_t errstr_size)
{
    lw_kset_t inst;
    if (!lw_kset_init(&inst, bs->n_inq)) {
        snprintf(errstr, errstr_size, "out of memory");
        return LW_ERR_NOMEM;
    }
    out->inquiries_30d = out->inquiries_90d = 0;
    for (size_t i = 0; i < bs->n_inq; i++) {
        const lw_binq_t *q = &bs->inq[i];
        if (!lw_purpose_is_approval((lw_inquiry_purpose_t)q->purpose))
            continue;
        if (q->at > out->last_event_at - LW_WINDOW_90D)
            out->inquiries_90d++;
        if (q->at > out->last_event_at - LW_WINDOW_30D) {
            out->inquiries_30d++;
            lw_kset_add(&inst, q->institution);
        }
    }
    out->inquiry_institutions_30d = (int32_t)inst.n;
    lw_kset_free(&inst);
    return LW_OK;
}

/* Totals and window counts from a decoded state, as lw_bstate_apply()
 * computes them for its rules: sums checked (a state string is data read
 * back; thousands of amounts near 2^53 pass INT64_MAX: LW_ERR_REDIS, so the
 * API answers 503 and logs errstr), distinct lenders and platforms by their
 * string ids, and a window's distinct lenders by their hashes, each in one
 * pass through a hash set, uncapped. */
lw_err_t lw_state_derive(const lw_bstate_t *bs, lw_borrower_state_t *out, const char *what,
                         char *errstr, size_t errstr_size)
{
    lw_kset_t lenders, platforms;
    bool have_l = lw_kset_init(&lenders, bs->n_loans),
         have_p = lw_kset_init(&platforms, bs->n_loans);
    bool overflow = false;
    out->last_event_at = bs->t;
    out->total_outstanding_fen = out->past_due_fen = 0;
    out->active_loans = out->active_lenders = out->active_platforms = 0;
    if (!have_l || !have_p) {
        if (have_l)
            lw_kset_free(&lenders);
        if (have_p)
            lw_kset_free(&platforms);
        snprintf(errstr, errstr_size, "out of memory");
        return LW_ERR_NOMEM;
    }
    for (size_t i = 0; i < bs->n_loans && !overflow; i++) {
        const lw_bloan_t *l = &bs->loans[i];
        if (l->status != LW_LOAN_ACTIVE && l->status != LW_LOAN_DELINQUENT)
            continue;
        overflow = __builtin_add_overflow(out->total_outstanding_fen, l->outstanding_fen,
                                          &out->total_outstanding_fen) ||
                   __builtin_add_overflow(out->past_due_fen, l->past_due_fen, &out->past_due_fen);
        out->active_loans++;
        lw_kset_add(&lenders, l->lender);
        lw_kset_add(&platforms, l->platform);
    }
    out->active_lenders = (int32_t)lenders.n;
    out->active_platforms = (int32_t)platforms.n;
    lw_kset_free(&lenders);
    lw_kset_free(&platforms);
    if (overflow) {
        snprintf(errstr, errstr_size,
                 "borrower state %s: the total outstanding or past due of its %zu loans exceeds "
                 "%" PRId64 " fen (int64); refusing to report it",
                 what, bs->n_loans, INT64_MAX);
        return LW_ERR_REDIS;
    }

    /* Windows, relative to the borrower's latest event time. */
    static const int64_t wl[LW_WIN__CNT] = {LW_WINDOW_24H, LW_WINDOW_7D, LW_WINDOW_30D};
    for (int k = 0; k < LW_WIN__CNT; k++) {
        int64_t from = out->last_event_at - wl[k];
        lw_kset_t seen;
        if (!lw_kset_init(&seen, bs->n_win)) {
            snprintf(errstr, errstr_size, "out of memory");
            return LW_ERR_NOMEM;
        }
        out->applications[k] = out->new_loans[k] = 0;
        for (size_t e = 0; e < bs->n_win; e++) {
            if (bs->win[e].at <= from)
                continue;
            if (bs->win[e].idh & 1)
                out->applications[k]++;
            else
                out->new_loans[k]++;
            lw_kset_add(&seen, bs->win[e].lh);
        }
        out->distinct_lenders[k] = (int32_t)seen.n;
        lw_kset_free(&seen);
    }
    return derive_inquiries(bs, out, errstr, errstr_size);
}

static int rule_cmp(const void *a, const void *b)
{
    return strcmp(a, b);
}

lw_err_t lw_state_read(lw_rcluster_t *cl, const char *borrower_id, lw_borrower_state_t *out,
                       bool *found, char *errstr, size_t errstr_size)
{
    memset(out, 0, sizeof *out);
    *found = false;
    if (!borrower_id || !lw_borrower_id_is_valid(borrower_id)) {
        snprintf(errstr, errstr_size, "borrower id '%s': expected 22 base64url characters",
                 borrower_id ? borrower_id : "(null)");
        return LW_ERR_INVALID_ARG;
    }
    if (!cl) {
        snprintf(errstr, errstr_size, "no Redis connection");
        return LW_ERR_REDIS;
    }
    char key[LW_STATE_KEY_MAX], akey[LW_STATE_KEY_MAX];
    lw_state_key(borrower_id, key, sizeof key);
    lw_alerts_key(borrower_id, akey, sizeof akey);
    /* one group, one round trip: the state string and the open alerts' rule
     * ids, both in the borrower's slot */
    lw_rcluster_batch_t *bat = lw_rcluster_batch_new(cl);
    if (!bat) {
        snprintf(errstr, errstr_size, "out of memory");
        return LW_ERR_NOMEM;
    }
    const redisReply *r = NULL, *a = NULL;
    char why[256] = "";
    lw_rcluster_err_t ce = LW_RCLUSTER_ERR_NOMEM;
    if (lw_rcluster_batch_group(bat, lw_rcluster_keyslot(key, strlen(key))) >= 0 &&
        lw_rcluster_batch_appendf(bat, "GET %s", key) == LW_RCLUSTER_OK &&
        lw_rcluster_batch_appendf(bat, "HKEYS %s", akey) == LW_RCLUSTER_OK &&
        (ce = lw_rcluster_batch_send(bat, why, sizeof why)) == LW_RCLUSTER_OK)
        ce = lw_rcluster_batch_recv(bat, why, sizeof why);
    if (ce == LW_RCLUSTER_OK) {
        r = lw_rcluster_group_reply(bat, 0, 0);
        a = lw_rcluster_group_reply(bat, 0, 1);
    }
    if (!r || !a) {
        snprintf(errstr, errstr_size, "Redis GET %s: %s", key,
                 why[0] ? why : lw_rcluster_err2str(ce ? ce : LW_RCLUSTER_ERR_IO));
        lw_rcluster_batch_destroy(bat);
        return ce == LW_RCLUSTER_ERR_NOMEM ? LW_ERR_NOMEM : LW_ERR_REDIS;
    }
    lw_dict_t *d = lw_dict_new();
    lw_err_t err =
        d ? lw_state_from_replies(d, cl, borrower_id, r, a, out, found, errstr, errstr_size)
          : LW_ERR_NOMEM;
    if (!d)
        snprintf(errstr, errstr_size, "out of memory");
    lw_dict_destroy(d);
    lw_rcluster_batch_destroy(bat); /* r and a were the batch's */
    return err;
}

lw_err_t lw_state_from_replies(lw_dict_t *d, lw_rcluster_t *cl, const char *borrower_id,
                               const redisReply *r, const redisReply *a, lw_borrower_state_t *out,
                               bool *found, char *errstr, size_t errstr_size)
{
    char key[LW_STATE_KEY_MAX], akey[LW_STATE_KEY_MAX];
    lw_state_key(borrower_id, key, sizeof key);
    lw_alerts_key(borrower_id, akey, sizeof akey);
    memset(out, 0, sizeof *out);
    *found = false;
    lw_bstate_t bs = {0};
    lw_err_t err = LW_OK;
    if ((r->type != REDIS_REPLY_STRING && r->type != REDIS_REPLY_NIL) ||
        (a && a->type != REDIS_REPLY_ARRAY)) {
        const redisReply *bad = r->type == REDIS_REPLY_ERROR || !a ? r : a;
        snprintf(errstr, errstr_size, "Redis GET %s / HKEYS %s: %s", key, akey,
                 bad->type == REDIS_REPLY_ERROR ? bad->str : "unexpected reply");
        err = LW_ERR_REDIS;
        goto done;
    }
    if (r->type == REDIS_REPLY_NIL)
        goto done;
    snprintf(out->borrower_id, sizeof out->borrower_id, "%s", borrower_id);
    err = decode_state(d, cl, r->str, r->len, out, &bs, errstr, errstr_size);
    if (err != LW_OK) {
        if (err == LW_ERR_NOMEM)
            snprintf(errstr, errstr_size, "out of memory");
        else if (err == LW_ERR_PARSE)
            snprintf(errstr, errstr_size,
                     "borrower state %s: malformed value (%zu bytes; not layout version %d)", key,
                     r->len, LW_STATE_VERSION);
        lw_borrower_state_clear(out);
        err = err == LW_ERR_NOMEM ? err : LW_ERR_REDIS;
        goto done;
    }
    size_t na = 0;
    if (a && a->elements) {
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
    /* By rule id, not in HKEYS order: the hash's field order is its write
     * history (a single Redis and a cluster write the fields in different
     * steps), and the reader's answer must not depend on it. */
    if (na > 1)
        qsort(out->open_alerts, na, sizeof *out->open_alerts, rule_cmp);
    out->n_open_alerts = na;

    if ((err = lw_state_derive(&bs, out, key, errstr, errstr_size)) != LW_OK) {
        lw_borrower_state_clear(out);
        goto done;
    }
    *found = true;
done:
    lw_bstate_free(&bs);
    return err;
}
