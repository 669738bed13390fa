/*
 * compare.c - one snapshot loan against the bureau's, and the JSON line of
 * a difference.
 *
 * The order of the checks is the contract's (issue 20): a loan the bureau
 * does not hold open is missing there, whatever its sequence; otherwise the
 * sequences say which side is older (a platform's snapshot and the bureau's
 * stream are never taken at the same instant, so an older side is expected
 * and named, not called a wrong balance); only at the same sequence can the
 * balances be compared, and then they must be equal.
 *
 * The line is written by hand: every string in it is an id that was checked
 * (printable ASCII) or a fixed name, so escaping '"' and '\\' is all it
 * takes, and there is no allocation per discrepancy.
 */
#include "loanwire/reconcile.h"

#include <inttypes.h>
#include <string.h>

static const char *kind_names[LW_RECON__CNT] = {
    "match",         "missing_at_bureau", "balance_mismatch",
    "bureau_behind", "bureau_ahead",      "unknown_to_platform"};

const char *lw_recon_kind_name(lw_recon_kind_t k)
{
    return (int)k >= 0 && k < LW_RECON__CNT ? kind_names[k] : NULL;
}

const lw_loan_state_t *lw_recon_find(const lw_borrower_state_t *st, const char *platform,
                                     const char *loan_id)
{
    if (!st)
        return NULL;
    for (size_t i = 0; i < st->n_loans; i++)
        if (strcmp(st->loans[i].loan_id, loan_id) == 0 &&
            strcmp(st->loans[i].platform_id, platform) == 0)
            return &st->loans[i];
    return NULL;
}

bool lw_recon_is_open(const lw_loan_state_t *b)
{
    return b && b->status != LW_LOAN_CLOSED && b->status != LW_LOAN_WRITTEN_OFF;
}

bool lw_recon_is_active(const lw_loan_state_t *b)
{
    return b && (b->status == LW_LOAN_ACTIVE || b->status == LW_LOAN_DELINQUENT);
}

lw_recon_kind_t lw_recon_compare(const lw_snap_loan_t *s, const lw_loan_state_t *b)
{
    if (!lw_recon_is_open(b))
        return LW_RECON_MISSING_AT_BUREAU;
    if (b->sequence < s->sequence)
        return LW_RECON_BUREAU_BEHIND;
    if (b->sequence > s->sequence)
        return LW_RECON_BUREAU_AHEAD;
    if (b->outstanding_fen != s->outstanding_fen)
        return LW_RECON_BALANCE_MISMATCH;
    return LW_RECON_MATCH;
}

typedef struct {
    char *p, *end;
    bool full;
} jw_t;

static void put(jw_t *w, const char *s, size_t n)
{
    if (w->full || (size_t)(w->end - w->p) < n) {
        w->full = true;
        return;
    }
    memcpy(w->p, s, n);
    w->p += n;
}

static void puts_(jw_t *w, const char *s)
{
    put(w, s, strlen(s));
}

static void quote(jw_t *w, const char *s)
{
    put(w, "\"", 1);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            put(w, "\\", 1);
        put(w, s, 1);
    }
    put(w, "\"", 1);
}

static void num(jw_t *w, int64_t v)
{
    char t[24];
    int n = snprintf(t, sizeof t, "%" PRId64, v);
    put(w, t, (size_t)n);
}

int lw_recon_diff_json(lw_recon_kind_t k, const char *platform, const char *borrower_id,
                       const char *loan_id, const lw_snap_loan_t *s, uint64_t line,
                       const lw_loan_state_t *b, char *buf, size_t cap)
{
    jw_t w = {buf, buf + cap, false};
    const char *name = lw_recon_kind_name(k);
    puts_(&w, "{\"kind\":");
    quote(&w, name ? name : "?");
    puts_(&w, ",\"platform_id\":");
    quote(&w, platform);
    puts_(&w, ",\"borrower_id\":");
    quote(&w, borrower_id);
    puts_(&w, ",\"loan_id\":");
    quote(&w, loan_id);
    if (s) {
        puts_(&w, ",\"line\":");
        num(&w, (int64_t)line);
        puts_(&w, ",\"platform\":{\"sequence\":");
        num(&w, s->sequence);
        puts_(&w, ",\"outstanding_fen\":");
        num(&w, s->outstanding_fen);
        puts_(&w, "}");
    } else {
        puts_(&w, ",\"platform\":null");
    }
    if (b) {
        puts_(&w, ",\"bureau\":{\"sequence\":");
        num(&w, b->sequence);
        puts_(&w, ",\"outstanding_fen\":");
        num(&w, b->outstanding_fen);
        puts_(&w, ",\"status\":");
        const char *st = lw_loan_status_name(b->status);
        quote(&w, st ? st : "?");
        puts_(&w, ",\"lender_id\":");
        quote(&w, b->lender_id);
        puts_(&w, ",\"updated_at\":");
        num(&w, b->updated_at);
        puts_(&w, "}");
    } else {
        puts_(&w, ",\"bureau\":null");
    }
    put(&w, "}\n", 3); /* and the NUL, not counted */
    if (w.full)
        return -1;
    return (int)(w.p - buf) - 1;
}
