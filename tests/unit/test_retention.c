/*
 * test_retention.c - retention of ended loans in lw_bstate_apply()
 * (consumers/exposure/src/retention.c, borrower.c), without Redis: a closed
 * loan leaves its borrower's state after its period by event time, a
 * negative one stays 5 years, totals (as the query derives them) do not move,
 * a late event for a pruned loan is refused instead of opening it again, and
 * the same events give the same bytes however they are batched or replayed.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "exposure_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BID  "ABCDEFGHIJKLMNOPQRSTUV"
#define T0   1767225600000LL
#define MS_D 86400000LL
#define YEAR 31557600000LL

static lw_rules_t *g_rules;
static const uint32_t g_rule_ids[LW_RULES_MAX] = {101, 102, 103, 104, 105, 106, 107, 108};

static lw_event_t mk(lw_event_type_t t, const char *loan, int64_t seq, int64_t at, int64_t out)
{
    lw_event_t e;
    memset(&e, 0, sizeof e);
    snprintf(e.event_id, sizeof e.event_id, "%s-%lld", loan, (long long)seq);
    snprintf(e.platform_id, sizeof e.platform_id, "P");
    snprintf(e.lender_id, sizeof e.lender_id, "L%s", loan);
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

static lw_apply_code_t apply(lw_bstate_t *s, const lw_event_t *e, lw_bapply_out_t *o)
{
    lw_alert_vec_t al = {0};
    lw_bstate_bind(s, g_rule_ids, lw_rules_count(g_rules));
    lw_apply_code_t c =
        lw_bstate_apply(s, g_rules, e, 1, (uint32_t)(unsigned char)e->loan_id[0], 1, 1, &al, o);
    free(al.v);
    return c;
}

static bool holds(const lw_bstate_t *s, const char *loan)
{
    for (size_t i = 0; i < s->n_loans; i++)
        if (!strcmp(s->loans[i].loan_id, loan))
            return true;
    return false;
}

/* The total outstanding and active loans as loanwire-query derives them. */
static int64_t total(const lw_bstate_t *s, int32_t *active)
{
    lw_borrower_state_t st;
    char err[256];
    memset(&st, 0, sizeof st);
    assert_int_equal(lw_state_derive(s, &st, BID, err, sizeof err), LW_OK);
    *active = st.active_loans;
    return st.total_outstanding_fen;
}

static int setup(void **state)
{
    (void)state;
    g_rules = lw_rules_default();
    return g_rules ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    lw_rules_destroy(g_rules);
    return 0;
}

static void set_ret(int64_t ended, int64_t neg)
{
    char err[256];
    assert_int_equal(lw_rules_set_retention(g_rules, ended, neg, err, sizeof err), LW_OK);
}

static void test_parse_and_config(void **state)
{
    (void)state;
    int64_t v;
    char err[256];
    assert_true(lw_retention_parse("90d", &v));
    assert_int_equal(v, 90 * MS_D);
    assert_true(lw_retention_parse("5y", &v));
    assert_int_equal(v, 5 * YEAR);
    assert_true(lw_retention_parse("2160h", &v));
    assert_int_equal(v, 90 * MS_D);
    assert_true(lw_retention_parse("off", &v));
    assert_true(v == LW_RETAIN_FOREVER);
    const char *bad[] = {"", "0d", "90", "-1d", "5x", "d", "9999999999999999y", "90d "};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        assert_false(lw_retention_parse(bad[i], &v));
    /* defaults: 90 days and 5 years */
    set_ret(0, 0);
    assert_int_equal(lw_rules_retain_ended(g_rules), 90 * MS_D);
    assert_int_equal(lw_rules_retain_negative(g_rules), 5 * YEAR);
    /* a negative record kept for less than a settled one: refused, with why */
    assert_int_equal(lw_rules_set_retention(g_rules, 90 * MS_D, 30 * MS_D, err, sizeof err),
                     LW_ERR_CONFIG);
    assert_non_null(strstr(err, "--retain-negative"));
    assert_int_equal(lw_rules_retain_ended(g_rules), 90 * MS_D); /* unchanged */
    /* a settled period beyond 5 years (or off) carries the default negative one along */
    set_ret(10 * YEAR, 0);
    assert_int_equal(lw_rules_retain_negative(g_rules), 10 * YEAR);
    set_ret(LW_RETAIN_FOREVER, 0);
    assert_true(lw_rules_retain_negative(g_rules) == LW_RETAIN_FOREVER);
    set_ret(0, 0);
}

/* A closed loan leaves 90 days (event time) after its closure, not before;
 * the totals do not move; a late event for it is refused, not reopened. */
static void test_closed_leaves_after_period(void **state)
{
    (void)state;
    set_ret(0, 0);
    lw_bstate_t s = {0};
    lw_bapply_out_t o;
    lw_bstate_reset(&s);
    lw_event_t e = mk(LW_EVENT_DRAWDOWN, "A1", 1, T0, 100000);
    assert_int_equal(apply(&s, &e, &o), LW_APPLY_APPLIED);
    e = mk(LW_EVENT_DRAWDOWN, "B1", 1, T0 + MS_D, 250000);
    assert_int_equal(apply(&s, &e, &o), LW_APPLY_APPLIED);
    e = mk(LW_EVENT_CLOSURE, "A1", 2, T0 + 10 * MS_D, 0);
    assert_int_equal(apply(&s, &e, &o), LW_APPLY_APPLIED);
    int32_t act;
    assert_int_equal(total(&s, &act), 250000);
    assert_int_equal(act, 1);

    /* exactly 90 days after the closure: still held */
    e = mk(LW_EVENT_REPAYMENT, "B1", 2, T0 + 100 * MS_D, 200000);
    assert_int_equal(apply(&s, &e, &o), LW_APPLY_APPLIED);
    assert_true(holds(&s, "A1"));
    /* 1 ms more: gone, and the total is the same as the query derives it */
    e = mk(LW_EVENT_REPAYMENT, "B1", 3, T0 + 100 * MS_D + 1, 150000);
    assert_int_equal(apply(&s, &e, &o), LW_APPLY_APPLIED);
    assert_false(holds(&s, "A1"));
    assert_int_equal(s.n_loans, 1);
    assert_int_equal(total(&s, &act), 150000);
    assert_int_equal(act, 1);

    /* a redelivered event of the pruned loan (an old drawdown with a balance)
     * must not open it again: refused, with why, and nothing changes */
    lw_sbuf_t before = {0}, after = {0};
    assert_true(lw_bstate_encode(&s, &before));
    e = mk(LW_EVENT_DRAWDOWN, "A1", 1, T0, 100000);
    assert_int_equal(apply(&s, &e, &o), LW_APPLY_REFUSED);
    assert_non_null(strstr(o.reason, "stale"));
    assert_non_null(strstr(o.reason, "A1"));
    assert_false(o.changed);
    e = mk(LW_EVENT_REPAYMENT, "A1", 2, T0 + 5 * MS_D, 40000);
    assert_int_equal(apply(&s, &e, &o), LW_APPLY_REFUSED);
    assert_true(lw_bstate_encode(&s, &after));
    assert_int_equal(before.len, after.len);
    assert_memory_equal(before.p, after.p, before.len);
    assert_int_equal(total(&s, &act), 150000);

    /* a new loan dated within the horizon still opens */
    e = mk(LW_EVENT_DRAWDOWN, "C1", 1, T0 + 95 * MS_D, 70000);
    assert_int_equal(apply(&s, &e, &o), LW_APPLY_APPLIED);
    assert_true(holds(&s, "C1"));
    assert_int_equal(total(&s, &act), 220000);
    lw_sbuf_free(&before);
    lw_sbuf_free(&after);
    lw_bstate_free(&s);
}

/* Written-off (with a balance left) and closed-while-past-due loans stay 5
 * years; the written-off balance counts in no total before or after. */
static void test_negative_stays_5_years(void **state)
{
    (void)state;
    set_ret(0, 0);
    lw_bstate_t s = {0};
    lw_bapply_out_t o;
    lw_bstate_reset(&s);
    lw_event_t e = mk(LW_EVENT_DRAWDOWN, "W1", 1, T0, 800000);
    assert_int_equal(apply(&s, &e, &o), LW_APPLY_APPLIED);
    e = mk(LW_EVENT_DRAWDOWN, "D1", 1, T0, 300000);
    assert_int_equal(apply(&s, &e, &o), LW_APPLY_APPLIED);
    e = mk(LW_EVENT_DRAWDOWN, "K1", 1, T0, 50000);
    assert_int_equal(apply(&s, &e, &o), LW_APPLY_APPLIED);
    e = mk(LW_EVENT_WRITE_OFF, "W1", 2, T0 + 200 * MS_D, 600000);
    assert_int_equal(apply(&s, &e, &o), LW_APPLY_APPLIED);
    e = mk(LW_EVENT_CLOSURE, "D1", 2, T0 + 200 * MS_D, 0);
    e.days_past_due = 95;
    e.past_due_fen = 120000;
    assert_int_equal(apply(&s, &e, &o), LW_APPLY_APPLIED);
    int32_t act;
    assert_int_equal(total(&s, &act), 50000); /* written-off balance: in no total */

    /* 4 years later: both still there (a settled loan would have left) */
    e = mk(LW_EVENT_REPAYMENT, "K1", 2, T0 + 200 * MS_D + 4 * YEAR, 40000);
    assert_int_equal(apply(&s, &e, &o), LW_APPLY_APPLIED);
    assert_true(holds(&s, "W1"));
    assert_true(holds(&s, "D1"));
    /* exactly 5 years after they ended: still there; a ms more: gone */
    e = mk(LW_EVENT_REPAYMENT, "K1", 3, T0 + 200 * MS_D + 5 * YEAR, 30000);
    assert_int_equal(apply(&s, &e, &o), LW_APPLY_APPLIED);
    assert_true(holds(&s, "W1"));
    e = mk(LW_EVENT_REPAYMENT, "K1", 4, T0 + 200 * MS_D + 5 * YEAR + 1, 20000);
    assert_int_equal(apply(&s, &e, &o), LW_APPLY_APPLIED);
    assert_false(holds(&s, "W1"));
    assert_false(holds(&s, "D1"));
    assert_int_equal(s.n_loans, 1);
    assert_int_equal(total(&s, &act), 20000);
    /* the written-off loan's late event: refused, not a new active loan */
    e = mk(LW_EVENT_REPAYMENT, "W1", 3, T0 + 300 * MS_D, 500000);
    assert_int_equal(apply(&s, &e, &o), LW_APPLY_REFUSED);
    assert_int_equal(total(&s, &act), 20000);
    lw_bstate_free(&s);
}

/* "off": nothing leaves and nothing is stale (today's behaviour). */
static void test_off_keeps_everything(void **state)
{
    (void)state;
    set_ret(LW_RETAIN_FOREVER, LW_RETAIN_FOREVER);
    lw_bstate_t s = {0};
    lw_bapply_out_t o;
    lw_bstate_reset(&s);
    lw_event_t e = mk(LW_EVENT_DRAWDOWN, "A1", 1, T0, 100000);
    assert_int_equal(apply(&s, &e, &o), LW_APPLY_APPLIED);
    e = mk(LW_EVENT_CLOSURE, "A1", 2, T0 + MS_D, 0);
    assert_int_equal(apply(&s, &e, &o), LW_APPLY_APPLIED);
    e = mk(LW_EVENT_DRAWDOWN, "B1", 1, T0 + 30 * YEAR, 1000);
    assert_int_equal(apply(&s, &e, &o), LW_APPLY_APPLIED);
    assert_true(holds(&s, "A1"));
    e = mk(LW_EVENT_DRAWDOWN, "C1", 1, T0, 1000);
    assert_int_equal(apply(&s, &e, &o), LW_APPLY_APPLIED);
    set_ret(0, 0);
    lw_bstate_free(&s);
}

/* A pseudo-random 3-year history of one borrower: loans open, repay, close,
 * are written off. Applied (1) event by event on one state, (2) with an
 * encode/decode between every event (a batch of 1, as after a restart), and
 * (3) once more on the final state (a full redelivery): the same bytes. */
static size_t history(lw_event_t *evs, size_t cap)
{
    uint32_t r = 12345;
    size_t n = 0;
    int64_t t = T0;
    for (int loan = 0; loan < 40 && n + 8 <= cap; loan++) {
        char id[16];
        snprintf(id, sizeof id, "L%d", loan);
        t += 20 * MS_D + (r = r * 1103515245 + 12345) % (10 * MS_D);
        int64_t out = 100000 + (r >> 8) % 900000;
        int64_t seq = 1, at = t;
        evs[n++] = mk(LW_EVENT_DRAWDOWN, id, seq++, at, out);
        for (int k = 0; k < 4; k++) {
            at += 25 * MS_D;
            out -= out / 4;
            evs[n++] = mk(LW_EVENT_REPAYMENT, id, seq++, at, out);
        }
        r = r * 1103515245 + 12345;
        at += 10 * MS_D;
        if ((r >> 16) % 5 == 0)
            evs[n++] = mk(LW_EVENT_WRITE_OFF, id, seq++, at, out);
        else
            evs[n++] = mk(LW_EVENT_CLOSURE, id, seq++, at, 0);
    }
    /* the per-borrower order in the topic: by event time, as a platform sends */
    for (size_t i = 1; i < n; i++)
        for (size_t j = i; j > 0 && evs[j].occurred_at < evs[j - 1].occurred_at; j--) {
            lw_event_t x = evs[j];
            evs[j] = evs[j - 1];
            evs[j - 1] = x;
        }
    return n;
}

static void test_replay_same_state(void **state)
{
    (void)state;
    set_ret(0, 0);
    static lw_event_t evs[400];
    size_t n = history(evs, 400);
    lw_bstate_t a = {0}, b = {0};
    lw_bapply_out_t o;
    lw_sbuf_t ea = {0}, eb = {0}, ec = {0};
    lw_bstate_reset(&a);
    lw_bstate_reset(&b);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(apply(&a, &evs[i], &o), LW_APPLY_APPLIED);
    for (size_t i = 0; i < n; i++) {
        lw_sbuf_t tmp = {0};
        assert_int_equal(apply(&b, &evs[i], &o), LW_APPLY_APPLIED);
        assert_true(lw_bstate_encode(&b, &tmp));
        lw_bstate_free(&b);
        assert_int_equal(lw_bstate_decode(&b, tmp.p, tmp.len), LW_OK);
        lw_sbuf_free(&tmp);
    }
    assert_true(lw_bstate_encode(&a, &ea));
    assert_true(lw_bstate_encode(&b, &eb));
    assert_int_equal(ea.len, eb.len);
    assert_memory_equal(ea.p, eb.p, ea.len);
    /* pruning did happen: 40 loans over ~3 years, at most a few settled ones
     * in the last 90 days, the written-off ones for 5 years */
    assert_true(a.n_loans < 20);
    assert_true(a.n_loans > 0);
    /* the whole history redelivered: every event a duplicate, out of order
     * or stale (refused); no byte changes */
    size_t refused = 0;
    for (size_t i = 0; i < n; i++) {
        lw_apply_code_t c = apply(&a, &evs[i], &o);
        assert_int_not_equal(c, LW_APPLY_APPLIED);
        refused += c == LW_APPLY_REFUSED;
    }
    assert_true(refused > 0);
    assert_true(lw_bstate_encode(&a, &ec));
    assert_int_equal(ea.len, ec.len);
    assert_memory_equal(ea.p, ec.p, ea.len);
    /* the totals: the active loans' balance, none (every loan ended) */
    int32_t act;
    assert_int_equal(total(&a, &act), 0);
    assert_int_equal(act, 0);
    lw_sbuf_free(&ea);
    lw_sbuf_free(&eb);
    lw_sbuf_free(&ec);
    lw_bstate_free(&a);
    lw_bstate_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_and_config),
        cmocka_unit_test(test_closed_leaves_after_period),
        cmocka_unit_test(test_negative_stays_5_years),
        cmocka_unit_test(test_off_keeps_everything),
        cmocka_unit_test(test_replay_same_state),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
