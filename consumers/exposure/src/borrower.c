/*
 * borrower.c - one borrower's events and rules, applied to its decoded state.
 *
 * The consumer that owns a partition is the only writer of its borrowers
 * (partition epochs fence the others), so it reads a borrower (MGET),
 * applies events here in C and writes the result back. Redis stores and
 * publishes; it decides nothing. That keeps Redis at one read and one write
 * per borrower and batch, instead of a Lua interpreter per event.
 *
 * The state string's layout and its codec are in consumers/state/src/bstate.c.
 */
#include "exposure_int.h"

#include "loanwire/id.h"

/* SHA1() in OpenSSL 3 looks the digest up in the provider tables on every
 * call (~600 ns); the low-level SHA1_Init/Update/Final, deprecated but part
 * of every 3.x, hash a short key in ~60 ns. Window entries and alert ids
 * hash once per event that opens a loan or fires a rule. */
#define OPENSSL_SUPPRESS_DEPRECATED
#include <openssl/sha.h>

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- Alerts ------------------------------------------------------------------- */

static void sha1(const void *in, size_t n, unsigned char md[SHA_DIGEST_LENGTH])
{
    SHA_CTX c;
    SHA1_Init(&c);
    SHA1_Update(&c, in, n);
    SHA1_Final(md, &c);
}

void lw_alert_id(const char *borrower_id, const char *rule_id, const char *event_id, char out[33])
{
    static const char hex[] = "0123456789abcdef";
    char in[LW_BORROWER_ID_LEN + 2 * LW_ID_MAX + 4];
    int n = snprintf(in, sizeof in, "%s|%s|%s", borrower_id, rule_id, event_id);
    unsigned char md[SHA_DIGEST_LENGTH];
    sha1(in, (size_t)n, md);
    for (int i = 0; i < 16; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 15];
    }
    out[32] = '\0';
}

/* Appends s as a JSON string. */
/* What the rules look at, derived from the state after the event. */
typedef struct aggr {
    int64_t total;
    int32_t nact, nlend;
    bool otherdpd, anydpd;
} aggr_t;

typedef struct fire_ctx {
    const lw_event_t *ev;
    const aggr_t *a;
    const lw_bstate_t *s;
    lw_alert_vec_t *alerts;
    lw_bapply_out_t *out;
} fire_ctx_t;

/* The alert a rule raised, as one struct: the store renders its JSON for
 * Redis and the consumer its Avro for Kafka from it, each once. */
static bool fire(fire_ctx_t *f, int ri, const lw_rule_t *r, int64_t limit, int64_t wcount,
                 int64_t wms, const char *reason)
{
    const lw_event_t *ev = f->ev;
    lw_alert_t *al = lw_array_grow(f->alerts->v, &f->alerts->cap, f->alerts->n + 1, sizeof *al, 16);
    if (!al)
        return false;
    f->alerts->v = al;
    al += f->alerts->n;
    memset(al, 0, sizeof *al);
    lw_alert_id(ev->borrower_id, r->id, ev->event_id, al->alert_id);
    memcpy(al->borrower_id, ev->borrower_id, sizeof al->borrower_id);
    snprintf(al->rule_id, sizeof al->rule_id, "%s", r->id);
    al->rule_version = r->version;
    al->severity = r->severity;
    snprintf(al->reason, sizeof al->reason, "%s", reason);
    al->total_outstanding_fen = f->a->total;
    al->active_lenders = f->a->nlend;
    al->active_loans = f->a->nact;
    al->window_count = (int32_t)wcount;
    al->window_ms = wms;
    al->has_annual_income = f->s->has_income;
    al->annual_income_fen = f->s->has_income ? f->s->income_fen : 0;
    al->limit = limit;
    memcpy(al->trigger_event_id, ev->event_id, sizeof al->trigger_event_id);
    memcpy(al->trigger_platform_id, ev->platform_id, sizeof al->trigger_platform_id);
    memcpy(al->trigger_lender_id, ev->lender_id, sizeof al->trigger_lender_id);
    al->raised_at = ev->occurred_at;
    f->out->fired[f->out->n_fired++] = ri;
    f->alerts->n++;
    return true;
}

/* Distinct lender hashes (and entries) in the window after `from`: one
 * pass through a hash set (lw_kset_t), so a borrower with thousands of
 * lenders costs a pass, not a pass per lender. -1: out of memory. */
static int64_t win_lenders(const lw_bstate_t *s, int64_t from, int64_t *count)
{
    lw_kset_t seen;
    if (!lw_kset_init(&seen, s->n_win))
        return -1;
    int64_t n = 0;
    for (size_t i = 0; i < s->n_win; i++) {
        const lw_bwin_t *w = &s->win[i];
        if (w->at <= from)
            continue;
        n++;
        lw_kset_add(&seen, w->lh);
    }
    *count = n;
    int64_t d = (int64_t)seen.n;
    lw_kset_free(&seen);
    return d;
}

/* Distinct institutions (and inquiries) among approval inquiries after
 * `from` (post-loan management and the borrower's own requests are shown,
 * never counted, as in PBOC reports). -1: out of memory. */
static int64_t inq_institutions(const lw_bstate_t *s, int64_t from, int64_t *count)
{
    lw_kset_t seen;
    if (!lw_kset_init(&seen, s->n_inq))
        return -1;
    int64_t n = 0;
    for (size_t i = 0; i < s->n_inq; i++) {
        const lw_binq_t *q = &s->inq[i];
        if (q->at <= from || !lw_purpose_is_approval((lw_inquiry_purpose_t)q->purpose))
            continue;
        n++;
        lw_kset_add(&seen, q->institution);
    }
    *count = n;
    int64_t d = (int64_t)seen.n;
    lw_kset_free(&seen);
    return d;
}

static uint64_t sha_bits(const char *s, size_t n, int bytes)
{
    unsigned char md[SHA_DIGEST_LENGTH];
    sha1(s, n, md);
    uint64_t v = 0;
    for (int i = 0; i < bytes; i++)
        v = (v << 8) | md[i];
    return v;
}

static bool is_active(lw_loan_status_t st)
{
    return st == LW_LOAN_ACTIVE || st == LW_LOAN_DELINQUENT;
}

/* The event is not applied: why goes to the dead letter. */
static lw_apply_code_t refuse(lw_bapply_out_t *out, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static lw_apply_code_t refuse(lw_bapply_out_t *out, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(out->reason, sizeof out->reason, fmt, ap);
    va_end(ap);
    return LW_APPLY_REFUSED;
}

/* Aggregates over active loans, with every sum checked: a state string is
 * data read back from Redis, and amounts up to 2^53 each in thousands of
 * loans can pass INT64_MAX. false: a sum would overflow (a is partial).
 * Distinct lenders by one pass through a hash set of their string ids. */
static bool aggregate(const lw_bstate_t *s, const lw_bloan_t *me, aggr_t *a, bool *nomem)
{
    lw_kset_t lenders;
    *nomem = false;
    memset(a, 0, sizeof *a);
    if (!lw_kset_init(&lenders, s->n_loans)) {
        *nomem = true;
        return true;
    }
    bool ok = true;
    for (size_t i = 0; i < s->n_loans && ok; i++) {
        const lw_bloan_t *l = &s->loans[i];
        if (l->days_past_due > 0 && l->status != LW_LOAN_CLOSED) {
            a->anydpd = true;
            if (l != me)
                a->otherdpd = true;
        }
        if (!is_active(l->status))
            continue;
        ok = !__builtin_add_overflow(a->total, l->outstanding_fen, &a->total);
        a->nact++;
        lw_kset_add(&lenders, l->lender);
    }
    a->nlend = (int32_t)lenders.n;
    lw_kset_free(&lenders);
    return ok;
}

/* ---- Applying one event ----------------------------------------------------- */

/* The window entry of a loan opened by a later event read first. After the
 * topic gained partitions a borrower's old events sit on p and its new ones
 * on p', read interleaved, so a loan's DRAWDOWN (p') can open it before its
 * CREDIT_LINE (p) arrives; the CREDIT_LINE is then out of order (the
 * sequence rule ignores it), but the loan's window entry must carry the
 * time and lender of its earliest opening event, as in partition order.
 * So an out-of-order CREDIT_LINE or DRAWDOWN older than its loan's entry
 * moves the entry back to itself, or drops it when that is already past the
 * kept window (partition order would have pruned it by now: t only grows).
 * The earliest of the events seen is the same whatever the order, so the
 * result does not depend on the order either; a repeat changes nothing. A
 * loan with no entry left is not given one: its entry may have been pruned
 * (nothing tells that from a loan opened by another event type). True when
 * the entry changed. */
static bool backdate_entry(lw_bstate_t *s, const lw_event_t *ev, int64_t keep_ms)
{
    char key[2 * LW_ID_MAX + 2];
    size_t pl = strlen(ev->platform_id), ll = strlen(ev->loan_id);
    memcpy(key, ev->platform_id, pl);
    key[pl] = ':';
    memcpy(key + pl + 1, ev->loan_id, ll);
    uint64_t idh = sha_bits(key, pl + 1 + ll, 6) & ~(uint64_t)1;
    for (size_t i = 0; i < s->n_win; i++) {
        if (s->win[i].idh != idh)
            continue;
        if (ev->occurred_at >= s->win[i].at)
            return false;
        if (ev->occurred_at <= s->t - keep_ms) {
            memmove(&s->win[i], &s->win[i + 1], (s->n_win - i - 1) * sizeof *s->win);
            s->n_win--;
        } else {
            s->win[i].at = ev->occurred_at;
            s->win[i].lh = (uint32_t)sha_bits(ev->lender_id, strlen(ev->lender_id), 4);
        }
        return true;
    }
    return false;
}

lw_apply_code_t lw_bstate_apply(lw_bstate_t *s, const lw_rules_t *rules, const lw_event_t *ev,
                                uint32_t platform, uint32_t lender, uint32_t writer, int64_t epoch,
                                lw_alert_vec_t *alerts, lw_bapply_out_t *out)
{
    out->changed = out->nomem = false;
    out->reason[0] = '\0';
    out->n_fired = out->n_cleared = 0;
    if (writer && s->fence_writer == writer && epoch < s->fence_epoch)
        return LW_APPLY_FENCED;

    const lw_event_type_t et = ev->event_type;
    const int64_t at = ev->occurred_at;
    const int64_t keep_ms = rules->keep_ms;
    int64_t newt = at > s->t ? at : s->t;
    bool changed = newt != s->t;

    /* This event's loan (an application keeps no loan state). */
    lw_bloan_t *me = NULL;
    if (et != LW_EVENT_APPLICATION)
        for (size_t i = 0; i < s->n_loans && !me; i++)
            if (s->loans[i].platform == platform && !strcmp(s->loans[i].loan_id, ev->loan_id))
                me = &s->loans[i];

    lw_bwin_t add = {0, 0, 0};
    bool adding = false;
    char key[2 * LW_ID_MAX + 2];
    size_t klen = 0;
    if (et == LW_EVENT_APPLICATION ||
        (!me && (et == LW_EVENT_CREDIT_LINE || et == LW_EVENT_DRAWDOWN))) {
        size_t pl = strlen(ev->platform_id), ll = strlen(ev->loan_id);
        memcpy(key, ev->platform_id, pl);
        key[pl] = ':';
        memcpy(key + pl + 1, ev->loan_id, ll);
        klen = pl + 1 + ll;
        add.at = at;
        add.idh = sha_bits(key, klen, 6) & ~(uint64_t)1;
        add.lh = (uint32_t)sha_bits(ev->lender_id, strlen(ev->lender_id), 4);
    }
    if (et == LW_EVENT_APPLICATION) {
        /* counted once by its id */
        add.idh |= 1;
        for (size_t i = 0; i < s->n_win; i++)
            if (s->win[i].idh == add.idh)
                return LW_APPLY_DUPLICATE;
        adding = at > newt - keep_ms;
    } else if (me) {
        if (ev->sequence == me->sequence)
            return LW_APPLY_DUPLICATE;
        if (ev->sequence < me->sequence) {
            /* no loan field moves; only its window entry may (above) */
            if ((et == LW_EVENT_CREDIT_LINE || et == LW_EVENT_DRAWDOWN) &&
                backdate_entry(s, ev, keep_ms)) {
                s->fence_writer = writer;
                s->fence_epoch = epoch;
                out->changed = true;
            }
            return LW_APPLY_OUT_OF_ORDER;
        }
    } else {
        /* a CREDIT_LINE or DRAWDOWN opening a loan never seen: a new loan */
        adding = klen > 0 && at > newt - keep_ms;
        /* ... unless it is older than retention: it may be a pruned loan's */
        if (lw_retain_stale(s, rules, at))
            return refuse(out,
                          "stale: an event for loan %s, which the state does not hold, dated "
                          "more than --retain-ended behind the borrower's latest event; it may "
                          "belong to a loan retention removed, so it is not applied",
                          ev->loan_id);
        if (s->n_loans >= rules->max_loans)
            return refuse(out,
                          "limit: the borrower has %zu loans, the most one borrower may have "
                          "(--max-loans %zu); a new loan is not applied",
                          s->n_loans, rules->max_loans);
    }
    /* Window entries this event keeps (after pruning to newt) plus its own:
     * checked before anything changes, so a refused event changes nothing. */
    if (adding && s->n_win >= rules->max_window) {
        size_t keep = 0;
        for (size_t i = 0; i < s->n_win; i++)
            keep += s->win[i].at > newt - keep_ms;
        if (keep >= rules->max_window)
            return refuse(out,
                          "limit: the borrower has %zu new loans and applications in %" PRId64
                          " days, the most one borrower may have (--max-window-entries %zu); "
                          "not applied",
                          keep, keep_ms / 86400000, rules->max_window);
    }
    bool opened = false;
    lw_bloan_t before = {0};
    if (!me && et != LW_EVENT_APPLICATION) {
        if (!lw_bstate_loans_room(s, s->n_loans + 1)) {
            out->nomem = true;
            return LW_APPLY_DUPLICATE;
        }
        me = &s->loans[s->n_loans++];
        memset(me, 0, sizeof *me);
        me->platform = platform;
        memcpy(me->loan_id, ev->loan_id, strlen(ev->loan_id) + 1); /* validated: <= LW_ID_MAX */
        opened = true;
    }
    if (me) {
        before = *me;
        lw_loan_status_t st;
        if (et == LW_EVENT_WRITE_OFF)
            st = LW_LOAN_WRITTEN_OFF;
        else if (et == LW_EVENT_CLOSURE)
            st = LW_LOAN_CLOSED;
        else if (ev->outstanding_fen > 0)
            st = ev->days_past_due > 0 ? LW_LOAN_DELINQUENT : LW_LOAN_ACTIVE;
        else
            st = LW_LOAN_PAID;
        me->lender = lender;
        me->product = ev->product;
        me->status = st;
        me->days_past_due = ev->days_past_due;
        me->sequence = ev->sequence;
        me->outstanding_fen = ev->outstanding_fen;
        me->past_due_fen = ev->past_due_fen;
        me->credit_limit_fen = ev->credit_limit_fen;
        me->updated_at = at;
        changed = true;
    }

    /* Aggregates over active loans; "other" past due excludes this loan. A
     * total that would overflow int64 (only a state string with amounts
     * near 2^53 in over a thousand loans can) refuses the event and puts
     * the loan back as it was. */
    aggr_t a;
    bool nomem;
    if (!aggregate(s, me, &a, &nomem)) {
        if (opened)
            s->n_loans--;
        else if (me)
            *me = before;
        return refuse(out,
                      "overflow: the borrower's total outstanding would exceed %" PRId64
                      " fen (int64); not applied",
                      INT64_MAX);
    }
    if (nomem) {
        out->nomem = true;
        return LW_APPLY_DUPLICATE;
    }

    if (ev->has_annual_income && (!s->has_income || at > s->income_at ||
                                  (at == s->income_at && ev->annual_income_fen > s->income_fen))) {
        s->has_income = true;
        s->income_fen = ev->annual_income_fen;
        s->income_at = at;
        changed = true;
    }

    /* Prune entries past the kept window (lw_rules_keep_ms()) of the latest
     * event time, add the new one. */
    s->t = newt;
    int64_t lo = newt - keep_ms;
    size_t kept = 0;
    for (size_t i = 0; i < s->n_win; i++)
        if (s->win[i].at > lo)
            s->win[kept++] = s->win[i];
    if (kept != s->n_win)
        changed = true;
    s->n_win = kept;
    if (adding) {
        if (!lw_bstate_win_room(s, s->n_win + 1)) {
            out->nomem = true;
            return LW_APPLY_DUPLICATE;
        }
        s->win[s->n_win++] = add;
        changed = true;
    }

    /* Rules, on the state after this event (event time only). The reason
     * text is only made for an alert that fires. */
    fire_ctx_t f = {ev, &a, s, alerts, out};
    uint64_t newmask = s->mask;
    char reason[256];
    for (size_t ri = 0; ri < rules->n; ri++) {
        const lw_rule_t *r = &rules->rules[ri];
        uint64_t bit = (uint64_t)1 << ri;
        bool on = s->mask & bit, cond = false, clear = false;
        int64_t limit = 0, wcount = 0, wms = 0, cnt = 0;
        switch (r->kind) {
        case LW_RULE_INCOME_CAP:
            limit = r->cap_fen;
            if (s->has_income && s->income_fen / r->income_divisor < limit)
                limit = s->income_fen / r->income_divisor;
            cond = a.total > limit;
            clear = !cond;
            break;
        case LW_RULE_MULTI_LENDER:
            limit = r->min_count;
            cond = a.nlend >= limit;
            clear = !cond;
            break;
        case LW_RULE_STACKING:
            limit = r->min_count;
            wcount =
                s->n_win >= (size_t)limit || on ? win_lenders(s, newt - r->window_ms, &cnt) : 0;
            if (wcount < 0) {
                out->nomem = true;
                return LW_APPLY_DUPLICATE;
            }
            wms = r->window_ms;
            cond = wcount >= limit;
            clear = !cond;
            break;
        case LW_RULE_BORROW_DELINQUENT:
            /* fires on a drawdown while another loan is past due; clears when none is */
            cond = et == LW_EVENT_DRAWDOWN && a.otherdpd;
            clear = !a.anydpd;
            break;
        case LW_RULE_INQUIRY_SPREE:
            /* fires on an inquiry (lw_bstate_inquiry()); time passing clears it here */
            if (!on)
                continue;
            wcount = inq_institutions(s, newt - r->window_ms, &cnt);
            if (wcount < 0) {
                out->nomem = true;
                return LW_APPLY_DUPLICATE;
            }
            clear = wcount < r->min_count;
            break;
        default:
            continue;
        }
        if (cond && !on) {
            switch (r->kind) {
            case LW_RULE_INCOME_CAP:
                snprintf(reason, sizeof reason,
                         "total outstanding %" PRId64 " fen > limit %" PRId64 " fen", a.total,
                         limit);
                break;
            case LW_RULE_MULTI_LENDER:
                snprintf(reason, sizeof reason, "%" PRId32 " distinct active lenders >= %" PRId64,
                         a.nlend, limit);
                break;
            case LW_RULE_STACKING:
                snprintf(reason, sizeof reason,
                         "%" PRId64 " distinct lenders among %" PRId64
                         " new loans and applications in %" PRId64 " ms >= %" PRId64,
                         wcount, cnt, r->window_ms, limit);
                break;
            default:
                snprintf(reason, sizeof reason, "drawdown while another loan is past due");
                limit = 0;
                break;
            }
            if (!fire(&f, (int)ri, r, limit, wcount, wms, reason)) {
                out->nomem = true;
                return LW_APPLY_DUPLICATE;
            }
            newmask |= bit | LW_MASK_HIST;
        } else if (on && clear) {
            out->cleared[out->n_cleared++] = (int)ri;
            newmask &= ~bit;
        }
    }

    /* Nothing changed (an application already out of the window, a repeated
     * income): nothing is written, and it counts as a duplicate, so that
     * "applied" means "changed". */
    /* Ended loans past their retention leave, by event time (retention.c). */
    if (lw_retain_prune(s, rules))
        changed = true;
    if (!changed && newmask == s->mask)
        return LW_APPLY_DUPLICATE;
    s->mask = newmask;
    s->fence_writer = writer;
    s->fence_epoch = epoch;
    out->changed = true;
    return LW_APPLY_APPLIED;
}

/* ---- Applying one recorded inquiry (issue 20) ---------------------------------- */

/* The alert of an inquiry_spree rule names the inquiry as its trigger: its
 * id as the event id, its institution as platform and lender. */
static void inquiry_trigger(const lw_inquiry_t *iq, lw_event_t *tev)
{
    memset(tev, 0, sizeof *tev);
    memcpy(tev->event_id, iq->inquiry_id, sizeof tev->event_id);
    memcpy(tev->borrower_id, iq->borrower_id, sizeof tev->borrower_id);
    memcpy(tev->platform_id, iq->institution_id, sizeof tev->platform_id);
    memcpy(tev->lender_id, iq->institution_id, sizeof tev->lender_id);
    tev->occurred_at = iq->inquired_at;
}

lw_apply_code_t lw_bstate_inquiry(lw_bstate_t *s, const lw_rules_t *rules, const lw_inquiry_t *iq,
                                  uint32_t institution, uint32_t writer, int64_t epoch,
                                  lw_alert_vec_t *alerts, lw_bapply_out_t *out)
{
    out->changed = out->nomem = false;
    out->reason[0] = '\0';
    out->n_fired = out->n_cleared = 0;
    if (writer && s->fence_writer == writer && epoch < s->fence_epoch)
        return LW_APPLY_FENCED;

    const int64_t at = iq->inquired_at, keep = rules->inq_keep_ms;
    const int64_t newt = at > s->t ? at : s->t;
    const uint64_t idh = sha_bits(iq->inquiry_id, strlen(iq->inquiry_id), 6);
    /* counted once by its id; one older than what is kept is a replay of an
     * inquiry already pruned (as an application is) */
    if (at <= newt - keep)
        return LW_APPLY_DUPLICATE;
    for (size_t i = 0; i < s->n_inq; i++)
        if (s->inq[i].idh == idh)
            return LW_APPLY_DUPLICATE;
    size_t kept = 0;
    for (size_t i = 0; i < s->n_inq; i++)
        kept += s->inq[i].at > newt - keep;
    if (kept >= rules->max_inquiries)
        return refuse(out,
                      "limit: the borrower has %zu recorded inquiries in %" PRId64
                      " days, the most one borrower's state keeps (--max-inquiries %zu); "
                      "not applied",
                      kept, keep / 86400000, rules->max_inquiries);
    if (!lw_bstate_inq_room(s, s->n_inq + 1)) {
        out->nomem = true;
        return LW_APPLY_DUPLICATE;
    }
    /* prune what left the kept time, insert in time order (oldest first) */
    size_t k = 0;
    for (size_t i = 0; i < s->n_inq; i++)
        if (s->inq[i].at > newt - keep)
            s->inq[k++] = s->inq[i];
    size_t pos = k;
    while (pos > 0 && s->inq[pos - 1].at > at)
        pos--;
    memmove(&s->inq[pos + 1], &s->inq[pos], (k - pos) * sizeof *s->inq);
    s->inq[pos] = (lw_binq_t){at, idh, institution, (uint8_t)iq->purpose};
    s->n_inq = k + 1;
    s->t = newt;

    /* inquiry_spree rules, on the state after this inquiry */
    aggr_t a;
    bool nomem;
    lw_event_t tev;
    inquiry_trigger(iq, &tev);
    if (!aggregate(s, NULL, &a, &nomem))
        memset(&a, 0, sizeof a); /* a total past int64 is refused on the loan's own events */
    if (nomem) {
        out->nomem = true;
        return LW_APPLY_DUPLICATE;
    }
    fire_ctx_t f = {&tev, &a, s, alerts, out};
    uint64_t newmask = s->mask;
    char reason[256];
    for (size_t ri = 0; ri < rules->n; ri++) {
        const lw_rule_t *r = &rules->rules[ri];
        uint64_t bit = (uint64_t)1 << ri;
        if (r->kind != LW_RULE_INQUIRY_SPREE)
            continue;
        int64_t cnt = 0, d = inq_institutions(s, newt - r->window_ms, &cnt);
        if (d < 0) {
            out->nomem = true;
            return LW_APPLY_DUPLICATE;
        }
        bool on = s->mask & bit;
        if (d >= r->min_count && !on) {
            snprintf(reason, sizeof reason,
                     "%" PRId64 " distinct institutions among %" PRId64
                     " approval inquiries in %" PRId64 " ms >= %" PRId64,
                     d, cnt, r->window_ms, r->min_count);
            if (!fire(&f, (int)ri, r, r->min_count, d, r->window_ms, reason)) {
                out->nomem = true;
                return LW_APPLY_DUPLICATE;
            }
            newmask |= bit | LW_MASK_HIST;
        } else if (on && d < r->min_count) {
            out->cleared[out->n_cleared++] = (int)ri;
            newmask &= ~bit;
        }
    }
    s->mask = newmask;
    s->fence_writer = writer;
    s->fence_epoch = epoch;
    out->changed = true;
    return LW_APPLY_APPLIED;
}
