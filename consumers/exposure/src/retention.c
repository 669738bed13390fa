/*
 * retention.c - how long an ended loan stays in its borrower's state, and the
 * rule that keeps a pruned loan from coming back (consumers/README.md,
 * "Retention").
 *
 * A loan ends when it is CLOSED or WRITTEN_OFF; its end is its updated_at
 * (the event time of its last event). An ended loan counts in no total (only
 * ACTIVE and DELINQUENT loans do), so dropping it changes no figure the rules
 * or the query compute from outstanding amounts. A settled loan (CLOSED, no
 * past due) leaves the state when the borrower's clock t (the latest event
 * time, never the wall clock) is more than --retain-ended past its end
 * (default 90 days); a negative one (WRITTEN_OFF, or CLOSED while past due)
 * after --retain-negative (default 5 years, as PBOC keeps negative credit
 * information). Pruning runs only on an applied event, so the state after an
 * event is a function of the state before it and the event: a replay of the
 * same partition order gives the same bytes, however batches fall.
 *
 * Once a loan is gone, its sequence is gone too, so a late or redelivered
 * event for it would open it again with old figures. No tombstone is kept
 * (that would be the memory pruning saves): instead an event for a loan the
 * state does not hold, dated more than --retain-ended behind t, is refused
 * (a dead letter, with why). Every event of a pruned loan is that old when
 * the loan's event times follow its sequence: the loan left because t passed
 * its end by more than the shortest retention, and t never goes back.
 */
#include "exposure_int.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

int64_t lw_rules_retain_ended(const lw_rules_t *rules)
{
    return rules->retain_ended_ms ? rules->retain_ended_ms : LW_RETAIN_ENDED_DEFAULT_MS;
}

int64_t lw_rules_retain_negative(const lw_rules_t *rules)
{
    return rules->retain_negative_ms ? rules->retain_negative_ms : LW_RETAIN_NEGATIVE_DEFAULT_MS;
}

lw_err_t lw_rules_set_retention(lw_rules_t *rules, int64_t ended_ms, int64_t negative_ms,
                                char *errstr, size_t errstr_size)
{
    if (ended_ms < 0 || negative_ms < 0) {
        snprintf(errstr, errstr_size, "retention: a period cannot be negative");
        return LW_ERR_CONFIG;
    }
    int64_t e = ended_ms ? ended_ms : LW_RETAIN_ENDED_DEFAULT_MS;
    /* by default a negative record stays 5 years, or as long as a settled one */
    int64_t n = negative_ms                         ? negative_ms
                : e > LW_RETAIN_NEGATIVE_DEFAULT_MS ? e
                                                    : LW_RETAIN_NEGATIVE_DEFAULT_MS;
    /* the stale-event horizon is the settled period: a negative record kept
     * for less would let its late events through as new loans */
    if (n < e) {
        snprintf(errstr, errstr_size,
                 "retention: --retain-negative (%lld ms) is shorter than --retain-ended (%lld "
                 "ms); negative records must stay at least as long as settled ones",
                 (long long)n, (long long)e);
        return LW_ERR_CONFIG;
    }
    rules->retain_ended_ms = e;
    rules->retain_negative_ms = n;
    return LW_OK;
}

/* "90d", "5y" (365.25 days), "2160h", "30m", "3600s", "1500ms", or "off":
 * kept for ever (LW_RETAIN_FOREVER). Zero and bare numbers are refused, so a
 * unit is never guessed. */
bool lw_retention_parse(const char *s, int64_t *ms)
{
    if (!strcmp(s, "off")) {
        *ms = LW_RETAIN_FOREVER;
        return true;
    }
    if (!isdigit((unsigned char)*s))
        return false;
    errno = 0;
    char *u;
    long long v = strtoll(s, &u, 10);
    int64_t mult;
    if (errno || v <= 0)
        return false;
    if (!strcmp(u, "ms"))
        mult = 1;
    else if (!strcmp(u, "s"))
        mult = 1000;
    else if (!strcmp(u, "m"))
        mult = 60000;
    else if (!strcmp(u, "h"))
        mult = 3600000;
    else if (!strcmp(u, "d"))
        mult = 86400000;
    else if (!strcmp(u, "y"))
        mult = 31557600000LL; /* 365.25 days: 5y covers five calendar years */
    else
        return false;
    if (v >= LW_RETAIN_FOREVER / mult)
        return false;
    *ms = (int64_t)v * mult;
    return true;
}

static bool is_negative(const lw_bloan_t *l)
{
    return l->status == LW_LOAN_WRITTEN_OFF || l->days_past_due > 0 || l->past_due_fen > 0;
}

/* Past its period behind t: t - end > period, in a form that cannot overflow. */
static bool past(int64_t t, int64_t end, int64_t period)
{
    return period != LW_RETAIN_FOREVER && end < t - period;
}

bool lw_retain_stale(const lw_bstate_t *s, const lw_rules_t *rules, int64_t at)
{
    return past(s->t, at, lw_rules_retain_ended(rules));
}

bool lw_retain_prune(lw_bstate_t *s, const lw_rules_t *rules)
{
    const int64_t ended = lw_rules_retain_ended(rules), neg = lw_rules_retain_negative(rules);
    size_t kept = 0;
    for (size_t i = 0; i < s->n_loans; i++) {
        const lw_bloan_t *l = &s->loans[i];
        bool gone = (l->status == LW_LOAN_CLOSED || l->status == LW_LOAN_WRITTEN_OFF) &&
                    past(s->t, l->updated_at, is_negative(l) ? neg : ended);
        if (!gone)
            s->loans[kept++] = *l;
    }
    bool pruned = kept != s->n_loans;
    s->n_loans = kept;
    return pruned;
}
