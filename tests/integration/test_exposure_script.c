/*
 * test_exposure_script.c - the exposure store against a real Redis, no
 * Kafka: totals, the sequence rule (duplicates, out of order), window counts,
 * the fencing epochs (also a rebalance racing the write), two flushes in
 * the pipeline (one staged while the other's write is in flight), and every
 * default
 * rule firing exactly once per episode with a deterministic alert id on the
 * stream. Hand-written event sequences;
 * expected figures are worked out in the test, not read from the code.
 *
 * Uses Redis DB 11 of $LOANWIRE_REDIS and flushes only that DB.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "lw_test.h"
#include "loanwire/conf.h"
#include "loanwire/exposure.h"
#include "loanwire/state.h"

#include "exposure_int.h" /* lw_bstate_decode: what the window keeps */

#include <inttypes.h>

#define DB    11
#define BID_A "AAAAAAAAAAAAAAAAAAAAAA"
#define BID_B "BBBBBBBBBBBBBBBBBBBBBB"
#define BID_C "CCCCCCCCCCCCCCCCCCCCCC"
#define T0    1700000000000LL
#define HOUR  3600000LL
#define DAY   (24 * HOUR)

static char g_url[300];
static redisContext *g_rc;
static lw_rcluster_t *g_cl; /* the reader's handle on the same database */
static lw_rules_t *g_rules;

static lw_store_t *store_open(bool strict)
{
    char errstr[512];
    lw_script_opts_t o;
    lw_script_opts_init(&o);
    o.strict_fencing = strict;
    lw_store_t *st = lw_store_new(g_url, g_rules, &o, errstr, sizeof errstr);
    if (!st)
        lw_test_fail_server("Redis", g_url, errstr);
    return st;
}

/* The store references queued events until their flush ends
 * (lw_store_append()), so events built in a loop are kept here; each test
 * starts the pool over (flushdb()). */
enum { POOL_MAX = 16384 };
static lw_event_t g_pool[POOL_MAX];
static size_t g_pool_n;

static const lw_event_t *keep(lw_event_t e)
{
    assert_true(g_pool_n < POOL_MAX);
    g_pool[g_pool_n] = e;
    return &g_pool[g_pool_n++];
}

static void flushdb(void)
{
    redisReply *r = redisCommand(g_rc, "FLUSHDB");
    assert_non_null(r);
    freeReplyObject(r);
    g_pool_n = 0;
}

static int setup(void **state)
{
    lw_redis_url_t u;
    char errstr[256];
    g_rc = lw_test_redis_connect();
    assert_int_equal(lw_redis_url_parse(lw_test_redis_url(), &u, errstr, sizeof errstr), LW_OK);
    snprintf(g_url, sizeof g_url, "redis://%s:%d/%d", u.host, u.port, DB);
    redisReply *r = redisCommand(g_rc, "SELECT %d", DB);
    assert_non_null(r);
    freeReplyObject(r);
    lw_redis_url_t du;
    assert_int_equal(lw_redis_url_parse(g_url, &du, errstr, sizeof errstr), LW_OK);
    assert_int_equal(lw_rcluster_new(&du, NULL, &g_cl, errstr, sizeof errstr), LW_RCLUSTER_OK);
    g_rules = lw_rules_default();
    return 0;
}

static int teardown(void **state)
{
    flushdb();
    redisFree(g_rc);
    lw_rcluster_destroy(g_cl);
    lw_rules_destroy(g_rules);
    return 0;
}

static lw_event_t mk(const char *bid, lw_event_type_t t, const char *platform, const char *loan,
                     const char *lender, int64_t seq, int64_t at, int64_t outstanding)
{
    static int n;
    lw_event_t e;
    memset(&e, 0, sizeof e);
    snprintf(e.event_id, sizeof e.event_id, "ev-%d", ++n);
    e.event_type = t;
    snprintf(e.platform_id, sizeof e.platform_id, "%s", platform);
    snprintf(e.lender_id, sizeof e.lender_id, "%s", lender);
    snprintf(e.borrower_id, sizeof e.borrower_id, "%s", bid);
    snprintf(e.loan_id, sizeof e.loan_id, "%s", loan);
    e.product = LW_PRODUCT_INSTALLMENT;
    e.sequence = seq;
    e.occurred_at = at;
    e.amount_fen = outstanding > 0 ? outstanding : 1;
    e.outstanding_fen = outstanding;
    snprintf(e.currency, sizeof e.currency, "CNY");
    return e;
}

/* Applies one event with (partition 0, epoch) and returns the result. */
static lw_apply_result_t apply_ep(lw_store_t *st, const lw_event_t *e, int64_t epoch)
{
    char errstr[512];
    lw_apply_result_t res[1];
    assert_int_equal(lw_store_append(st, e, "t", 0, epoch), LW_OK);
    lw_err_t err = lw_store_flush(st, res, errstr, sizeof errstr);
    if (err)
        fail_msg("flush: %s", errstr);
    return res[0];
}

static lw_apply_result_t apply(lw_store_t *st, const lw_event_t *e)
{
    return apply_ep(st, e, 1);
}

static lw_borrower_state_t readb(const char *bid)
{
    lw_borrower_state_t s;
    bool found;
    char errstr[256];
    assert_int_equal(lw_state_read(g_cl, bid, &s, &found, errstr, sizeof errstr), LW_OK);
    assert_true(found);
    return s;
}

/* The borrower's state string (DUMP: value and encoding) in hex, for byte
 * comparison. */
static char *dump(const char *bid)
{
    char key[64];
    lw_state_key(bid, key, sizeof key);
    redisReply *r = redisCommand(g_rc, "DUMP %s", key);
    assert_non_null(r);
    char *out = NULL;
    if (r->type == REDIS_REPLY_STRING) {
        out = malloc(r->len * 2 + 1);
        for (size_t i = 0; i < r->len; i++)
            sprintf(out + 2 * i, "%02x", (unsigned char)r->str[i]);
    } else {
        out = strdup("(nil)");
    }
    freeReplyObject(r);
    return out;
}

static long long stream_len(void)
{
    redisReply *r = redisCommand(g_rc, "XLEN lw:alerts");
    assert_non_null(r);
    long long n = r->integer;
    freeReplyObject(r);
    return n;
}

static void test_totals_sequence_rule(void **state)
{
    flushdb();
    lw_store_t *st = store_open(true);
    lw_event_t e1 = mk(BID_A, LW_EVENT_CREDIT_LINE, "alipay", "L1", "bank1", 1, T0, 0);
    e1.product = LW_PRODUCT_REVOLVING;
    e1.credit_limit_fen = 5000000;
    lw_event_t e2 = mk(BID_A, LW_EVENT_DRAWDOWN, "alipay", "L1", "bank1", 2, T0 + HOUR, 120000);
    e2.product = LW_PRODUCT_REVOLVING;
    e2.credit_limit_fen = 5000000;
    lw_event_t e3 = mk(BID_A, LW_EVENT_DRAWDOWN, "jd", "J7", "bank2", 1, T0 + 2 * HOUR, 9007199);
    e3.has_annual_income = true;
    e3.annual_income_fen = 12000000;
    assert_int_equal(apply(st, &e1).code, LW_APPLY_APPLIED);
    assert_int_equal(apply(st, &e2).code, LW_APPLY_APPLIED);
    assert_int_equal(apply(st, &e3).code, LW_APPLY_APPLIED);

    lw_borrower_state_t s = readb(BID_A);
    assert_int_equal(s.total_outstanding_fen, 120000 + 9007199);
    assert_int_equal(s.active_loans, 2);
    assert_int_equal(s.active_lenders, 2);
    assert_int_equal(s.active_platforms, 2);
    assert_int_equal(s.n_loans, 2);
    assert_true(s.has_annual_income);
    assert_int_equal(s.annual_income_fen, 12000000);
    assert_int_equal(s.last_event_at, T0 + 2 * HOUR);
    /* two new loans (the credit line, the jd drawdown), both lenders, 24h */
    assert_int_equal(s.new_loans[LW_WIN_24H], 2);
    assert_int_equal(s.applications[LW_WIN_24H], 0);
    assert_int_equal(s.distinct_lenders[LW_WIN_24H], 2);
    for (size_t i = 0; i < s.n_loans; i++) {
        if (!strcmp(s.loans[i].loan_id, "L1")) {
            assert_string_equal(s.loans[i].platform_id, "alipay");
            assert_int_equal(s.loans[i].sequence, 2);
            assert_int_equal(s.loans[i].credit_limit_fen, 5000000);
            assert_int_equal(s.loans[i].status, LW_LOAN_ACTIVE);
            assert_int_equal(s.loans[i].product, LW_PRODUCT_REVOLVING);
            assert_int_equal(s.loans[i].updated_at, T0 + HOUR);
        }
    }
    lw_borrower_state_clear(&s);

    /* duplicates and an older sequence change nothing, byte for byte */
    char *before = dump(BID_A);
    assert_int_equal(apply(st, &e2).code, LW_APPLY_DUPLICATE);
    assert_int_equal(apply(st, &e1).code, LW_APPLY_OUT_OF_ORDER);
    lw_event_t old = e1;
    old.outstanding_fen = 999999999;
    assert_int_equal(apply(st, &old).code, LW_APPLY_OUT_OF_ORDER);
    char *after = dump(BID_A);
    assert_string_equal(before, after);
    free(before);
    free(after);

    /* repayment to zero: PAID, no longer active; closure */
    lw_event_t e4 = mk(BID_A, LW_EVENT_REPAYMENT, "jd", "J7", "bank2", 2, T0 + 3 * HOUR, 0);
    assert_int_equal(apply(st, &e4).code, LW_APPLY_APPLIED);
    s = readb(BID_A);
    assert_int_equal(s.total_outstanding_fen, 120000);
    assert_int_equal(s.active_loans, 1);
    assert_int_equal(s.active_lenders, 1);
    lw_borrower_state_clear(&s);

    /* an unknown borrower is not found */
    bool found = true;
    char errstr[128];
    assert_int_equal(lw_state_read(g_cl, BID_C, &s, &found, errstr, sizeof errstr), LW_OK);
    assert_false(found);
    assert_int_equal(lw_state_read(g_cl, "nope", &s, &found, errstr, sizeof errstr),
                     LW_ERR_INVALID_ARG);
    lw_store_destroy(st);
}

static void test_big_amounts_exact(void **state)
{
    flushdb();
    lw_store_t *st = store_open(true);
    /* 10^13 fen three times: beyond 2^32, still exact below 2^53 */
    int64_t big = 10000000000000LL;
    char loan[8];
    for (int i = 0; i < 3; i++) {
        snprintf(loan, sizeof loan, "B%d", i);
        lw_event_t e = mk(BID_B, LW_EVENT_DRAWDOWN, "p", loan, "l", 1, T0 + i, big - i);
        assert_int_equal(apply(st, &e).code, LW_APPLY_APPLIED);
    }
    lw_borrower_state_t s = readb(BID_B);
    assert_int_equal(s.total_outstanding_fen, 3 * big - 3);
    lw_borrower_state_clear(&s);
    /* the alert json prints the total as an integer */
    redisReply *r = redisCommand(g_rc, "XRANGE lw:alerts - +");
    assert_non_null(r);
    bool seen = false;
    for (size_t i = 0; i < r->elements; i++) {
        redisReply *f = r->element[i]->element[1];
        for (size_t j = 0; j + 1 < f->elements; j += 2)
            if (!strcmp(f->element[j]->str, "json") &&
                strstr(f->element[j + 1]->str, "\"total_outstanding_fen\":10000000000000,"))
                seen = true;
    }
    freeReplyObject(r);
    assert_true(seen); /* income_cap fired on the first loan */
    lw_store_destroy(st);
}

/* States are read 64 borrowers to an MGET. A value that is not a state
 * fails the flush with where and why, whichever MGET it came in, and the
 * events stay queued: once it is gone the same flush succeeds. A key of
 * another type reads as absent (MGET answers nil) and the write replaces
 * it: b:{..} is ours. */
static void test_store_reads_foreign_values(void **state)
{
    flushdb();
    lw_store_t *st = store_open(true);
    char errstr[512], bid[32];
    enum { N = 150, BAD = 100 };
    lw_apply_result_t res[N];
    redisReply *r = redisCommand(g_rc, "SET b:{%022d} not-a-state", BAD);
    freeReplyObject(r);
    r = redisCommand(g_rc, "HSET b:{" BID_C "} f v");
    freeReplyObject(r);
    for (int i = 0; i < N; i++) {
        snprintf(bid, sizeof bid, "%022d", i);
        const lw_event_t *e =
            keep(mk(i == 0 ? BID_C : bid, LW_EVENT_DRAWDOWN, "p", "L1", "l1", 1, T0, 100 + i));
        assert_int_equal(lw_store_append(st, e, "t", 0, 1), LW_OK);
    }
    assert_int_equal(lw_store_flush(st, res, errstr, sizeof errstr), LW_ERR_REDIS);
    assert_non_null(strstr(errstr, "b:{0000000000000000000100}"));
    assert_non_null(strstr(errstr, "malformed"));
    assert_int_equal(lw_store_pending(st), N);
    r = redisCommand(g_rc, "DEL b:{%022d}", BAD);
    freeReplyObject(r);
    if (lw_store_flush(st, res, errstr, sizeof errstr) != LW_OK)
        fail_msg("flush: %s", errstr);
    for (int i = 0; i < N; i++)
        assert_int_equal(res[i].code, LW_APPLY_APPLIED);
    lw_borrower_state_t c = readb(BID_C);
    assert_int_equal(c.total_outstanding_fen, 100);
    lw_borrower_state_clear(&c);
    snprintf(bid, sizeof bid, "%022d", BAD);
    lw_borrower_state_t b = readb(bid);
    assert_int_equal(b.total_outstanding_fen, 100 + BAD);
    lw_borrower_state_clear(&b);
    lw_store_destroy(st);
}

/* lw_state_read on a damaged state string: every truncation of a real one and
 * a few flipped bytes give an error or a (bounded) state, never a crash or an
 * overrun (the ASan build runs this too). */
static void test_state_read_malformed(void **state)
{
    flushdb();
    lw_store_t *st = store_open(true);
    lw_event_t a = mk(BID_B, LW_EVENT_DRAWDOWN, "p", "M1", "l1", 1, T0, 500);
    a.has_annual_income = true;
    a.annual_income_fen = 9000000;
    lw_event_t b = mk(BID_B, LW_EVENT_APPLICATION, "q", "M2", "l2", 1, T0 + 1, 0);
    apply(st, &a);
    apply(st, &b);
    lw_store_destroy(st);
    redisReply *r = redisCommand(g_rc, "GET b:{" BID_B "}");
    assert_int_equal(r->type, REDIS_REPLY_STRING);
    size_t len = r->len;
    char *good = malloc(len);
    memcpy(good, r->str, len);
    freeReplyObject(r);
    char errstr[256];
    bool found;
    lw_borrower_state_t s;
    /* the header counts the loans and entries, so no prefix is a valid state */
    for (size_t cut = 0; cut < len; cut++) {
        r = redisCommand(g_rc, "SET b:{" BID_B "} %b", good, cut);
        freeReplyObject(r);
        lw_err_t err = lw_state_read(g_cl, BID_B, &s, &found, errstr, sizeof errstr);
        assert_int_equal(err, LW_ERR_REDIS);
        assert_non_null(strstr(errstr, "malformed"));
        assert_false(found);
    }
    for (size_t i = 0; i < len; i++) {
        char *bad = malloc(len);
        memcpy(bad, good, len);
        bad[i] = (char)0xff;
        r = redisCommand(g_rc, "SET b:{" BID_B "} %b", bad, len);
        freeReplyObject(r);
        lw_err_t err = lw_state_read(g_cl, BID_B, &s, &found, errstr, sizeof errstr);
        assert_true(err == LW_OK || err == LW_ERR_REDIS);
        if (err == LW_OK)
            lw_borrower_state_clear(&s);
        free(bad);
    }
    r = redisCommand(g_rc, "SET b:{" BID_B "} %b", good, len);
    freeReplyObject(r);
    s = readb(BID_B);
    assert_int_equal(s.n_loans, 1);
    assert_int_equal(s.total_outstanding_fen, 500);
    assert_true(s.has_annual_income);
    assert_int_equal(s.annual_income_fen, 9000000);
    assert_int_equal(s.applications[LW_WIN_24H], 1);
    assert_int_equal(s.new_loans[LW_WIN_24H], 1);
    assert_int_equal(s.loans[0].updated_at, T0);
    lw_borrower_state_clear(&s);
    free(good);
}

static void test_fencing(void **state)
{
    flushdb();
    lw_store_t *st = store_open(false);
    lw_event_t e1 = mk(BID_A, LW_EVENT_DRAWDOWN, "p", "F1", "l", 1, T0, 100);
    lw_event_t e2 = mk(BID_A, LW_EVENT_DRAWDOWN, "p", "F2", "l", 1, T0 + 1, 100);
    assert_int_equal(apply_ep(st, &e1, 5).code, LW_APPLY_APPLIED);
    char *before = dump(BID_A);
    /* an older epoch of the same partition is refused, nothing written */
    assert_int_equal(apply_ep(st, &e2, 4).code, LW_APPLY_FENCED);
    char *after = dump(BID_A);
    assert_string_equal(before, after);
    free(before);
    free(after);
    /* the current and a newer epoch are fine */
    assert_int_equal(apply_ep(st, &e2, 6).code, LW_APPLY_APPLIED);
    lw_event_t e3 = mk(BID_A, LW_EVENT_DRAWDOWN, "p", "F3", "l", 1, T0 + 2, 100);
    assert_int_equal(apply_ep(st, &e3, 5).code, LW_APPLY_FENCED);
    lw_store_destroy(st);

    /* strict: the partition epoch key fences even a borrower never seen */
    st = store_open(true);
    redisReply *r = redisCommand(g_rc, "SET lw:epoch:t:0 9");
    freeReplyObject(r);
    lw_event_t e4 = mk(BID_C, LW_EVENT_DRAWDOWN, "p", "F4", "l", 1, T0, 100);
    assert_int_equal(apply_ep(st, &e4, 8).code, LW_APPLY_FENCED);
    r = redisCommand(g_rc, "EXISTS b:{" BID_C "}");
    assert_int_equal(r->integer, 0);
    freeReplyObject(r);
    assert_int_equal(apply_ep(st, &e4, 9).code, LW_APPLY_APPLIED);
    /* lw_store_epoch_next increments */
    int64_t ep;
    char errstr[128];
    assert_int_equal(lw_store_epoch_next(st, "t", 0, &ep, errstr, sizeof errstr), LW_OK);
    assert_int_equal(ep, 10);
    lw_store_destroy(st);
}

/* The alert id is hex(sha1(borrower|rule|event_id))[0..32): computed here
 * with Redis's own SHA1 through a tiny independent script. */
static void expect_alert_id(const lw_alert_t *al, const char *bid, const char *rule,
                            const char *evid)
{
    char src[256];
    snprintf(src, sizeof src, "%s|%s|%s", bid, rule, evid);
    redisReply *r = redisCommand(g_rc, "EVAL %s 0 %s", "return redis.sha1hex(ARGV[1])", src);
    assert_non_null(r);
    char want[64];
    snprintf(want, sizeof want, "%.32s", r->str);
    freeReplyObject(r);
    assert_string_equal(al->alert_id, want);
}

/* A redelivered trigger (older than the loan's state now) hands its one
 * alert back; the stream keeps its length. */
static void expect_replay(lw_store_t *st, const lw_event_t *trigger, const char *rule,
                          long long stream)
{
    lw_apply_result_t r = apply(st, trigger);
    assert_int_equal(r.code, LW_APPLY_OUT_OF_ORDER);
    assert_int_equal(r.n_alerts, 1);
    expect_alert_id(&r.alerts[0], trigger->borrower_id, rule, trigger->event_id);
    assert_int_equal(stream_len(), stream);
}

static void test_rule_income_cap(void **state)
{
    flushdb();
    lw_store_t *st = store_open(true);
    /* no income: cap RMB 300,000 = 30,000,000 fen; exactly at cap is fine */
    lw_event_t a = mk(BID_A, LW_EVENT_DRAWDOWN, "p", "I1", "l1", 1, T0, 20000000);
    lw_event_t b = mk(BID_A, LW_EVENT_DRAWDOWN, "p", "I2", "l2", 1, T0 + 1, 10000000);
    assert_int_equal(apply(st, &a).n_alerts, 0);
    assert_int_equal(apply(st, &b).n_alerts, 0);
    lw_event_t c = mk(BID_A, LW_EVENT_DRAWDOWN, "p", "I2", "l2", 2, T0 + 2, 10000001);
    lw_apply_result_t r = apply(st, &c);
    assert_int_equal(r.n_alerts, 1);
    assert_string_equal(r.alerts[0].rule_id, "income_cap");
    assert_int_equal(r.alerts[0].limit, 30000000);
    assert_int_equal(r.alerts[0].total_outstanding_fen, 30000001);
    assert_false(r.alerts[0].has_annual_income);
    expect_alert_id(&r.alerts[0], BID_A, "income_cap", c.event_id);
    assert_int_equal(stream_len(), 1);
    /* still above: no second alert */
    lw_event_t d = mk(BID_A, LW_EVENT_DRAWDOWN, "p", "I2", "l2", 3, T0 + 3, 12000000);
    assert_int_equal(apply(st, &d).n_alerts, 0);
    lw_borrower_state_t s = readb(BID_A);
    assert_int_equal(s.n_open_alerts, 1);
    assert_string_equal(s.open_alerts[0], "income_cap");
    lw_borrower_state_clear(&s);
    /* the open alert's JSON sits in the borrower's alert hash, apart from the state */
    redisReply *h = redisCommand(g_rc, "HGET a:{" BID_A "} income_cap");
    assert_int_equal(h->type, REDIS_REPLY_STRING);
    assert_non_null(strstr(h->str, "\"rule_id\":\"income_cap\""));
    freeReplyObject(h);
    /* a redelivered trigger returns the same alert again, stream unchanged */
    expect_replay(st, &c, "income_cap", 1);
    /* declared income 60,000,000: cap min(30,000,000, 20,000,000) */
    lw_event_t e = mk(BID_A, LW_EVENT_REPAYMENT, "p", "I2", "l2", 4, T0 + 4, 0);
    e.has_annual_income = true;
    e.annual_income_fen = 60000001;              /* /3 = 20,000,000 (integer division) */
    assert_int_equal(apply(st, &e).n_alerts, 0); /* 20,000,000 not > 20,000,000: cleared */
    s = readb(BID_A);
    assert_int_equal(s.n_open_alerts, 0);
    lw_borrower_state_clear(&s);
    h = redisCommand(g_rc, "HEXISTS a:{" BID_A "} income_cap");
    assert_int_equal(h->integer, 0); /* no longer open */
    freeReplyObject(h);
    /* a redelivered trigger hands its alert back even after it cleared: a
     * crash may have lost its first publication (raised and cleared in one
     * batch); the stream is not written again */
    expect_replay(st, &c, "income_cap", 1);
    lw_event_t f = mk(BID_A, LW_EVENT_DRAWDOWN, "p", "I3", "l3", 1, T0 + 5, 1);
    r = apply(st, &f);
    assert_int_equal(r.n_alerts, 1);
    assert_int_equal(r.alerts[0].limit, 20000000);
    assert_int_equal(r.alerts[0].annual_income_fen, 60000001);
    expect_alert_id(&r.alerts[0], BID_A, "income_cap", f.event_id);
    /* a redelivery of the trigger while the alert is open hands it back */
    lw_apply_result_t again = apply(st, &f);
    assert_int_equal(again.code, LW_APPLY_DUPLICATE);
    assert_int_equal(again.n_alerts, 1);
    assert_int_equal(stream_len(), 2);
    /* older income (by event time) does not replace the newer one */
    lw_event_t g = mk(BID_A, LW_EVENT_DRAWDOWN, "p", "I4", "l3", 1, T0 - DAY, 1);
    g.has_annual_income = true;
    g.annual_income_fen = 1;
    apply(st, &g);
    s = readb(BID_A);
    assert_int_equal(s.annual_income_fen, 60000001);
    lw_borrower_state_clear(&s);
    lw_store_destroy(st);
}

static void test_rule_multi_lender(void **state)
{
    flushdb();
    lw_store_t *st = store_open(true);
    const char *lenders[] = {"l1", "l2", "l2", "l3", "l4", "l5"};
    int fired_at = -1, fired = 0;
    for (int i = 0; i < 6; i++) {
        char loan[16];
        snprintf(loan, sizeof loan, "M%d", i);
        /* 40 days apart so stacking stays quiet */
        lw_event_t e =
            mk(BID_A, LW_EVENT_DRAWDOWN, "p", loan, lenders[i], 1, T0 + i * 40 * DAY, 100);
        lw_apply_result_t r = apply(st, &e);
        for (size_t k = 0; k < r.n_alerts; k++)
            if (!strcmp(r.alerts[k].rule_id, "multi_lender")) {
                fired++;
                fired_at = i;
                assert_int_equal(r.alerts[k].active_lenders, 4);
            }
    }
    assert_int_equal(fired, 1);
    assert_int_equal(fired_at, 4); /* l1 l2 l3 l4: the fourth distinct lender */
    /* close two lenders' loans: clears (3 lenders), reopen: fires again */
    lw_event_t c1 = mk(BID_A, LW_EVENT_CLOSURE, "p", "M0", "l1", 2, T0 + 300 * DAY, 0);
    lw_event_t c2 = mk(BID_A, LW_EVENT_CLOSURE, "p", "M5", "l5", 2, T0 + 301 * DAY, 0);
    assert_int_equal(apply(st, &c1).n_alerts, 0);
    assert_int_equal(apply(st, &c2).n_alerts, 0);
    lw_borrower_state_t s = readb(BID_A);
    assert_int_equal(s.active_lenders, 3);
    assert_int_equal(s.n_open_alerts, 0);
    lw_borrower_state_clear(&s);
    lw_event_t n = mk(BID_A, LW_EVENT_DRAWDOWN, "q", "M9", "l9", 1, T0 + 302 * DAY, 100);
    lw_apply_result_t r = apply(st, &n);
    assert_int_equal(r.n_alerts, 1);
    assert_string_equal(r.alerts[0].rule_id, "multi_lender");
    lw_store_destroy(st);
}

static void test_rule_stacking(void **state)
{
    flushdb();
    lw_store_t *st = store_open(true);
    /* 4 applications to 4 lenders in two days, one repeated (same id) */
    const char *lenders[] = {"s1", "s2", "s2", "s3", "s4"};
    for (int i = 0; i < 5; i++) {
        char app[16];
        snprintf(app, sizeof app, "A%d", i);
        lw_event_t e = mk(BID_A, LW_EVENT_APPLICATION, "p", app, lenders[i], 1, T0 + i * HOUR, 0);
        assert_int_equal(apply(st, &e).n_alerts, 0);
        /* a redelivered application is not counted twice */
        assert_int_equal(apply(st, &e).code, LW_APPLY_DUPLICATE);
    }
    lw_borrower_state_t s = readb(BID_A);
    assert_int_equal(s.applications[LW_WIN_24H], 5);
    assert_int_equal(s.distinct_lenders[LW_WIN_7D], 4);
    assert_int_equal(s.n_loans, 0);
    lw_borrower_state_clear(&s);
    /* a repayment on a loan we never saw opens nothing */
    lw_event_t rp = mk(BID_A, LW_EVENT_REPAYMENT, "p", "X0", "s9", 3, T0 + 6 * HOUR, 5);
    assert_int_equal(apply(st, &rp).n_alerts, 0);
    /* a new loan from a 5th lender 6 days later: 5 distinct lenders in 7d */
    lw_event_t nl = mk(BID_A, LW_EVENT_DRAWDOWN, "p", "N1", "s5", 1, T0 + 6 * DAY, 100);
    lw_apply_result_t r = apply(st, &nl);
    assert_int_equal(r.n_alerts, 1);
    assert_string_equal(r.alerts[0].rule_id, "stacking");
    assert_int_equal(r.alerts[0].window_count, 5);
    assert_int_equal(r.alerts[0].window_ms, 604800000);
    /* another in the window: still open, no new alert */
    lw_event_t nl2 = mk(BID_A, LW_EVENT_CREDIT_LINE, "p", "N2", "s6", 1, T0 + 6 * DAY + 1, 0);
    assert_int_equal(apply(st, &nl2).n_alerts, 0);
    /* 8 days on: the applications left the 7d window -> cleared */
    lw_event_t later = mk(BID_A, LW_EVENT_REPAYMENT, "p", "N1", "s5", 2, T0 + 8 * DAY, 50);
    assert_int_equal(apply(st, &later).n_alerts, 0);
    s = readb(BID_A);
    assert_int_equal(s.n_open_alerts, 0);
    assert_int_equal(s.new_loans[LW_WIN_7D], 2);
    assert_int_equal(s.applications[LW_WIN_7D], 0);
    assert_int_equal(s.applications[LW_WIN_30D], 5);
    lw_borrower_state_clear(&s);
    /* 40 days on, the window field is pruned away entirely */
    lw_event_t much = mk(BID_A, LW_EVENT_REPAYMENT, "p", "N1", "s5", 3, T0 + 40 * DAY, 40);
    apply(st, &much);
    redisReply *x = redisCommand(g_rc, "GET b:{" BID_A "}");
    assert_int_equal(x->type, REDIS_REPLY_STRING);
    lw_bstate_t bs = {0};
    assert_int_equal(lw_bstate_decode(&bs, x->str, x->len), LW_OK);
    assert_int_equal(bs.n_win, 0);
    assert_int_equal(x->str[0], LW_STATE_VERSION);
    lw_bstate_free(&bs);
    freeReplyObject(x);
    /* an application older than 30 days behind the borrower's time: not counted */
    lw_event_t stale = mk(BID_A, LW_EVENT_APPLICATION, "p", "A-old", "s1", 1, T0, 0);
    apply(st, &stale);
    s = readb(BID_A);
    assert_int_equal(s.applications[LW_WIN_30D], 0);
    lw_borrower_state_clear(&s);
    lw_store_destroy(st);
}

static void test_rule_borrow_while_delinquent(void **state)
{
    flushdb();
    lw_store_t *st = store_open(true);
    lw_event_t a = mk(BID_A, LW_EVENT_DRAWDOWN, "p", "D1", "l1", 1, T0, 1000);
    lw_event_t b = mk(BID_A, LW_EVENT_DRAWDOWN, "p", "D2", "l2", 1, T0 + 1, 1000);
    apply(st, &a);
    apply(st, &b);
    lw_event_t dq = mk(BID_A, LW_EVENT_DELINQUENCY, "p", "D1", "l1", 2, T0 + 2, 1000);
    dq.days_past_due = 31;
    dq.past_due_fen = 300;
    assert_int_equal(apply(st, &dq).n_alerts, 0);
    lw_borrower_state_t s = readb(BID_A);
    assert_int_equal(s.past_due_fen, 300);
    lw_borrower_state_clear(&s);
    /* drawing on the delinquent loan itself is not "another" loan */
    lw_event_t self = mk(BID_A, LW_EVENT_DRAWDOWN, "p", "D1", "l1", 3, T0 + 3, 1500);
    self.days_past_due = 31;
    assert_int_equal(apply(st, &self).n_alerts, 0);
    /* a repayment elsewhere is not a drawdown */
    lw_event_t rp = mk(BID_A, LW_EVENT_REPAYMENT, "p", "D2", "l2", 2, T0 + 4, 900);
    assert_int_equal(apply(st, &rp).n_alerts, 0);
    lw_event_t dd = mk(BID_A, LW_EVENT_DRAWDOWN, "p", "D2", "l2", 3, T0 + 5, 1900);
    lw_apply_result_t r = apply(st, &dd);
    assert_int_equal(r.n_alerts, 1);
    assert_string_equal(r.alerts[0].rule_id, "borrow_while_delinquent");
    assert_string_equal(lw_severity_name(r.alerts[0].severity), "CRITICAL");
    /* again while still delinquent: no second alert */
    lw_event_t dd2 = mk(BID_A, LW_EVENT_DRAWDOWN, "p", "D3", "l3", 1, T0 + 6, 100);
    assert_int_equal(apply(st, &dd2).n_alerts, 0);
    /* cured: cleared; the next drawdown while delinquent fires again */
    lw_event_t cure = mk(BID_A, LW_EVENT_REPAYMENT, "p", "D1", "l1", 4, T0 + 7, 500);
    assert_int_equal(apply(st, &cure).n_alerts, 0);
    s = readb(BID_A);
    assert_int_equal(s.n_open_alerts, 0);
    lw_borrower_state_clear(&s);
    lw_event_t dq2 = mk(BID_A, LW_EVENT_DELINQUENCY, "p", "D3", "l3", 2, T0 + 8, 100);
    dq2.days_past_due = 5;
    apply(st, &dq2);
    lw_event_t dd3 = mk(BID_A, LW_EVENT_DRAWDOWN, "p", "D2", "l2", 4, T0 + 9, 2000);
    assert_int_equal(apply(st, &dd3).n_alerts, 1);
    /* stream entries carry the contract fields */
    redisReply *x = redisCommand(g_rc, "XRANGE lw:alerts - +");
    assert_int_equal(x->elements, 2);
    redisReply *f = x->element[1]->element[1];
    const char *want[] = {"alert_id",    "borrower_id", "rule_id", "severity",
                          "platform_id", "lender_id",   "json"};
    assert_int_equal(f->elements, 14);
    for (size_t i = 0; i < 7; i++)
        assert_string_equal(f->element[2 * i]->str, want[i]);
    assert_string_equal(f->element[3]->str, BID_A);
    assert_string_equal(f->element[11]->str, "l2");
    freeReplyObject(x);
    lw_store_destroy(st);
}

/* A rebalance lands between the store's reads and its write: the store's
 * tap sees the MULTI go out and, from another connection, moves the
 * partition's epoch on first. EXEC must write nothing; the store reads again,
 * finds the partition fenced and says so, and the borrower stays as it was. */
static int g_taps;
static ssize_t rebalance_on_multi(void *cookie, const char *buf, size_t len)
{
    (void)cookie;
    static const char multi[] = "$5\r\nMULTI\r\n";
    if (memmem(buf, len, multi, sizeof multi - 1)) {
        redisReply *r = redisCommand(g_rc, "INCR lw:epoch:t:0");
        freeReplyObject(r);
        g_taps++;
    }
    return (ssize_t)len;
}

/* Taps st's commands with rebalance_on_multi; g_taps counts the MULTIs. */
static FILE *rebalance_tap(lw_store_t *st)
{
    cookie_io_functions_t io = {NULL, rebalance_on_multi, NULL, NULL};
    FILE *tap = fopencookie(NULL, "w", io);
    assert_non_null(tap);
    setvbuf(tap, NULL, _IONBF, 0);
    lw_store_set_tap(st, tap);
    g_taps = 0;
    return tap;
}

static void tap_close(lw_store_t *st, FILE *tap)
{
    lw_store_set_tap(st, NULL);
    fclose(tap);
}

static void test_rebalance_races_write(void **state)
{
    flushdb();
    lw_store_t *st = store_open(true);
    char errstr[512];
    int64_t ep = 0;
    assert_int_equal(lw_store_epoch_next(st, "t", 0, &ep, errstr, sizeof errstr), LW_OK);
    lw_event_t a = mk(BID_A, LW_EVENT_DRAWDOWN, "p", "R1", "l1", 1, T0, 700);
    assert_int_equal(apply_ep(st, &a, ep).code, LW_APPLY_APPLIED);

    FILE *tap = rebalance_tap(st);
    lw_event_t b = mk(BID_A, LW_EVENT_REPAYMENT, "p", "R1", "l1", 2, T0 + HOUR, 100);
    lw_apply_result_t r = apply_ep(st, &b, ep);
    assert_int_equal(g_taps, 1); /* one MULTI went out, the retry found the fence */
    assert_int_equal(r.code, LW_APPLY_FENCED);
    tap_close(st, tap);
    lw_borrower_state_t s = readb(BID_A);
    assert_int_equal(s.total_outstanding_fen, 700);
    assert_int_equal(s.loans[0].sequence, 1);
    lw_borrower_state_clear(&s);
    /* the new owner's epoch writes */
    assert_int_equal(apply_ep(st, &b, ep + 1).code, LW_APPLY_APPLIED);
    s = readb(BID_A);
    assert_int_equal(s.total_outstanding_fen, 100);
    lw_borrower_state_clear(&s);
    lw_store_destroy(st);
}

/* Events for n borrowers "H<i>", one drawdown each of `amount` fen on loan
 * `loan`, with sequence seq, on partition `part` of topic "t". */
static void append_many(lw_store_t *st, int n, const char *loan, int64_t seq, int64_t amount,
                        int32_t part, int64_t epoch)
{
    for (int i = 0; i < n; i++) {
        char bid[32];
        snprintf(bid, sizeof bid, "H%021d", i);
        const lw_event_t *e =
            keep(mk(bid, LW_EVENT_DRAWDOWN, "p", loan, "l", seq, T0 + seq, amount));
        assert_int_equal(lw_store_append(st, e, "t", part, epoch), LW_OK);
    }
}

static int64_t outstanding_of(int i)
{
    char bid[32];
    snprintf(bid, sizeof bid, "H%021d", i);
    lw_borrower_state_t s = readb(bid);
    int64_t v = s.total_outstanding_fen;
    lw_borrower_state_clear(&s);
    return v;
}

static void expect_codes(const lw_apply_result_t *res, int n, lw_apply_code_t code)
{
    for (int i = 0; i < n; i++)
        assert_int_equal(res[i].code, code);
}

/* Two flushes in the pipeline: the second is read and applied while the
 * first one's write is in flight, taking the states that write leaves
 * (a GET could run before it), and written after it. */
static void test_flush_pipelined(void **state)
{
    flushdb();
    lw_store_t *st = store_open(true);
    enum { N = 500 }; /* > LW_CHUNK_DEFAULT: several MSET chunks */
    static lw_apply_result_t r1[N], r2[N];
    char errstr[512];
    lw_flush_t *f1 = NULL, *f2 = NULL, *f3 = NULL;
    append_many(st, N, "L1", 1, 100, 0, 1);
    assert_int_equal(lw_store_flush_begin(st, r1, NULL, &f1, errstr, sizeof errstr), LW_OK);
    assert_non_null(f1);
    assert_int_equal(lw_store_flush_commit(st, f1, errstr, sizeof errstr), LW_OK);
    /* the same borrowers, another loan: staged while the first write is in flight */
    append_many(st, N, "L2", 1, 50, 0, 1);
    assert_int_equal(lw_store_pending(st), 2 * N);
    assert_int_equal(lw_store_flush_begin(st, r2, NULL, &f2, errstr, sizeof errstr), LW_OK);
    assert_non_null(f2);
    assert_true(f1 != f2);
    /* one staged and one in flight: no room for more */
    lw_event_t late = mk(BID_A, LW_EVENT_DRAWDOWN, "p", "X", "l", 1, T0, 1);
    assert_int_equal(lw_store_append(st, &late, "t", 0, 1), LW_ERR_INVALID_ARG);
    assert_int_equal(lw_store_flush_begin(st, r2, NULL, &f3, errstr, sizeof errstr),
                     LW_ERR_INVALID_ARG);
    assert_null(f3);
    /* committing before the write in flight ended is refused, and so is
     * ending a flush that was never sent */
    assert_int_equal(lw_store_flush_commit(st, f2, errstr, sizeof errstr), LW_ERR_INVALID_ARG);
    assert_int_equal(lw_store_flush_end(st, f2, errstr, sizeof errstr), LW_ERR_INVALID_ARG);
    /* the caller's commands have a connection of their own */
    redisReply *r = redisCommand(lw_store_redis(st), "PING");
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_STATUS);
    assert_string_equal(r->str, "PONG");
    freeReplyObject(r);
    assert_int_equal(lw_store_flush_end(st, f1, errstr, sizeof errstr), LW_OK);
    expect_codes(r1, N, LW_APPLY_APPLIED);
    assert_true(r1[0].ack_us > 0);
    /* an ended flush is the store's again: ending it twice is refused */
    assert_int_equal(lw_store_flush_end(st, f1, errstr, sizeof errstr), LW_ERR_INVALID_ARG);
    assert_int_equal(lw_store_flush_commit(st, f2, errstr, sizeof errstr), LW_OK);
    assert_int_equal(lw_store_flush_end(st, f2, errstr, sizeof errstr), LW_OK);
    expect_codes(r2, N, LW_APPLY_APPLIED);
    assert_int_equal(lw_store_pending(st), 0);
    /* both loans: the second flush saw the first one's write */
    assert_int_equal(outstanding_of(0), 150);
    assert_int_equal(outstanding_of(N - 1), 150);

    /* discarded in flight: the write in flight stays written, the staged
     * one is never executed, the queue is empty and the store usable */
    append_many(st, N, "L1", 2, 200, 0, 1);
    assert_int_equal(lw_store_flush_begin(st, r1, NULL, &f1, errstr, sizeof errstr), LW_OK);
    assert_int_equal(lw_store_flush_commit(st, f1, errstr, sizeof errstr), LW_OK);
    append_many(st, N, "L2", 2, 400, 0, 1);
    assert_int_equal(lw_store_flush_begin(st, r2, NULL, &f2, errstr, sizeof errstr), LW_OK);
    lw_store_discard(st);
    assert_int_equal(lw_store_pending(st), 0);
    assert_int_equal(outstanding_of(7), 250); /* 200 + 50 */
    lw_event_t one = mk(BID_A, LW_EVENT_DRAWDOWN, "p", "X", "l", 1, T0, 5);
    assert_int_equal(apply(st, &one).code, LW_APPLY_APPLIED);
    /* nothing queued: begin hands out no flush, and steps of none are no-ops */
    f1 = f2;
    assert_int_equal(lw_store_flush_begin(st, r1, NULL, &f1, errstr, sizeof errstr), LW_OK);
    assert_null(f1);
    assert_int_equal(lw_store_flush_commit(st, NULL, errstr, sizeof errstr), LW_OK);
    assert_int_equal(lw_store_flush_end(st, NULL, errstr, sizeof errstr), LW_OK);
    lw_store_destroy(st);
}

/* The write a staged flush took its states from is aborted by a rebalance
 * (and, redone, finds its partition fenced): the staged flush, on another
 * partition, is read again at its commit instead of writing the aborted
 * write's effects. */
static void test_staged_after_abort(void **state)
{
    flushdb();
    lw_store_t *st = store_open(true);
    enum { N = 200 };
    static lw_apply_result_t r1[N], r2[N];
    char errstr[512];
    int64_t ep = 0;
    assert_int_equal(lw_store_epoch_next(st, "t", 0, &ep, errstr, sizeof errstr), LW_OK);
    FILE *tap = rebalance_tap(st);
    lw_flush_t *f1 = NULL, *f2 = NULL;
    append_many(st, N, "L1", 1, 100, 0, ep); /* its MULTI moves partition 0 on */
    assert_int_equal(lw_store_flush_begin(st, r1, NULL, &f1, errstr, sizeof errstr), LW_OK);
    assert_int_equal(lw_store_flush_commit(st, f1, errstr, sizeof errstr), LW_OK);
    append_many(st, N, "L2", 1, 50, 1, 1); /* partition 1: not fenced */
    assert_int_equal(lw_store_flush_begin(st, r2, NULL, &f2, errstr, sizeof errstr), LW_OK);
    assert_int_equal(lw_store_flush_end(st, f1, errstr, sizeof errstr), LW_OK);
    expect_codes(r1, N, LW_APPLY_FENCED);
    assert_int_equal(lw_store_flush_commit(st, f2, errstr, sizeof errstr), LW_OK);
    assert_int_equal(lw_store_flush_end(st, f2, errstr, sizeof errstr), LW_OK);
    expect_codes(r2, N, LW_APPLY_APPLIED);
    tap_close(st, tap);
    assert_true(g_taps >= 2);
    for (int i = 0; i < N; i += 19)
        assert_int_equal(outstanding_of(i), 50); /* not 150 */
    lw_store_destroy(st);
}

/* The rebalance race with a write streamed in chunks: the epoch moves when
 * the MULTI goes out, in the middle of the reads; every borrower is fenced
 * and none is written. */
static void test_rebalance_races_stream(void **state)
{
    flushdb();
    lw_store_t *st = store_open(true);
    enum { N = 300 };
    lw_apply_result_t res[N];
    char errstr[512];
    int64_t ep = 0;
    assert_int_equal(lw_store_epoch_next(st, "t", 0, &ep, errstr, sizeof errstr), LW_OK);
    append_many(st, N, "L1", 1, 100, 0, ep);
    assert_int_equal(lw_store_flush(st, res, errstr, sizeof errstr), LW_OK);

    FILE *tap = rebalance_tap(st);
    append_many(st, N, "L1", 2, 200, 0, ep);
    assert_int_equal(lw_store_flush(st, res, errstr, sizeof errstr), LW_OK);
    assert_int_equal(g_taps, 1); /* the retry read the fence and wrote nothing */
    for (int i = 0; i < N; i++)
        assert_int_equal(res[i].code, LW_APPLY_FENCED);
    tap_close(st, tap);
    for (int i = 0; i < N; i += 37)
        assert_int_equal(outstanding_of(i), 100);
    lw_store_destroy(st);
}

static void test_pipeline_many(void **state)
{
    /* one flush of many events for many borrowers equals them one by one */
    flushdb();
    lw_store_t *st = store_open(true);
    enum { N = 3000 };
    lw_apply_result_t *res = calloc(N, sizeof *res);
    char errstr[256];
    int64_t want = 0;
    for (int i = 0; i < N; i++) {
        char bid[32], loan[16];
        snprintf(bid, sizeof bid, "P%021d", i % 100);
        snprintf(loan, sizeof loan, "L%d", i % 7);
        const lw_event_t *e =
            keep(mk(bid, LW_EVENT_DRAWDOWN, "p", loan, "l", 1 + i / 700, T0 + i, 10));
        assert_int_equal(lw_store_append(st, e, "t", 0, 1), LW_OK);
    }
    assert_int_equal(lw_store_pending(st), N);
    /* the script cache is flushed under us: NOSCRIPT is mended inside */
    redisReply *x = redisCommand(g_rc, "SCRIPT FLUSH");
    freeReplyObject(x);
    assert_int_equal(lw_store_flush(st, res, errstr, sizeof errstr), LW_OK);
    int applied = 0;
    for (int i = 0; i < N; i++)
        applied += res[i].code == LW_APPLY_APPLIED;
    /* each (borrower, loan) pair: i%100 and i%7 -> 700 pairs, sequences 1..5 */
    assert_true(applied > 0);
    for (int b = 0; b < 100; b++) {
        char bid[32];
        snprintf(bid, sizeof bid, "P%021d", b);
        lw_borrower_state_t s = readb(bid);
        want += s.total_outstanding_fen;
        assert_int_equal(s.active_loans, 7);
        lw_borrower_state_clear(&s);
    }
    assert_int_equal(want, 100 * 7 * 10);
    free(res);
    lw_store_destroy(st);
}

/* ---- Issue 21 --------------------------------------------------------------- */

static lw_store_t *store_with(const lw_rules_t *rules)
{
    char errstr[512];
    lw_script_opts_t o;
    lw_script_opts_init(&o);
    lw_store_t *st = lw_store_new(g_url, rules, &o, errstr, sizeof errstr);
    if (!st)
        lw_test_fail_server("Redis", g_url, errstr);
    return st;
}

static lw_rules_t *rules_of(const char *text)
{
    char err[256];
    lw_rules_t *r = lw_rules_parse(text, "test", err, sizeof err);
    if (!r)
        fail_msg("%s", err);
    return r;
}

static bool alert_open(const char *bid, const char *rule)
{
    lw_borrower_state_t s = readb(bid);
    bool open = false;
    for (size_t i = 0; i < s.n_open_alerts; i++)
        open |= !strcmp(s.open_alerts[i], rule);
    lw_borrower_state_clear(&s);
    return open;
}

#define PACK_DEFAULT                                                                               \
    "income_cap 1 CRITICAL cap_fen=30000000 income_divisor=3\n"                                    \
    "multi_lender 1 WARNING min_lenders=4\n"                                                       \
    "stacking 1 WARNING min_lenders=5 window=7d\n"                                                 \
    "borrow_while_delinquent 1 CRITICAL\n"

/* Item 12: an open alert belongs to its rule id, whatever the consumer is
 * restarted with: the pack reordered (the case), a rule added, a
 * rule removed and put back, a rule's version and thresholds changed. Each
 * step is a restart: a new store (process) with the edited pack. */
static void test_pack_edits_across_restart(void **state)
{
    (void)state;
    flushdb();
    lw_rules_t *def = rules_of(PACK_DEFAULT);
    lw_rules_t *moved = rules_of("stacking 1 WARNING min_lenders=5 window=7d\n"
                                 "income_cap 1 CRITICAL cap_fen=30000000 income_divisor=3\n"
                                 "multi_lender 1 WARNING min_lenders=4\n"
                                 "borrow_while_delinquent 1 CRITICAL\n");
    lw_rules_t *added =
        rules_of("big_cap 1 CRITICAL kind=income_cap cap_fen=35000000\n" PACK_DEFAULT);
    lw_rules_t *removed = rules_of("multi_lender 1 WARNING min_lenders=4\n"
                                   "stacking 1 WARNING min_lenders=5 window=7d\n");
    lw_rules_t *raised = rules_of("multi_lender 1 WARNING min_lenders=4\n"
                                  "income_cap 2 CRITICAL cap_fen=90000000 income_divisor=3\n");
    int64_t seq = 1, at = T0;
    lw_store_t *st = store_with(def);
    lw_event_t e = mk(BID_A, LW_EVENT_DRAWDOWN, "p", "X1", "l1", seq++, at++, 31000000);
    lw_apply_result_t r = apply(st, &e);
    assert_int_equal(r.n_alerts, 1);
    assert_string_equal(r.alerts[0].rule_id, "income_cap");
    lw_store_destroy(st);

    /* reordered: the same episode, no second alert */
    st = store_with(moved);
    e = mk(BID_A, LW_EVENT_DRAWDOWN, "p", "X1", "l1", seq++, at++, 32000000);
    assert_int_equal(apply(st, &e).n_alerts, 0);
    assert_true(alert_open(BID_A, "income_cap"));
    lw_store_destroy(st);

    /* a rule added at the top: income_cap stays open; the new rule starts
     * closed and fires when its own condition holds */
    st = store_with(added);
    e = mk(BID_A, LW_EVENT_DRAWDOWN, "p", "X1", "l1", seq++, at++, 34000000);
    assert_int_equal(apply(st, &e).n_alerts, 0);
    e = mk(BID_A, LW_EVENT_DRAWDOWN, "p", "X1", "l1", seq++, at++, 36000000);
    r = apply(st, &e);
    assert_int_equal(r.n_alerts, 1);
    assert_string_equal(r.alerts[0].rule_id, "big_cap");
    lw_store_destroy(st);

    /* removed: kept open (dormant) while out of the pack; put back: still
     * the same episode */
    st = store_with(removed);
    e = mk(BID_A, LW_EVENT_DRAWDOWN, "p", "X1", "l1", seq++, at++, 37000000);
    assert_int_equal(apply(st, &e).n_alerts, 0);
    assert_true(alert_open(BID_A, "income_cap"));
    lw_store_destroy(st);
    st = store_with(def);
    e = mk(BID_A, LW_EVENT_DRAWDOWN, "p", "X1", "l1", seq++, at++, 38000000);
    assert_int_equal(apply(st, &e).n_alerts, 0);
    assert_true(alert_open(BID_A, "income_cap"));
    lw_store_destroy(st);

    /* version 2 with a cap no longer passed: cleared at the next event */
    st = store_with(raised);
    e = mk(BID_A, LW_EVENT_DRAWDOWN, "p", "X1", "l1", seq++, at++, 38000001);
    assert_int_equal(apply(st, &e).n_alerts, 0);
    assert_false(alert_open(BID_A, "income_cap"));
    assert_true(alert_open(BID_A, "big_cap")); /* dormant now: big_cap is not in this pack */
    lw_store_destroy(st);
    assert_int_equal(stream_len(), 2); /* income_cap once, big_cap once */
    lw_rules_destroy(def);
    lw_rules_destroy(moved);
    lw_rules_destroy(added);
    lw_rules_destroy(removed);
    lw_rules_destroy(raised);
}

static void set_state(const char *bid, const lw_bstate_t *bs)
{
    lw_sbuf_t b = {0};
    char key[64];
    assert_true(lw_bstate_encode(bs, &b));
    lw_state_key(bid, key, sizeof key);
    redisReply *r = redisCommand(g_rc, "SET %s %b", key, b.p, b.len);
    assert_non_null(r);
    freeReplyObject(r);
    r = redisCommand(g_rc, "HSET lw:strings i:1 p i:2 l n:p 1 n:l 2 # 2");
    freeReplyObject(r);
    lw_sbuf_free(&b);
}

/* Items 3 and 4 on the reading side (lw_state_read, what loanwire-query
 * answers): a window's distinct lenders are counted exactly (stopped at 256
 * before), and a state whose total overflows int64 is an error (503 in the
 * API), never undefined behaviour or a wrapped total. */
static void test_state_read_exact_and_checked(void **state)
{
    (void)state;
    flushdb();
    lw_bstate_t bs = {0};
    bs.t = T0 + 30 * DAY;
    assert_true(lw_bstate_win_room(&bs, 4000));
    for (size_t i = 0; i < 4000; i++)
        bs.win[bs.n_win++] = (lw_bwin_t){bs.t - (int64_t)i * 600000, (uint64_t)i << 1 | 1,
                                         (uint32_t)(0x9E3779B1u * (i + 1))};
    set_state(BID_A, &bs);
    lw_borrower_state_t s = readb(BID_A);
    /* one entry every 10 minutes: at > t - 24 h for i < 144, t - 7 d for i < 1008 */
    assert_int_equal(s.applications[LW_WIN_24H], 144);
    assert_int_equal(s.distinct_lenders[LW_WIN_24H], 144);
    assert_int_equal(s.distinct_lenders[LW_WIN_7D], 1008);
    assert_int_equal(s.applications[LW_WIN_30D], 4000);
    assert_int_equal(s.distinct_lenders[LW_WIN_30D], 4000);
    lw_borrower_state_clear(&s);

    lw_bstate_reset(&bs);
    bs.t = T0;
    assert_true(lw_bstate_loans_room(&bs, 1100));
    for (size_t i = 0; i < 1100; i++) {
        lw_bloan_t *l = &bs.loans[bs.n_loans++];
        memset(l, 0, sizeof *l);
        l->platform = 1;
        l->lender = 2;
        snprintf(l->loan_id, sizeof l->loan_id, "O%zu", i);
        l->status = LW_LOAN_ACTIVE;
        l->sequence = 1;
        l->outstanding_fen = LW_STATE_NUM_MAX;
        l->updated_at = T0;
    }
    set_state(BID_B, &bs);
    lw_borrower_state_t o;
    bool found;
    char errstr[256];
    lw_err_t err = lw_state_read(g_cl, BID_B, &o, &found, errstr, sizeof errstr);
    assert_int_not_equal(err, LW_OK);
    assert_non_null(strstr(errstr, "exceeds"));
    lw_borrower_state_clear(&o);
    lw_bstate_free(&bs);

    /* the consumer refuses an event on that state: a dead letter with why */
    lw_store_t *st = store_open(true);
    lw_event_t e = mk(BID_B, LW_EVENT_REPAYMENT, "p", "O5", "l", 2, T0 + 1, 10);
    lw_apply_result_t r = apply(st, &e);
    assert_int_equal(r.code, LW_APPLY_REFUSED);
    assert_non_null(strstr(r.reason, "overflow"));
    lw_store_destroy(st);
}

/* Item 2 through the store: past --max-loans the event is refused with its
 * reason, nothing is written; the borrower's other events still apply. */
static void test_limit_refused(void **state)
{
    (void)state;
    flushdb();
    lw_rules_t *rules = lw_rules_default();
    lw_rules_set_limits(rules, 3, 0);
    lw_store_t *st = store_with(rules);
    for (int i = 0; i < 3; i++) {
        char loan[8];
        snprintf(loan, sizeof loan, "M%d", i);
        lw_event_t e = mk(BID_C, LW_EVENT_DRAWDOWN, "p", loan, "l", 1, T0 + i, 100);
        assert_int_equal(apply(st, &e).code, LW_APPLY_APPLIED);
    }
    char *before = dump(BID_C);
    lw_event_t e = mk(BID_C, LW_EVENT_DRAWDOWN, "p", "M3", "l", 1, T0 + 5, 100);
    lw_apply_result_t r = apply(st, &e);
    assert_int_equal(r.code, LW_APPLY_REFUSED);
    assert_non_null(strstr(r.reason, "--max-loans 3"));
    char *after = dump(BID_C);
    assert_string_equal(before, after);
    free(before);
    free(after);
    e = mk(BID_C, LW_EVENT_REPAYMENT, "p", "M1", "l", 2, T0 + 6, 50);
    assert_int_equal(apply(st, &e).code, LW_APPLY_APPLIED);
    lw_store_destroy(st);
    lw_rules_destroy(rules);
}

/* write.lua's compare-on-write: a borrower is written only when its key
 * still holds, byte for byte, the state the new one was computed from ('' for
 * none); otherwise it answers -1 and writes nothing of it - no state, no
 * alert hash field, no stream entry - while the other borrowers of the same
 * call land. One byte of difference is enough (here the layout version byte:
 * the same state as version 4), and an absent key is not a present one. */
static void test_write_script_compare(void **state)
{
    (void)state;
    flushdb();
    lw_store_t *st = store_open(false);
    lw_bstate_t bs = {0};
    lw_bstate_reset(&bs);
    bs.t = T0;
    bs.fence_writer = 7;
    bs.fence_epoch = 5;
    lw_sbuf_t old = {0}, v4 = {0}, nw = {0};
    assert_true(lw_bstate_encode(&bs, &old));
    assert_true(lw_bstate_encode(&bs, &v4)); /* no inquiry: version 4's bytes and a 0 */
    v4.len--;
    v4.p[0] = LW_STATE_VERSION_V4;
    bs.t = T0 + 1;
    bs.fence_writer = 8;
    bs.fence_epoch = 1;
    assert_true(lw_bstate_encode(&bs, &nw));
    char ka[64], kb[64], kc[64];
    lw_state_key(BID_A, ka, sizeof ka);
    lw_state_key(BID_B, kb, sizeof kb);
    lw_state_key(BID_C, kc, sizeof kc);
    static const struct {
        int stored; /* 0 none, 1 old */
        int expect; /* 0 '', 1 old, 2 v4 */
        long long want;
    } cases[] = {{1, 1, 0}, {1, 2, -1}, {1, 0, -1}, {0, 0, 0}, {0, 1, -1}};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        redisReply *w = cases[i].stored ? redisCommand(g_rc, "SET %s %b", ka, old.p, old.len)
                                        : redisCommand(g_rc, "DEL %s", ka);
        freeReplyObject(w);
        const lw_sbuf_t *e = cases[i].expect == 1 ? &old : &v4;
        size_t elen = cases[i].expect ? e->len : 0;
        /* with an alert fired: it lands with the state or not at all */
        redisReply *r = redisCommand(g_rc, "EVALSHA %s 2 %s %s 1 %b %b 1 F r1 {} id1 WARNING p l",
                                     lw_store_script_sha(st), ka, LW_REDIS_ALERT_STREAM,
                                     elen ? e->p : "", elen, nw.p, nw.len);
        assert_non_null(r);
        assert_int_equal(r->type, REDIS_REPLY_ARRAY);
        assert_int_equal(r->elements, 1);
        if (r->element[0]->integer != cases[i].want)
            fail_msg("case %zu: got %lld, want %lld", i, r->element[0]->integer, cases[i].want);
        freeReplyObject(r);
        r = redisCommand(g_rc, "GET %s", ka);
        const lw_sbuf_t *now = cases[i].want == 0 ? &nw : cases[i].stored ? &old : NULL;
        if (now) {
            assert_int_equal(r->type, REDIS_REPLY_STRING);
            assert_int_equal(r->len, now->len);
            assert_memory_equal(r->str, now->p, now->len);
        } else {
            assert_int_equal(r->type, REDIS_REPLY_NIL);
        }
        freeReplyObject(r);
        r = redisCommand(g_rc, "XLEN %s", LW_REDIS_ALERT_STREAM);
        long long xlen = r->integer;
        freeReplyObject(r);
        r = redisCommand(g_rc, "DEL a:{%s} %s", BID_A, LW_REDIS_ALERT_STREAM);
        freeReplyObject(r);
        assert_int_equal(xlen, cases[i].want == 0 ? 1 : 0);
    }
    /* one call, three borrowers: B refused (changed), A and C written */
    redisReply *r = redisCommand(g_rc, "MSET %s %b %s %b", ka, old.p, old.len, kb, nw.p, nw.len);
    freeReplyObject(r);
    r = redisCommand(g_rc, "DEL %s", kc);
    freeReplyObject(r);
    r = redisCommand(g_rc, "EVALSHA %s 4 %s %s %s %s 3 %b %b 0 %b %b 0 %b %b 0",
                     lw_store_script_sha(st), ka, kb, kc, LW_REDIS_ALERT_STREAM, old.p, old.len,
                     nw.p, nw.len, old.p, old.len, old.p, old.len, "", (size_t)0, nw.p, nw.len);
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_ARRAY);
    assert_int_equal(r->elements, 3);
    assert_int_equal(r->element[0]->integer, 0);
    assert_int_equal(r->element[1]->integer, -1);
    assert_int_equal(r->element[2]->integer, 0);
    freeReplyObject(r);
    r = redisCommand(g_rc, "MGET %s %s %s", ka, kb, kc);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(r->element[i]->len, nw.len); /* B still holds nw, not old */
        assert_memory_equal(r->element[i]->str, nw.p, nw.len);
    }
    freeReplyObject(r);
    lw_sbuf_free(&old);
    lw_sbuf_free(&v4);
    lw_sbuf_free(&nw);
    lw_bstate_free(&bs);
    lw_store_destroy(st);
}

/* The lost update of a topic that gained partitions (consumers/README.md,
 * "Adding partitions"): two consumers hold p and p', and each reads borrower
 * A, applies its own event and writes A back. Store `a` (partition 0) reads A
 * and applies loan L2 (which fires income_cap); store `b` (partition 1) then
 * reads, applies and writes loan L3; `a` writes last. Its write is refused
 * (A changed since it was read), it reads A again, applies L2 again on top of
 * L3 and writes: every loan is there, the alert is handed out once and is on
 * the stream once, and `a` counts one retry. Once with strict fencing (the
 * compare inside the WATCHed MULTI/EXEC) and once without (write.lua alone,
 * the cluster's path). */
static void lost_update(bool strict)
{
    flushdb();
    lw_store_t *a = store_open(strict), *b = store_open(strict);
    char errstr[512];
    lw_event_t e1 = mk(BID_A, LW_EVENT_DRAWDOWN, "p", "L1", "l1", 1, T0, 100);
    assert_int_equal(apply_ep(a, &e1, 1).code, LW_APPLY_APPLIED);
    lw_event_t e2 = mk(BID_A, LW_EVENT_DRAWDOWN, "p", "L2", "l2", 1, T0 + 1, 40000000);
    lw_event_t e3 = mk(BID_A, LW_EVENT_DRAWDOWN, "p", "L3", "l3", 1, T0 + 2, 7);
    lw_apply_result_t ra[1], rb[1];
    lw_flush_t *fa = NULL, *fb = NULL;
    assert_int_equal(lw_store_append(a, &e2, "t", 0, 1), LW_OK);
    assert_int_equal(lw_store_flush_begin(a, ra, NULL, &fa, errstr, sizeof errstr), LW_OK);
    /* b's whole write lands between a's read and a's write */
    assert_int_equal(lw_store_append(b, &e3, "t", 1, 1), LW_OK);
    assert_int_equal(lw_store_flush_begin(b, rb, NULL, &fb, errstr, sizeof errstr), LW_OK);
    assert_int_equal(lw_store_flush_commit(b, fb, errstr, sizeof errstr), LW_OK);
    assert_int_equal(lw_store_flush_end(b, fb, errstr, sizeof errstr), LW_OK);
    assert_int_equal(rb[0].code, LW_APPLY_APPLIED);
    assert_int_equal(lw_store_flush_commit(a, fa, errstr, sizeof errstr), LW_OK);
    if (lw_store_flush_end(a, fa, errstr, sizeof errstr) != LW_OK)
        fail_msg("end: %s", errstr);
    assert_int_equal(ra[0].code, LW_APPLY_APPLIED);
    assert_int_equal(ra[0].n_alerts, 1);
    assert_string_equal(ra[0].alerts[0].rule_id, "income_cap");
    assert_int_equal(lw_store_stale_retries(a), 1);
    assert_int_equal(lw_store_stale_retries(b), 0);
    lw_borrower_state_t s = readb(BID_A);
    assert_int_equal(s.n_loans, 3);
    assert_int_equal(s.total_outstanding_fen, 100 + 40000000 + 7);
    lw_borrower_state_clear(&s);
    assert_int_equal(stream_len(), 1);
    /* the retried event is a duplicate now, and hands its alert back */
    lw_apply_result_t again = apply_ep(a, &e2, 1);
    assert_int_equal(again.code, LW_APPLY_DUPLICATE);
    assert_int_equal(again.n_alerts, 1);
    assert_int_equal(stream_len(), 1);
    lw_store_destroy(a);
    lw_store_destroy(b);
}

static void test_lost_update_strict(void **state)
{
    (void)state;
    lost_update(true);
}

static void test_lost_update_unfenced(void **state)
{
    (void)state;
    lost_update(false);
}

/* With two flushes in the pipeline the second takes a borrower's state from
 * the write in flight instead of reading it; its compare is then against the
 * state that write leaves. Store `a` stages flush 2 on A's state from flush
 * 1, flush 1 lands, store `b` (another partition) writes A, then flush 2 is
 * written: refused, read again, retried - no loan lost. */
static void test_lost_update_cached(void **state)
{
    (void)state;
    flushdb();
    lw_store_t *a = store_open(true), *b = store_open(true);
    char errstr[512];
    lw_apply_result_t r1[1], r2[1], rb[1];
    lw_flush_t *f1 = NULL, *f2 = NULL;
    lw_event_t e1 = mk(BID_A, LW_EVENT_DRAWDOWN, "p", "L1", "l1", 1, T0, 100);
    lw_event_t e2 = mk(BID_A, LW_EVENT_DRAWDOWN, "p", "L2", "l2", 1, T0 + 1, 20);
    lw_event_t e3 = mk(BID_A, LW_EVENT_DRAWDOWN, "p", "L3", "l3", 1, T0 + 2, 3);
    assert_int_equal(lw_store_append(a, &e1, "t", 0, 1), LW_OK);
    assert_int_equal(lw_store_flush_begin(a, r1, NULL, &f1, errstr, sizeof errstr), LW_OK);
    assert_int_equal(lw_store_flush_commit(a, f1, errstr, sizeof errstr), LW_OK);
    assert_int_equal(lw_store_append(a, &e2, "t", 0, 1), LW_OK);
    assert_int_equal(lw_store_flush_begin(a, r2, NULL, &f2, errstr, sizeof errstr), LW_OK);
    assert_int_equal(lw_store_flush_end(a, f1, errstr, sizeof errstr), LW_OK);
    assert_int_equal(apply_ep(b, &e3, 1).code, LW_APPLY_APPLIED);
    assert_int_equal(lw_store_flush_commit(a, f2, errstr, sizeof errstr), LW_OK);
    assert_int_equal(lw_store_flush_end(a, f2, errstr, sizeof errstr), LW_OK);
    (void)rb;
    assert_int_equal(r1[0].code, LW_APPLY_APPLIED);
    assert_int_equal(r2[0].code, LW_APPLY_APPLIED);
    assert_int_equal(lw_store_stale_retries(a), 1);
    lw_borrower_state_t s = readb(BID_A);
    assert_int_equal(s.n_loans, 3);
    assert_int_equal(s.total_outstanding_fen, 123);
    lw_borrower_state_clear(&s);
    lw_store_destroy(a);
    lw_store_destroy(b);
}

/* A zombie: the old owner of partition 0 (epoch 1) read A before the new
 * owner (epoch 2) wrote it. Without strict fencing its write is refused by
 * the compare, and its retry reads A stamped (partition 0, epoch 2): FENCED,
 * nothing written - the stamp fences exactly as write.lua's own check did. */
static void test_zombie_refused_by_compare(void **state)
{
    (void)state;
    flushdb();
    lw_store_t *z = store_open(false), *o = store_open(false);
    char errstr[512];
    lw_event_t e1 = mk(BID_A, LW_EVENT_DRAWDOWN, "p", "L1", "l1", 1, T0, 100);
    lw_event_t e2 = mk(BID_A, LW_EVENT_DRAWDOWN, "p", "L2", "l2", 1, T0 + 1, 20);
    lw_event_t e3 = mk(BID_A, LW_EVENT_DRAWDOWN, "p", "L3", "l3", 1, T0 + 2, 3);
    assert_int_equal(apply_ep(o, &e1, 1).code, LW_APPLY_APPLIED);
    lw_apply_result_t rz[1];
    lw_flush_t *fz = NULL;
    assert_int_equal(lw_store_append(z, &e2, "t", 0, 1), LW_OK);
    assert_int_equal(lw_store_flush_begin(z, rz, NULL, &fz, errstr, sizeof errstr), LW_OK);
    assert_int_equal(apply_ep(o, &e3, 2).code, LW_APPLY_APPLIED);
    char *before = dump(BID_A);
    assert_int_equal(lw_store_flush_commit(z, fz, errstr, sizeof errstr), LW_OK);
    assert_int_equal(lw_store_flush_end(z, fz, errstr, sizeof errstr), LW_OK);
    assert_int_equal(rz[0].code, LW_APPLY_FENCED);
    assert_int_equal(rz[0].fence_epoch, 2);
    char *after = dump(BID_A);
    assert_string_equal(before, after);
    free(before);
    free(after);
    lw_store_destroy(z);
    lw_store_destroy(o);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_totals_sequence_rule),
        cmocka_unit_test(test_big_amounts_exact),
        cmocka_unit_test(test_state_read_malformed),
        cmocka_unit_test(test_store_reads_foreign_values),
        cmocka_unit_test(test_fencing),
        cmocka_unit_test(test_rule_income_cap),
        cmocka_unit_test(test_rule_multi_lender),
        cmocka_unit_test(test_rule_stacking),
        cmocka_unit_test(test_rule_borrow_while_delinquent),
        cmocka_unit_test(test_rebalance_races_write),
        cmocka_unit_test(test_pipeline_many),
        cmocka_unit_test(test_flush_pipelined),
        cmocka_unit_test(test_staged_after_abort),
        cmocka_unit_test(test_rebalance_races_stream),
        cmocka_unit_test(test_pack_edits_across_restart),
        cmocka_unit_test(test_state_read_exact_and_checked),
        cmocka_unit_test(test_limit_refused),
        cmocka_unit_test(test_write_script_compare),
        cmocka_unit_test(test_lost_update_strict),
        cmocka_unit_test(test_lost_update_unfenced),
        cmocka_unit_test(test_lost_update_cached),
        cmocka_unit_test(test_zombie_refused_by_compare),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
