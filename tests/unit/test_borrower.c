/*
 * test_borrower.c - a borrower's state and the rules, without Redis
 * (consumers/state/src/bstate.c, consumers/exposure/src/borrower.c): the state string's round trip
 * and its refusal of damaged bytes, the sequence rule, the window, each rule firing and clearing,
 * and fencing.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "exposure_int.h"
#include "loanwire/json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BID  "ABCDEFGHIJKLMNOPQRSTUV"
#define T0   1767225600000LL
#define HOUR 3600000LL
#define DAY  (24 * HOUR)

static lw_rules_t *g_rules;
/* The rules' ids in lw:strings, as the store interns them (layout version 4
 * names open alerts by them). */
static const uint32_t g_rule_ids[LW_RULES_MAX] = {101, 102, 103, 104, 105, 106, 107, 108};

static lw_event_t mk(lw_event_type_t t, const char *loan, const char *lender, int64_t seq,
                     int64_t at, int64_t out)
{
    lw_event_t e;
    memset(&e, 0, sizeof e);
    snprintf(e.event_id, sizeof e.event_id, "%s-%s-%lld", loan, lender, (long long)seq);
    snprintf(e.platform_id, sizeof e.platform_id, "P");
    snprintf(e.lender_id, sizeof e.lender_id, "%s", lender);
    snprintf(e.borrower_id, sizeof e.borrower_id, BID);
    snprintf(e.loan_id, sizeof e.loan_id, "%s", loan);
    snprintf(e.currency, sizeof e.currency, "CNY");
    e.event_type = t;
    e.product = LW_PRODUCT_INSTALLMENT;
    e.sequence = seq;
    e.occurred_at = at;
    e.outstanding_fen = out;
    return e;
}

/* Lender ids for the test: the lender name's first character. */
static lw_apply_code_t apply(lw_bstate_t *s, const lw_event_t *e, lw_alert_vec_t *json,
                             lw_bapply_out_t *o)
{
    lw_bstate_bind(s, g_rule_ids, lw_rules_count(g_rules));
    return lw_bstate_apply(s, g_rules, e, 1, (uint32_t)(unsigned char)e->lender_id[0], 1, 1, json,
                           o);
}

static void roundtrip(const lw_bstate_t *s)
{
    lw_sbuf_t a = {0}, b = {0};
    lw_bstate_t d = {0};
    assert_true(lw_bstate_encode(s, &a));
    assert_int_equal(lw_bstate_decode(&d, a.p, a.len), LW_OK);
    lw_bstate_bind(&d, g_rule_ids, lw_rules_count(g_rules));
    assert_true(lw_bstate_encode(&d, &b));
    assert_int_equal(a.len, b.len);
    assert_memory_equal(a.p, b.p, a.len);
    assert_int_equal(d.n_loans, s->n_loans);
    assert_int_equal(d.n_win, s->n_win);
    assert_int_equal(d.n_inq, s->n_inq);
    for (size_t i = 0; i < s->n_inq; i++) {
        assert_int_equal(d.inq[i].at, s->inq[i].at);
        assert_int_equal(d.inq[i].idh, s->inq[i].idh);
        assert_int_equal(d.inq[i].institution, s->inq[i].institution);
        assert_int_equal(d.inq[i].purpose, s->inq[i].purpose);
    }
    assert_int_equal(d.t, s->t);
    assert_int_equal(d.mask, s->mask);
    for (size_t i = 0; i < s->n_loans; i++) {
        assert_string_equal(d.loans[i].loan_id, s->loans[i].loan_id);
        assert_int_equal(d.loans[i].outstanding_fen, s->loans[i].outstanding_fen);
        assert_int_equal(d.loans[i].updated_at, s->loans[i].updated_at);
        assert_int_equal(d.loans[i].status, s->loans[i].status);
    }
    lw_bstate_free(&d);
    lw_sbuf_free(&a);
    lw_sbuf_free(&b);
}

static void test_layout(void **state)
{
    (void)state;
    lw_bstate_t s = {0};
    lw_alert_vec_t json = {0};
    lw_sbuf_t enc = {0};
    lw_bapply_out_t o;
    lw_bstate_reset(&s);
    roundtrip(&s);
    /* three active instalment loans from three lenders, opened > 30 days ago */
    const char *loans[] = {"HB-71bb54d8-1", "WLDI-71bb54d8-2", "JT-71bb54d8-3"};
    const char *lenders[] = {"ANT", "BANK-BOB", "JD-MICRO"};
    for (int i = 0; i < 3; i++) {
        lw_event_t e = mk(LW_EVENT_DRAWDOWN, loans[i], lenders[i], 1, T0 + i * HOUR, 1420000);
        e.credit_limit_fen = 5000000;
        assert_int_equal(apply(&s, &e, &json, &o), LW_APPLY_APPLIED);
    }
    lw_event_t r = mk(LW_EVENT_REPAYMENT, loans[0], lenders[0], 2, T0 + 40 * DAY, 1000000);
    r.has_annual_income = true;
    r.annual_income_fen = 30000000;
    assert_int_equal(apply(&s, &r, &json, &o), LW_APPLY_APPLIED);
    assert_int_equal(s.n_win, 0); /* the new-loan entries left the 30-day window */
    roundtrip(&s);
    assert_true(lw_bstate_encode(&s, &enc));
    /* the memory aim: three loans and an income fit Redis's 112-byte allocation
     * class with the string's 4 bytes of header and NUL */
    assert_in_range(enc.len, 40, 108);

    /* every truncation and every flipped byte: refused or decoded, never an overrun */
    lw_bstate_t d = {0};
    for (size_t cut = 0; cut < enc.len; cut++)
        assert_int_equal(lw_bstate_decode(&d, enc.p, cut), LW_ERR_PARSE);
    for (size_t i = 0; i < enc.len; i++)
        for (int v = 0; v < 256; v += 51) {
            char *bad = malloc(enc.len);
            memcpy(bad, enc.p, enc.len);
            bad[i] = (char)v;
            lw_err_t err = lw_bstate_decode(&d, bad, enc.len);
            assert_true(err == LW_OK || err == LW_ERR_PARSE);
            free(bad);
        }
    /* another layout version is refused */
    enc.p[0] = 1;
    assert_int_equal(lw_bstate_decode(&d, enc.p, enc.len), LW_ERR_PARSE);
    lw_bstate_free(&d);
    lw_bstate_free(&s);
    free(json.v);
    lw_sbuf_free(&enc);
}

/* Loan ids in the base64url alphabet are packed 6 bits a character, others
 * kept as they are; both read back exactly. */
static void test_loan_ids(void **state)
{
    (void)state;
    const char *ids[] = {"WLDI-7e57be9c-2999999", "A", "loan.1:x/y", "abc_DEF-0123456789",
                         "0123456789012345678901234567890123456789012345678901234567890123"};
    for (size_t k = 0; k < sizeof ids / sizeof ids[0]; k++) {
        lw_bstate_t s = {0}, d = {0};
        lw_alert_vec_t json = {0};
        lw_sbuf_t a = {0};
        lw_bapply_out_t o;
        lw_bstate_reset(&s);
        lw_event_t e = mk(LW_EVENT_DRAWDOWN, ids[k], "a", 1, T0, 100);
        assert_int_equal(apply(&s, &e, &json, &o), LW_APPLY_APPLIED);
        assert_true(lw_bstate_encode(&s, &a));
        assert_int_equal(lw_bstate_decode(&d, a.p, a.len), LW_OK);
        assert_string_equal(d.loans[0].loan_id, ids[k]);
        /* the id's bytes: 1 + n raw, 1 + ceil(6n / 8) packed */
        size_t n = strlen(ids[k]), idbytes = strchr(ids[k], '.') ? n : (6 * n + 7) / 8;
        lw_bstate_t empty = {0};
        lw_sbuf_t b = {0};
        lw_bstate_reset(&empty);
        empty.t = s.t;
        empty.fence_writer = s.fence_writer;
        empty.fence_epoch = s.fence_epoch;
        empty.mask = s.mask;
        assert_true(lw_bstate_encode(&empty, &b));
        /* header + window entry (11: 1 + 6 + 4) + loan: 6 one-byte fields (platform,
         * lender, status, sequence, outstanding, time; no past due, no limit written),
         * the id's length byte and its bytes */
        assert_int_equal(a.len, b.len + 11 + 7 + idbytes);
        lw_bstate_free(&s);
        lw_bstate_free(&d);
        lw_bstate_free(&empty);
        free(json.v);
        lw_sbuf_free(&a);
        lw_sbuf_free(&b);
    }
}

static void test_sequence_rule(void **state)
{
    (void)state;
    lw_bstate_t s = {0};
    lw_alert_vec_t json = {0};
    lw_bapply_out_t o;
    lw_bstate_reset(&s);
    lw_event_t d1 = mk(LW_EVENT_DRAWDOWN, "L1", "a", 1, T0, 500);
    lw_event_t r2 = mk(LW_EVENT_REPAYMENT, "L1", "a", 2, T0 + HOUR, 300);
    lw_event_t c3 = mk(LW_EVENT_CLOSURE, "L1", "a", 3, T0 + 2 * HOUR, 0);
    assert_int_equal(apply(&s, &d1, &json, &o), LW_APPLY_APPLIED);
    assert_true(o.changed);
    assert_int_equal(apply(&s, &d1, &json, &o), LW_APPLY_DUPLICATE);
    assert_false(o.changed);
    assert_int_equal(apply(&s, &c3, &json, &o), LW_APPLY_APPLIED);
    /* the older repayment arrives late: ignored, the loan stays closed */
    assert_int_equal(apply(&s, &r2, &json, &o), LW_APPLY_OUT_OF_ORDER);
    assert_int_equal(s.n_loans, 1);
    assert_int_equal(s.loans[0].status, LW_LOAN_CLOSED);
    assert_int_equal(s.loans[0].sequence, 3);
    assert_int_equal(s.t, T0 + 2 * HOUR);
    /* one new-loan window entry, not two */
    assert_int_equal(s.n_win, 1);
    assert_int_equal(s.win[0].idh & 1, 0);
    /* an application is counted once by its id */
    lw_event_t ap = mk(LW_EVENT_APPLICATION, "A1", "b", 1, T0 + 3 * HOUR, 0);
    assert_int_equal(apply(&s, &ap, &json, &o), LW_APPLY_APPLIED);
    assert_int_equal(apply(&s, &ap, &json, &o), LW_APPLY_DUPLICATE);
    assert_int_equal(s.n_win, 2);
    assert_int_equal(s.win[1].idh & 1, 1);
    assert_int_equal(s.n_loans, 1); /* an application keeps no loan */
    lw_bstate_free(&s);
    free(json.v);
}

static void test_income_cap_and_fence(void **state)
{
    (void)state;
    lw_bstate_t s = {0};
    lw_alert_vec_t json = {0};
    lw_bapply_out_t o;
    lw_bstate_reset(&s);
    /* income 900,000 fen / divisor 3 = cap 300,000 fen */
    lw_event_t d1 = mk(LW_EVENT_DRAWDOWN, "L1", "a", 1, T0, 200000);
    d1.has_annual_income = true;
    d1.annual_income_fen = 900000;
    assert_int_equal(apply(&s, &d1, &json, &o), LW_APPLY_APPLIED);
    assert_int_equal(o.n_fired, 0);
    lw_event_t d2 = mk(LW_EVENT_DRAWDOWN, "L2", "b", 1, T0 + 1, 100001);
    assert_int_equal(apply(&s, &d2, &json, &o), LW_APPLY_APPLIED);
    assert_int_equal(o.n_fired, 1);
    const lw_rule_t *r = lw_rules_get(g_rules, (size_t)o.fired[0]);
    assert_string_equal(r->id, "income_cap");
    /* the alert is one struct, and its JSON (rendered from it by the codec's
     * field table, as the store does for Redis) reads back as the same alert */
    assert_int_equal(json.n, 1);
    const lw_alert_t *a = &json.v[0];
    assert_int_equal(a->total_outstanding_fen, 300001);
    assert_int_equal(a->limit, 300000);
    assert_true(a->has_annual_income);
    assert_int_equal(a->annual_income_fen, 900000);
    assert_string_equal(a->trigger_lender_id, "b");
    assert_string_equal(a->rule_id, "income_cap");
    char id[33];
    lw_alert_id(BID, "income_cap", d2.event_id, id);
    assert_string_equal(a->alert_id, id);
    char j[4096];
    int n = lw_alert_to_json(a, j, sizeof j);
    assert_true(n > 0);
    assert_non_null(strstr(j, "\"total_outstanding_fen\":300001,"));
    assert_non_null(strstr(j, "\"annual_income_fen\":900000,"));
    lw_alert_t al;
    lw_field_error_t fe;
    assert_int_equal(lw_alert_from_json(j, (size_t)n, &al, &fe), LW_OK);
    assert_memory_equal(&al, a, sizeof al);
    assert_true(s.mask & 1);
    assert_true(s.mask & LW_MASK_HIST);
    /* still above: no second alert */
    lw_event_t d3 = mk(LW_EVENT_DRAWDOWN, "L3", "c", 1, T0 + 2, 5);
    assert_int_equal(apply(&s, &d3, &json, &o), LW_APPLY_APPLIED);
    assert_int_equal(o.n_fired, 0);
    /* below again: cleared */
    lw_event_t p2 = mk(LW_EVENT_REPAYMENT, "L2", "b", 2, T0 + 3, 0);
    assert_int_equal(apply(&s, &p2, &json, &o), LW_APPLY_APPLIED);
    assert_int_equal(o.n_cleared, 1);
    assert_false(s.mask & 1);
    assert_true(s.mask & LW_MASK_HIST);

    /* fencing: written with epoch 1 of writer 7 (a topic and partition); epoch
     * 0 of writer 7 is refused; another writer (another topic, or another
     * partition) at any epoch, or a newer epoch of writer 7, is not */
    lw_event_t x = mk(LW_EVENT_REPAYMENT, "L1", "a", 2, T0 + 4, 1);
    assert_int_equal(lw_bstate_apply(&s, g_rules, &x, 1, 'a', 7, 1, &json, &o), LW_APPLY_APPLIED);
    assert_int_equal(s.fence_writer, 7);
    x.sequence = 3;
    assert_int_equal(lw_bstate_apply(&s, g_rules, &x, 1, 'a', 7, 0, &json, &o), LW_APPLY_FENCED);
    assert_false(o.changed);
    assert_int_equal(s.fence_epoch, 1);
    assert_int_equal(lw_bstate_apply(&s, g_rules, &x, 1, 'a', 8, 0, &json, &o), LW_APPLY_APPLIED);
    assert_int_equal(s.fence_writer, 8);
    assert_int_equal(s.fence_epoch, 0);
    x.sequence = 4;
    assert_int_equal(lw_bstate_apply(&s, g_rules, &x, 1, 'a', 8, 2, &json, &o), LW_APPLY_APPLIED);
    assert_int_equal(s.fence_epoch, 2);
    /* a layout version 2 state (the stamp named a partition, not its topic)
     * is read with no stamp: it fences nobody, and is written back as 3 */
    lw_sbuf_t enc = {0};
    lw_bstate_t d = {0};
    assert_true(lw_bstate_encode(&s, &enc));
    assert_int_equal(enc.p[0], LW_STATE_VERSION);
    /* version 5 with no inquiry is version 4's bytes and a 0 count */
    assert_int_equal(enc.p[enc.len - 1], 0);
    enc.len--;
    enc.p[0] = LW_STATE_VERSION_V2;
    assert_int_equal(lw_bstate_decode(&d, enc.p, enc.len), LW_OK);
    assert_int_equal(d.fence_writer, 0);
    assert_int_equal(d.fence_epoch, 0);
    assert_int_equal(d.n_loans, s.n_loans);
    x.sequence = 5;
    assert_int_equal(lw_bstate_apply(&d, g_rules, &x, 1, 'a', 8, 1, &json, &o), LW_APPLY_APPLIED);
    lw_bstate_free(&d);
    lw_sbuf_free(&enc);
    lw_bstate_free(&s);
    free(json.v);
}

static void test_multi_lender_stacking_delinquent(void **state)
{
    (void)state;
    lw_bstate_t s = {0};
    lw_alert_vec_t json = {0};
    lw_bapply_out_t o;
    lw_bstate_reset(&s);
    /* small loans (under the income cap) from distinct lenders within hours */
    const char *lenders[] = {"a", "b", "c", "d", "e"};
    size_t fired[LW_RULES_MAX + 1] = {0};
    for (int i = 0; i < 5; i++) {
        char loan[8];
        snprintf(loan, sizeof loan, "L%d", i);
        lw_event_t e = mk(LW_EVENT_DRAWDOWN, loan, lenders[i], 1, T0 + i * HOUR, 100);
        assert_int_equal(apply(&s, &e, &json, &o), LW_APPLY_APPLIED);
        for (size_t k = 0; k < o.n_fired; k++)
            fired[o.fired[k]]++;
    }
    const lw_rule_t *ml = lw_rules_find(g_rules, "multi_lender");
    const lw_rule_t *sk = lw_rules_find(g_rules, "stacking");
    assert_non_null(ml);
    assert_non_null(sk);
    assert_int_equal(fired[ml - lw_rules_get(g_rules, 0)], 1);
    assert_int_equal(fired[sk - lw_rules_get(g_rules, 0)], 1);

    /* a loan goes past due; a drawdown elsewhere then fires borrow_while_delinquent */
    const lw_rule_t *bd = lw_rules_find(g_rules, "borrow_while_delinquent");
    int bdi = (int)(bd - lw_rules_get(g_rules, 0));
    lw_event_t dq = mk(LW_EVENT_DELINQUENCY, "L0", "a", 2, T0 + 10 * DAY, 100);
    dq.days_past_due = 5;
    dq.past_due_fen = 50;
    assert_int_equal(apply(&s, &dq, &json, &o), LW_APPLY_APPLIED);
    for (size_t k = 0; k < o.n_fired; k++)
        assert_int_not_equal(o.fired[k], bdi);
    lw_event_t dd = mk(LW_EVENT_DRAWDOWN, "L1", "b", 2, T0 + 10 * DAY + 1, 200);
    assert_int_equal(apply(&s, &dd, &json, &o), LW_APPLY_APPLIED);
    bool got = false;
    for (size_t k = 0; k < o.n_fired; k++)
        got |= o.fired[k] == bdi;
    assert_true(got);
    /* cured: cleared */
    lw_event_t cu = mk(LW_EVENT_REPAYMENT, "L0", "a", 3, T0 + 11 * DAY, 50);
    assert_int_equal(apply(&s, &cu, &json, &o), LW_APPLY_APPLIED);
    got = false;
    for (size_t k = 0; k < o.n_cleared; k++)
        got |= o.cleared[k] == bdi;
    assert_true(got);
    roundtrip(&s);
    lw_bstate_free(&s);
    free(json.v);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Issue 21 item 2: one borrower with thousands of lenders. Counting distinct
 * lenders pairwise made 4000 drawdowns from distinct lenders take 68 s (59
 * events/s); with a hash set it is a pass per event. The alert that fires at
 * the end counts every lender exactly. */
static void test_many_lenders(void **state)
{
    (void)state;
    lw_bstate_t s = {0};
    lw_alert_vec_t al = {0};
    lw_bapply_out_t o;
    const int n = 4000;
    double t0 = now_s();
    for (int i = 0; i < n; i++) {
        char loan[16], lender[16];
        snprintf(loan, sizeof loan, "L%d", i);
        snprintf(lender, sizeof lender, "bank%d", i);
        lw_event_t e = mk(LW_EVENT_DRAWDOWN, loan, lender, 1, T0 + i * 1000LL, 100);
        assert_int_equal(lw_bstate_apply(&s, g_rules, &e, 1, (uint32_t)i + 1, 1, 1, &al, &o),
                         LW_APPLY_APPLIED);
    }
    double t1 = now_s();
    /* a big drawdown from one more lender: income_cap fires, counting all */
    lw_event_t big = mk(LW_EVENT_DRAWDOWN, "BIG", "bankX", 1, T0 + n * 1000LL, 40000000);
    size_t before = al.n;
    assert_int_equal(lw_bstate_apply(&s, g_rules, &big, 1, (uint32_t)n + 1, 1, 1, &al, &o),
                     LW_APPLY_APPLIED);
    assert_int_equal(al.n, before + 1);
    assert_string_equal(al.v[before].rule_id, "income_cap");
    assert_int_equal(al.v[before].active_lenders, n + 1);
    assert_int_equal(al.v[before].active_loans, n + 1);
    assert_int_equal(al.v[before].total_outstanding_fen, 100LL * n + 40000000);
    lw_bstate_free(&s);
    /* 3000 applications from distinct lenders (window entries): 15.5 s before */
    double t2 = now_s();
    for (int i = 0; i < 3000; i++) {
        char loan[16], lender[16];
        snprintf(loan, sizeof loan, "A%d", i);
        snprintf(lender, sizeof lender, "bank%d", i);
        lw_event_t e = mk(LW_EVENT_APPLICATION, loan, lender, 1, T0 + i * 1000LL, 0);
        assert_int_equal(lw_bstate_apply(&s, g_rules, &e, 1, (uint32_t)i + 1, 1, 1, &al, &o),
                         LW_APPLY_APPLIED);
    }
    double t3 = now_s();
    print_message("many lenders: %d drawdowns from distinct lenders %.3f s, 3000 applications "
                  "%.3f s\n",
                  n, t1 - t0, t3 - t2);
    /* generous for sanitizer builds; the pairwise count took 68 s + 15.5 s */
    assert_true(t1 - t0 < 5.0);
    assert_true(t3 - t2 < 5.0);
    lw_bstate_free(&s);
    free(al.v);
}

/* Limits per borrower: the event past a limit is refused with its reason and
 * changes nothing; other events of the borrower still apply. */
static void test_limits(void **state)
{
    (void)state;
    lw_rules_t *rules = lw_rules_default();
    lw_rules_set_limits(rules, 10, 12);
    assert_int_equal(lw_rules_max_loans(rules), 10);
    assert_int_equal(lw_rules_max_window(rules), 12);
    lw_bstate_t s = {0};
    lw_alert_vec_t al = {0};
    lw_bapply_out_t o;
    for (int i = 0; i < 10; i++) {
        char loan[16];
        snprintf(loan, sizeof loan, "L%d", i);
        lw_event_t e = mk(LW_EVENT_DRAWDOWN, loan, "a", 1, T0 + i * HOUR, 100);
        assert_int_equal(lw_bstate_apply(&s, rules, &e, 1, 1, 1, 1, &al, &o), LW_APPLY_APPLIED);
    }
    lw_sbuf_t a = {0}, b = {0};
    assert_true(lw_bstate_encode(&s, &a));
    lw_event_t e = mk(LW_EVENT_DRAWDOWN, "L10", "a", 1, T0 + 11 * HOUR, 100);
    assert_int_equal(lw_bstate_apply(&s, rules, &e, 1, 1, 1, 1, &al, &o), LW_APPLY_REFUSED);
    assert_non_null(strstr(o.reason, "--max-loans 10"));
    assert_false(o.changed);
    assert_true(lw_bstate_encode(&s, &b));
    assert_int_equal(a.len, b.len);
    assert_memory_equal(a.p, b.p, a.len); /* not applied in part */
    /* an existing loan still changes */
    lw_event_t r = mk(LW_EVENT_REPAYMENT, "L3", "a", 2, T0 + 12 * HOUR, 50);
    assert_int_equal(lw_bstate_apply(&s, rules, &r, 1, 1, 1, 1, &al, &o), LW_APPLY_APPLIED);
    /* window entries: 10 new loans + 2 applications, the 13th entry refused */
    for (int i = 0; i < 2; i++) {
        char id[16];
        snprintf(id, sizeof id, "A%d", i);
        lw_event_t ap = mk(LW_EVENT_APPLICATION, id, "b", 1, T0 + 13 * HOUR, 0);
        assert_int_equal(lw_bstate_apply(&s, rules, &ap, 1, 2, 1, 1, &al, &o), LW_APPLY_APPLIED);
    }
    lw_event_t ap = mk(LW_EVENT_APPLICATION, "A2", "b", 1, T0 + 13 * HOUR, 0);
    assert_int_equal(lw_bstate_apply(&s, rules, &ap, 1, 2, 1, 1, &al, &o), LW_APPLY_REFUSED);
    assert_non_null(strstr(o.reason, "--max-window-entries 12"));
    assert_int_equal(s.n_win, 12);
    /* 31 days on, the old entries are pruned and it applies */
    ap.occurred_at = T0 + 31 * DAY;
    assert_int_equal(lw_bstate_apply(&s, rules, &ap, 1, 2, 1, 1, &al, &o), LW_APPLY_APPLIED);
    assert_int_equal(s.n_win, 1);
    lw_sbuf_free(&a);
    lw_sbuf_free(&b);
    lw_bstate_free(&s);
    free(al.v);
    lw_rules_destroy(rules);
}

/* Item 4: a stored state whose total would pass INT64_MAX (1100 loans of
 * 2^53 fen: a state string may hold them) refuses the event, with its
 * reason, instead of overflowing (UB). */
static void test_overflow_refused(void **state)
{
    (void)state;
    lw_bstate_t s = {0};
    lw_alert_vec_t al = {0};
    lw_bapply_out_t o;
    assert_true(lw_bstate_loans_room(&s, 1100));
    s.t = T0;
    for (size_t i = 0; i < 1100; i++) {
        lw_bloan_t *l = &s.loans[s.n_loans++];
        memset(l, 0, sizeof *l);
        l->platform = 1;
        l->lender = (uint32_t)i + 1;
        snprintf(l->loan_id, sizeof l->loan_id, "O%zu", i);
        l->status = LW_LOAN_ACTIVE;
        l->sequence = 1;
        l->outstanding_fen = LW_STATE_NUM_MAX;
        l->updated_at = T0;
    }
    lw_sbuf_t a = {0}, b = {0};
    assert_true(lw_bstate_encode(&s, &a));
    lw_bstate_t d = {0};
    assert_int_equal(lw_bstate_decode(&d, a.p, a.len), LW_OK); /* such a state decodes */
    lw_event_t r = mk(LW_EVENT_REPAYMENT, "O7", "a", 2, T0 + HOUR, 5);
    assert_int_equal(lw_bstate_apply(&d, g_rules, &r, 1, 8, 1, 1, &al, &o), LW_APPLY_REFUSED);
    assert_non_null(strstr(o.reason, "overflow"));
    assert_true(lw_bstate_encode(&d, &b));
    assert_int_equal(a.len, b.len);
    assert_memory_equal(a.p, b.p, a.len);
    /* a new loan too: put back, not kept */
    lw_event_t n = mk(LW_EVENT_DRAWDOWN, "NEW", "a", 1, T0 + HOUR, 5);
    assert_int_equal(lw_bstate_apply(&d, g_rules, &n, 1, 8, 1, 1, &al, &o), LW_APPLY_REFUSED);
    assert_int_equal(d.n_loans, 1100);
    lw_sbuf_free(&a);
    lw_sbuf_free(&b);
    lw_bstate_free(&s);
    lw_bstate_free(&d);
    free(al.v);
}

/* ---- Issue 21 item 12: open alerts by rule id across edits of the pack ---- */

/* The pack's rule ids as lw:strings would number them: by name, so every
 * pack gives a rule the same id. */
static uint32_t name_id(const char *id)
{
    static const char *names[] = {"income_cap",    "multi_lender",
                                  "stacking",      "borrow_while_delinquent",
                                  "income_cap_v2", "big_cap"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (!strcmp(names[i], id))
            return (uint32_t)(201 + i);
    fail_msg("unknown rule %s", id);
    return 0;
}

typedef struct pack {
    lw_rules_t *r;
    uint32_t ids[LW_RULES_MAX];
} pack_t;

static pack_t pack(const char *text)
{
    pack_t p;
    char err[256];
    p.r = lw_rules_parse(text, "test", err, sizeof err);
    if (!p.r)
        fail_msg("%s", err);
    for (size_t i = 0; i < lw_rules_count(p.r); i++)
        p.ids[i] = name_id(lw_rules_get(p.r, i)->id);
    return p;
}

/* "A restart": the state string written under one pack, read under another. */
static void restart(lw_bstate_t *s, const pack_t *p)
{
    lw_sbuf_t b = {0};
    assert_true(lw_bstate_encode(s, &b));
    assert_int_equal((unsigned char)b.p[0], LW_STATE_VERSION);
    assert_int_equal(lw_bstate_decode(s, b.p, b.len), LW_OK);
    lw_bstate_bind(s, p->ids, lw_rules_count(p->r));
    lw_sbuf_free(&b);
}

static size_t pos(const pack_t *p, const char *id)
{
    const lw_rule_t *r = lw_rules_find(p->r, id);
    assert_non_null(r);
    return (size_t)(r - lw_rules_get(p->r, 0));
}

static bool is_open(const lw_bstate_t *s, const pack_t *p, const char *id)
{
    return s->mask & ((uint64_t)1 << pos(p, id));
}

static size_t fires(const pack_t *p, lw_bstate_t *s, const lw_event_t *e, const char *id)
{
    lw_alert_vec_t al = {0};
    lw_bapply_out_t o;
    lw_bstate_bind(s, p->ids, lw_rules_count(p->r));
    assert_int_equal(
        lw_bstate_apply(s, p->r, e, 1, (uint32_t)(unsigned char)e->lender_id[0], 1, 1, &al, &o),
        LW_APPLY_APPLIED);
    size_t n = 0;
    for (size_t k = 0; k < o.n_fired; k++)
        n += !strcmp(lw_rules_get(p->r, (size_t)o.fired[k])->id, id);
    free(al.v);
    return n;
}

#define DEFAULT_PACK                                                                               \
    "income_cap 1 CRITICAL cap_fen=30000000 income_divisor=3\n"                                    \
    "multi_lender 1 WARNING min_lenders=4\n"                                                       \
    "stacking 1 WARNING min_lenders=5 window=7d\n"                                                 \
    "borrow_while_delinquent 1 CRITICAL\n"

static void test_pack_edits(void **state)
{
    (void)state;
    pack_t def = pack(DEFAULT_PACK);
    /* the case: the same four rules, stacking moved to the top */
    pack_t moved = pack("stacking 1 WARNING min_lenders=5 window=7d\n"
                        "income_cap 1 CRITICAL cap_fen=30000000 income_divisor=3\n"
                        "multi_lender 1 WARNING min_lenders=4\n"
                        "borrow_while_delinquent 1 CRITICAL\n");
    /* a rule inserted first; income_cap removed; income_cap with a new
     * version and a cap it no longer passes; the same, still passed */
    pack_t added = pack("big_cap 1 CRITICAL kind=income_cap cap_fen=35000000\n" DEFAULT_PACK);
    pack_t removed = pack("multi_lender 1 WARNING min_lenders=4\n"
                          "stacking 1 WARNING min_lenders=5 window=7d\n");
    pack_t raised = pack("income_cap 2 CRITICAL cap_fen=90000000 income_divisor=3\n"
                         "multi_lender 1 WARNING min_lenders=4\n");
    pack_t v2 = pack("multi_lender 1 WARNING min_lenders=4\n"
                     "income_cap 2 WARNING cap_fen=20000000 income_divisor=3\n");

    lw_bstate_t s = {0};
    lw_event_t d1 = mk(LW_EVENT_DRAWDOWN, "L1", "a", 1, T0, 31000000);
    assert_int_equal(fires(&def, &s, &d1, "income_cap"), 1);
    assert_true(is_open(&s, &def, "income_cap"));

    /* reordered: still open at its new position, no second alert */
    restart(&s, &moved);
    assert_true(is_open(&s, &moved, "income_cap"));
    assert_false(is_open(&s, &moved, "stacking"));
    lw_event_t d2 = mk(LW_EVENT_DRAWDOWN, "L1", "a", 2, T0 + HOUR, 32000000);
    assert_int_equal(fires(&moved, &s, &d2, "income_cap"), 0);

    /* added: the new rule starts closed and fires on its own condition at
     * the borrower's next event; income_cap stays open, no second alert */
    restart(&s, &added);
    assert_true(is_open(&s, &added, "income_cap"));
    assert_false(is_open(&s, &added, "big_cap"));
    lw_event_t d3 = mk(LW_EVENT_DRAWDOWN, "L1", "a", 3, T0 + 2 * HOUR, 36000000);
    lw_bstate_t c = {0};
    lw_sbuf_t keep = {0};
    assert_true(lw_bstate_encode(&s, &keep));
    assert_int_equal(lw_bstate_decode(&c, keep.p, keep.len), LW_OK);
    assert_int_equal(fires(&added, &c, &d3, "income_cap"), 0);
    lw_bstate_bind(&c, added.ids, lw_rules_count(added.r));
    assert_true(is_open(&c, &added, "big_cap"));
    lw_bstate_free(&c);
    lw_sbuf_free(&keep);

    /* removed: income_cap is kept open, dormant (nothing evaluates it), and
     * written back; when it returns it is still open: no second alert */
    restart(&s, &removed);
    assert_int_equal(s.n_open, 1);
    assert_int_equal(s.open[0], name_id("income_cap"));
    lw_event_t d4 = mk(LW_EVENT_DRAWDOWN, "L1", "a", 4, T0 + 3 * HOUR, 37000000);
    assert_int_equal(fires(&removed, &s, &d4, "multi_lender"), 0);
    restart(&s, &def);
    assert_int_equal(s.n_open, 0);
    assert_true(is_open(&s, &def, "income_cap"));
    lw_event_t d5 = mk(LW_EVENT_DRAWDOWN, "L1", "a", 5, T0 + 4 * HOUR, 38000000);
    assert_int_equal(fires(&def, &s, &d5, "income_cap"), 0);

    /* new version, threshold passed no more: it clears at the next event */
    restart(&s, &raised);
    assert_true(is_open(&s, &raised, "income_cap"));
    lw_event_t d6 = mk(LW_EVENT_DRAWDOWN, "L1", "a", 6, T0 + 5 * HOUR, 38000001);
    lw_alert_vec_t al = {0};
    lw_bapply_out_t o;
    assert_int_equal(lw_bstate_apply(&s, raised.r, &d6, 1, 'a', 1, 1, &al, &o), LW_APPLY_APPLIED);
    assert_int_equal(o.n_fired, 0);
    assert_int_equal(o.n_cleared, 1);
    assert_int_equal(o.cleared[0], (int)pos(&raised, "income_cap"));
    assert_false(is_open(&s, &raised, "income_cap"));
    free(al.v);

    /* new version, still passed (and a new severity): one episode, one alert */
    restart(&s, &v2);
    lw_event_t d7 = mk(LW_EVENT_DRAWDOWN, "L1", "a", 7, T0 + 6 * HOUR, 38000002);
    assert_int_equal(fires(&v2, &s, &d7, "income_cap"), 1); /* it had cleared above */
    restart(&s, &def);
    lw_event_t d8 = mk(LW_EVENT_DRAWDOWN, "L1", "a", 8, T0 + 7 * HOUR, 38000003);
    assert_int_equal(fires(&def, &s, &d8, "income_cap"), 0); /* version 2 -> 1: same episode */

    lw_bstate_free(&s);
    pack_t all[] = {def, moved, added, removed, raised, v2};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        lw_rules_destroy(all[i].r);
}

/* A version 3 state's mask is read by position in the pack in force; the
 * state is written back as version 4, its open rules by id. */
static void test_layout_v3_read(void **state)
{
    (void)state;
    pack_t def = pack(DEFAULT_PACK);
    /* v3: version, writer 4, epoch 7, t, mask (income_cap + stacking + hist), 0 loans, 0 entries */
    unsigned char v3[32];
    size_t n = 0;
    v3[n++] = 3;
    v3[n++] = 4;
    v3[n++] = 7;
    int64_t t = T0;
    while (t >= 0x80) {
        v3[n++] = (unsigned char)(t | 0x80);
        t >>= 7;
    }
    v3[n++] = (unsigned char)t;
    uint64_t m = 1 | 4 | LW_MASK_HIST;
    while (m >= 0x80) {
        v3[n++] = (unsigned char)(m | 0x80);
        m >>= 7;
    }
    v3[n++] = (unsigned char)m;
    v3[n++] = 0;
    v3[n++] = 0;
    lw_bstate_t s = {0};
    assert_int_equal(lw_bstate_decode(&s, v3, n), LW_OK);
    assert_int_equal(s.fence_writer, 4);
    lw_bstate_bind(&s, def.ids, lw_rules_count(def.r));
    assert_true(is_open(&s, &def, "income_cap"));
    assert_true(is_open(&s, &def, "stacking"));
    assert_false(is_open(&s, &def, "multi_lender"));
    lw_sbuf_t b = {0};
    assert_true(lw_bstate_encode(&s, &b));
    assert_int_equal((unsigned char)b.p[0], 5);
    /* header: 5, writer, epoch, t (6 bytes), 2*2+1, ids 201 and 203 (2 bytes each) */
    assert_int_equal((unsigned char)b.p[9], 2 * 2 + 1);
    /* no longer than the version 3 string: 2 id bytes + 1 instead of a 5-byte mask */
    assert_true(b.len <= n + 5); /* and the inquiry count */
    lw_bstate_t d = {0};
    assert_int_equal(lw_bstate_decode(&d, b.p, b.len), LW_OK);
    assert_int_equal(d.n_open, 2);
    lw_bstate_bind(&d, def.ids, lw_rules_count(def.r));
    assert_int_equal(d.mask, s.mask);
    /* no alert ever: one byte, 0 */
    lw_bstate_reset(&d);
    b.len = 0;
    assert_true(lw_bstate_encode(&d, &b));
    assert_int_equal(b.len, 8); /* version, writer, epoch, t, alerts, loans, entries, inquiries */
    lw_sbuf_free(&b);
    lw_bstate_free(&s);
    lw_bstate_free(&d);
    lw_rules_destroy(def.r);
}

/* One application from `lender` at `at` into s under pack rs; the rules that fired. */
static size_t app_fired(lw_bstate_t *s, lw_rules_t *rs, const uint32_t *ids, const char *loan,
                        const char *lender, int64_t at, bool fired[LW_RULES_MAX])
{
    lw_alert_vec_t al = {0};
    lw_bapply_out_t o;
    lw_event_t e = mk(LW_EVENT_APPLICATION, loan, lender, 1, at, 0);
    lw_bstate_bind(s, ids, lw_rules_count(rs));
    assert_int_equal(
        lw_bstate_apply(s, rs, &e, 1, (uint32_t)(unsigned char)lender[0], 1, 1, &al, &o),
        LW_APPLY_APPLIED);
    memset(fired, 0, LW_RULES_MAX * sizeof *fired);
    for (size_t k = 0; k < o.n_fired; k++)
        fired[o.fired[k]] = true;
    free(al.v);
    return o.n_fired;
}

/* Issue 20 item 3: windows of 1h, 24h and 90d in one pack, each checked at
 * its edge in event time: an entry exactly a window old is out of it, one
 * a millisecond younger is in. The 90d pack keeps entries 90 days; the
 * default pack prunes them after 30. */
static void test_window_edges(void **state)
{
    (void)state;
    char es[256];
    lw_rules_t *rs = lw_rules_parse("stack_1h 1 INFO kind=stacking window=1h min_lenders=2\n"
                                    "stack_24h 1 INFO kind=stacking window=24h min_lenders=2\n"
                                    "stack_90d 1 INFO kind=stacking window=90d min_lenders=2\n",
                                    "t", es, sizeof es);
    if (!rs)
        fail_msg("%s", es);
    static const int64_t w[3] = {HOUR, DAY, 90 * DAY};
    bool f[LW_RULES_MAX];
    for (int r = 0; r < 3; r++) {
        /* just inside: the second lender makes 2 in window r (and every longer one) */
        lw_bstate_t s = {0};
        app_fired(&s, rs, g_rule_ids, "A1", "a", T0, f);
        app_fired(&s, rs, g_rule_ids, "A2", "b", T0 + w[r] - 1, f);
        for (int k = 0; k < 3; k++)
            assert_int_equal(f[k], k >= r);
        roundtrip(&s);
        lw_bstate_free(&s);
        /* at the edge: the first entry is exactly w[r] old, out of window r */
        memset(&s, 0, sizeof s);
        app_fired(&s, rs, g_rule_ids, "A1", "a", T0, f);
        app_fired(&s, rs, g_rule_ids, "A2", "b", T0 + w[r], f);
        for (int k = 0; k < 3; k++)
            assert_int_equal(f[k], k > r);
        /* the 90d pack keeps the first entry until it leaves the longest window */
        assert_int_equal(s.n_win, r < 2 ? 2 : 1);
        lw_bstate_free(&s);
    }
    /* the default pack (windows up to 7d) keeps 30 days, not 90 */
    lw_bstate_t s = {0};
    app_fired(&s, g_rules, g_rule_ids, "A1", "a", T0, f);
    app_fired(&s, g_rules, g_rule_ids, "A2", "b", T0 + 30 * DAY, f);
    assert_int_equal(s.n_win, 1);
    lw_bstate_free(&s);
    memset(&s, 0, sizeof s);
    app_fired(&s, rs, g_rule_ids, "A1", "a", T0, f);
    app_fired(&s, rs, g_rule_ids, "A2", "b", T0 + 30 * DAY, f);
    assert_int_equal(s.n_win, 2);
    lw_bstate_free(&s);
    lw_rules_destroy(rs);
}

static lw_inquiry_t mkq(const char *id, const char *inst, lw_inquiry_purpose_t p, int64_t at)
{
    lw_inquiry_t q;
    memset(&q, 0, sizeof q);
    snprintf(q.inquiry_id, sizeof q.inquiry_id, "%s", id);
    snprintf(q.borrower_id, sizeof q.borrower_id, BID);
    snprintf(q.institution_id, sizeof q.institution_id, "%s", inst);
    q.purpose = p;
    q.inquired_at = at;
    return q;
}

/* Issue 20 item 2: recorded inquiries in the state. 8 institutions ask for
 * approval and 2 for post-loan management: inquiry_spree (>= 6 distinct
 * institutions in 30 days) fires once, at the 6th; a replay is counted once;
 * the state round-trips (layout 5) and a version 4 string reads as none;
 * the rule clears when time moves the inquiries out of its window. */
static void test_inquiries(void **state)
{
    (void)state;
    lw_bstate_t s = {0};
    lw_alert_vec_t al = {0};
    lw_bapply_out_t o;
    const lw_rule_t *sp = lw_rules_find(g_rules, "inquiry_spree");
    assert_non_null(sp);
    int spi = (int)(sp - lw_rules_get(g_rules, 0));
    int fired = 0;
    lw_bstate_bind(&s, g_rule_ids, lw_rules_count(g_rules));
    for (int i = 0; i < 10; i++) {
        char id[40], inst[16];
        snprintf(id, sizeof id, "inq-%d", i);
        snprintf(inst, sizeof inst, "bank-%d", i);
        lw_inquiry_t q = mkq(
            id, inst, i < 8 ? LW_PURPOSE_LOAN_APPROVAL + i % 3 : LW_PURPOSE_POST_LOAN_MANAGEMENT,
            T0 + i * HOUR);
        assert_int_equal(lw_bstate_inquiry(&s, g_rules, &q, 100 + i, 1, 1, &al, &o),
                         LW_APPLY_APPLIED);
        for (size_t k = 0; k < o.n_fired; k++) {
            assert_int_equal(o.fired[k], spi);
            assert_int_equal(i, 5); /* the 6th distinct institution */
            fired++;
        }
        /* replayed: counted once */
        assert_int_equal(lw_bstate_inquiry(&s, g_rules, &q, 100 + i, 1, 1, &al, &o),
                         LW_APPLY_DUPLICATE);
    }
    assert_int_equal(fired, 1);
    assert_int_equal(al.n, 1);
    assert_string_equal(al.v[0].rule_id, "inquiry_spree");
    assert_string_equal(al.v[0].trigger_event_id, "inq-5");
    assert_int_equal(al.v[0].window_count, 6);
    assert_int_equal(s.n_inq, 10);
    assert_int_equal(s.t, T0 + 9 * HOUR);
    roundtrip(&s);
    /* a version 4 string (no inquiry count) reads as no inquiry */
    lw_bstate_t v4 = {0};
    lw_sbuf_t b = {0};
    assert_true(lw_bstate_encode(&v4, &b));
    b.p[0] = LW_STATE_VERSION_V4;
    assert_int_equal(lw_bstate_decode(&v4, b.p, b.len - 1), LW_OK);
    assert_int_equal(v4.n_inq, 0);
    /* a version 5 string cut before its inquiries is refused */
    lw_sbuf_free(&b);
    assert_true(lw_bstate_encode(&s, &b));
    assert_int_equal(lw_bstate_decode(&v4, b.p, b.len - 3), LW_ERR_PARSE);
    lw_sbuf_free(&b);
    lw_bstate_free(&v4);
    /* a loan event 31 days on: the approval inquiries left the 30 days, the rule clears */
    lw_event_t e = mk(LW_EVENT_DRAWDOWN, "L1", "a", 1, T0 + 31 * DAY, 100);
    assert_int_equal(apply(&s, &e, &al, &o), LW_APPLY_APPLIED);
    bool cleared = false;
    for (size_t k = 0; k < o.n_cleared; k++)
        cleared |= o.cleared[k] == spi;
    assert_true(cleared);
    /* kept 90 days: an inquiry older than that is a replay of one pruned */
    lw_inquiry_t old = mkq("inq-old", "bank-x", LW_PURPOSE_LOAN_APPROVAL, T0 + 31 * DAY - 90 * DAY);
    assert_int_equal(lw_bstate_inquiry(&s, g_rules, &old, 99, 1, 1, &al, &o), LW_APPLY_DUPLICATE);
    /* the limit: refused, nothing changed */
    lw_rules_t *small = lw_rules_default();
    lw_rules_set_inquiry_limit(small, 10);
    lw_inquiry_t more = mkq("inq-more", "bank-y", LW_PURPOSE_LOAN_APPROVAL, T0 + 31 * DAY);
    assert_int_equal(lw_bstate_inquiry(&s, small, &more, 98, 1, 1, &al, &o), LW_APPLY_REFUSED);
    assert_non_null(strstr(o.reason, "--max-inquiries 10"));
    assert_int_equal(s.n_inq, 10);
    lw_rules_destroy(small);
    lw_bstate_free(&s);
    free(al.v);
}

/* A loan whose DRAWDOWN (new partition) is read before its CREDIT_LINE (old
 * partition), after the topic gained partitions: the late CREDIT_LINE is out
 * of order (no loan field moves) but dates the loan's window entry, with its
 * lender, as in partition order; the same event again changes nothing; an
 * older one past the kept window drops the entry (partition order would have
 * pruned it); an out-of-order REPAYMENT moves nothing. Both orders end in
 * the same bytes but for the fence stamp's writer, which both orders set. */
static void test_backdate_window_entry(void **state)
{
    (void)state;
    lw_alert_vec_t json = {0};
    lw_bapply_out_t o;
    lw_event_t cl = mk(LW_EVENT_CREDIT_LINE, "L1", "a", 2, T0, 0);
    lw_event_t dd = mk(LW_EVENT_DRAWDOWN, "L1", "b", 3, T0 + 22 * DAY, 500);
    lw_event_t ap = mk(LW_EVENT_APPLICATION, "A9", "c", 1, T0 + 40 * DAY, 0);
    lw_bstate_t in = {0}, re = {0};
    lw_bstate_reset(&in);
    lw_bstate_reset(&re);
    assert_int_equal(apply(&in, &cl, &json, &o), LW_APPLY_APPLIED);
    assert_int_equal(apply(&in, &dd, &json, &o), LW_APPLY_APPLIED);
    assert_int_equal(apply(&re, &dd, &json, &o), LW_APPLY_APPLIED);
    assert_int_equal(re.n_win, 1);
    assert_int_equal(re.win[0].at, T0 + 22 * DAY);
    uint32_t lh_b = re.win[0].lh;
    assert_int_equal(apply(&re, &cl, &json, &o), LW_APPLY_OUT_OF_ORDER);
    assert_true(o.changed);
    assert_int_equal(re.n_win, 1);
    assert_int_equal(re.win[0].at, T0);
    assert_int_equal(re.win[0].lh, in.win[0].lh);
    assert_true(re.win[0].lh != lh_b);
    assert_int_equal(re.loans[0].sequence, 3);
    assert_int_equal(re.loans[0].outstanding_fen, 500);
    assert_int_equal(re.t, T0 + 22 * DAY);
    /* the same bytes as partition order */
    lw_sbuf_t a = {0}, b = {0};
    assert_true(lw_bstate_encode(&in, &a));
    assert_true(lw_bstate_encode(&re, &b));
    assert_int_equal(a.len, b.len);
    assert_memory_equal(a.p, b.p, a.len);
    roundtrip(&re);
    /* a redelivery changes nothing */
    assert_int_equal(apply(&re, &cl, &json, &o), LW_APPLY_OUT_OF_ORDER);
    assert_false(o.changed);
    lw_event_t r1 = mk(LW_EVENT_REPAYMENT, "L1", "a", 1, T0 - DAY, 100);
    assert_int_equal(apply(&re, &r1, &json, &o), LW_APPLY_OUT_OF_ORDER);
    assert_false(o.changed);
    assert_int_equal(re.win[0].at, T0);
    /* t moves 40 days on; an opening event older than the kept window drops
     * the entry a later one left */
    lw_bstate_t late = {0};
    lw_bstate_reset(&late);
    lw_event_t dd2 = mk(LW_EVENT_DRAWDOWN, "L1", "b", 3, T0 + 22 * DAY, 500);
    assert_int_equal(apply(&late, &dd2, &json, &o), LW_APPLY_APPLIED);
    assert_int_equal(apply(&late, &ap, &json, &o), LW_APPLY_APPLIED);
    assert_int_equal(late.n_win, 2);
    assert_int_equal(apply(&late, &cl, &json, &o), LW_APPLY_OUT_OF_ORDER);
    assert_true(o.changed);
    assert_int_equal(late.n_win, 1);
    assert_int_equal(late.win[0].idh & 1, 1); /* the application's is left */
    /* and partition order ends the same way */
    assert_int_equal(apply(&in, &ap, &json, &o), LW_APPLY_APPLIED);
    lw_sbuf_t c = {0};
    a.len = 0;
    assert_true(lw_bstate_encode(&in, &a));
    assert_true(lw_bstate_encode(&late, &c));
    assert_int_equal(a.len, c.len);
    assert_memory_equal(a.p, c.p, a.len);
    lw_sbuf_free(&a);
    lw_sbuf_free(&b);
    lw_sbuf_free(&c);
    lw_bstate_free(&in);
    lw_bstate_free(&re);
    lw_bstate_free(&late);
    free(json.v);
}

int main(void)
{
    g_rules = lw_rules_default();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_layout),
        cmocka_unit_test(test_loan_ids),
        cmocka_unit_test(test_sequence_rule),
        cmocka_unit_test(test_backdate_window_entry),
        cmocka_unit_test(test_income_cap_and_fence),
        cmocka_unit_test(test_multi_lender_stacking_delinquent),
        cmocka_unit_test(test_many_lenders),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_overflow_refused),
        cmocka_unit_test(test_pack_edits),
        cmocka_unit_test(test_layout_v3_read),
        cmocka_unit_test(test_window_edges),
        cmocka_unit_test(test_inquiries),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    lw_rules_destroy(g_rules);
    return rc;
}
