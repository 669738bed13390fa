/*
 * test_produce_lib.c - the lw_producer library API (loanwire/producer.h)
 * against the real broker: delivered callbacks carry the event, partition,
 * offset and the caller's opaque (also for events encoded by the caller and
 * handed over with lw_producer_send_encoded(), interleaved with send() in one
 * borrower's order); validation failures enqueue nothing and say
 * "field: reason"; one borrower stays on one partition with increasing
 * offsets; an unreachable broker ends every event in the failure callback
 * (event intact, opaque intact) and purge reports what is outstanding; the
 * configuration calls accept "topic" and refuse unknown properties.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "lw_test.h"

#include "loanwire/codec.h"
#include "loanwire/id.h"
#include "loanwire/producer.h"

#define N_EVENTS 300

typedef struct seen {
    int delivered, failed;
    int32_t partition[N_EVENTS];
    int64_t offset[N_EVENTS];
    lw_event_t ev[N_EVENTS];
    char reason[256];
    lw_err_t err;
    int bad_opaque;
} seen_t;

static void on_delivered(const lw_event_t *ev, int32_t partition, int64_t offset, void *opaque,
                         void *cb_opaque)
{
    seen_t *s = cb_opaque;
    intptr_t i = (intptr_t)opaque;

    if (i < 0 || i >= N_EVENTS) {
        s->bad_opaque++;
        return;
    }
    s->delivered++;
    s->partition[i] = partition;
    s->offset[i] = offset;
    s->ev[i] = *ev;
}

static void on_failed(const lw_event_t *ev, lw_err_t err, const char *reason, void *opaque,
                      void *cb_opaque)
{
    seen_t *s = cb_opaque;
    intptr_t i = (intptr_t)opaque;

    if (i < 0 || i >= N_EVENTS) {
        s->bad_opaque++;
        return;
    }
    s->failed++;
    s->ev[i] = *ev;
    s->err = err;
    snprintf(s->reason, sizeof s->reason, "%s", reason);
}

/* Borrower ids from the real pseudonymiser, so they are well formed. */
static void make_event(lw_event_t *ev, int i, const lw_id_key_t *key)
{
    char raw[32], err[256];

    memset(ev, 0, sizeof *ev);
    snprintf(ev->event_id, sizeof ev->event_id, "lib-%d", i);
    ev->event_type = LW_EVENT_DRAWDOWN;
    snprintf(ev->platform_id, sizeof ev->platform_id, "ant");
    snprintf(ev->lender_id, sizeof ev->lender_id, "bank-%d", i % 4);
    snprintf(raw, sizeof raw, "P%08d", i % 7); /* 7 borrowers */
    assert_int_equal(lw_id_pseudonymise(key, raw, ev->borrower_id, err, sizeof err), LW_OK);
    snprintf(ev->loan_id, sizeof ev->loan_id, "loan-%d", i % 7);
    ev->product = LW_PRODUCT_INSTALLMENT;
    ev->sequence = i / 7 + 1;
    ev->occurred_at = INT64_C(1735689600000) + i;
    ev->amount_fen = 1000 + i;
    ev->outstanding_fen = 100000 + i;
    snprintf(ev->currency, sizeof ev->currency, "CNY");
    ev->has_term_months = i % 2;
    ev->term_months = ev->has_term_months ? 12 : 0;
}

static lw_id_key_t *test_key(void)
{
    unsigned char k[32];
    char err[256];

    for (int i = 0; i < 32; i++)
        k[i] = (unsigned char)(200 - i);
    return lw_id_key_new(k, sizeof k, err, sizeof err);
}

static int same_event(const lw_event_t *a, const lw_event_t *b)
{
    return !strcmp(a->event_id, b->event_id) && a->event_type == b->event_type &&
           !strcmp(a->borrower_id, b->borrower_id) && !strcmp(a->loan_id, b->loan_id) &&
           !strcmp(a->lender_id, b->lender_id) && a->sequence == b->sequence &&
           a->occurred_at == b->occurred_at && a->amount_fen == b->amount_fen &&
           a->outstanding_fen == b->outstanding_fen && a->has_term_months == b->has_term_months &&
           (!a->has_term_months || a->term_months == b->term_months) &&
           !strcmp(a->currency, b->currency);
}

static void test_deliver(void **state)
{
    static seen_t s;
    lw_id_key_t *key = test_key();
    lw_producer_conf_t *conf = lw_producer_conf_new();
    lw_producer_t *p;
    lw_producer_stats_t st;
    lw_event_t evs[N_EVENTS], bad;
    char err[512], topic[128], kv[200];

    (void)state;
    lw_test_require_kafka();
    lw_test_unique(topic, sizeof topic, "lwtest.producelib");
    memset(&s, 0, sizeof s);
    assert_non_null(conf);
    assert_int_equal(
        lw_producer_conf_set(conf, "bootstrap.servers", lw_test_bootstrap(), err, sizeof err),
        LW_OK);
    snprintf(kv, sizeof kv, "topic=%s", topic); /* "topic" also works through -X */
    assert_int_equal(lw_producer_conf_set_kv(conf, kv, err, sizeof err), LW_OK);
    assert_int_equal(lw_producer_conf_set_kv(conf, "no.such.property=1", err, sizeof err),
                     LW_ERR_CONFIG);
    assert_int_equal(lw_producer_conf_set(conf, "topic", "", err, sizeof err), LW_ERR_CONFIG);
    lw_producer_conf_set_callbacks(conf, on_delivered, on_failed, &s);
    p = lw_producer_new(conf, err, sizeof err);
    if (!p)
        fail_msg("lw_producer_new: %s", err);

    /* Every third event encoded here and handed over already encoded, as
     * loanwire-produce's reader thread does. */
    lw_codec_t *codec = lw_codec_new(err, sizeof err);
    assert_non_null(codec);
    for (int i = 0; i < N_EVENTS; i++) {
        make_event(&evs[i], i, key);
        if (i % 3 == 0) {
            unsigned char buf[LW_CODEC_MAX_EVENT];
            size_t len = 0;
            assert_int_equal(
                lw_producer_encode(codec, &evs[i], buf, sizeof buf, &len, err, sizeof err), LW_OK);
            assert_int_equal(lw_producer_send_encoded(p, evs[i].borrower_id, buf, len,
                                                      (void *)(intptr_t)i, err, sizeof err),
                             LW_OK);
        } else {
            assert_int_equal(lw_producer_send(p, &evs[i], (void *)(intptr_t)i, err, sizeof err),
                             LW_OK);
        }
    }
    assert_int_equal(lw_producer_send_encoded(p, NULL, "x", 1, NULL, err, sizeof err),
                     LW_ERR_INVALID_ARG);
    assert_int_equal(
        lw_producer_send_encoded(NULL, evs[0].borrower_id, "x", 1, NULL, err, sizeof err),
        LW_ERR_INVALID_ARG);
    lw_codec_destroy(codec);
    /* Invalid: refused before anything is enqueued, naming the field. */
    make_event(&bad, 0, key);
    bad.amount_fen = -1;
    assert_int_equal(lw_producer_send(p, &bad, (void *)(intptr_t)-1, err, sizeof err),
                     LW_ERR_VALIDATION);
    assert_memory_equal(err, "amount_fen: ", 12);
    bad.amount_fen = 1;
    bad.borrower_id[0] = '\0';
    assert_int_equal(lw_producer_send(p, &bad, NULL, err, sizeof err), LW_ERR_VALIDATION);
    assert_memory_equal(err, "borrower_id: ", 13);

    assert_int_equal(lw_producer_flush(p, 60000), LW_OK);
    lw_producer_stats(p, &st);
    assert_int_equal(st.sent, N_EVENTS);
    assert_int_equal(st.rejected, 2);
    assert_int_equal(st.delivered, N_EVENTS);
    assert_int_equal(st.failed, 0);
    assert_int_equal(st.in_flight, 0);
    assert_int_equal(s.delivered, N_EVENTS);
    assert_int_equal(s.failed, 0);
    assert_int_equal(s.bad_opaque, 0);

    /* The callback's event is the one sent; a borrower's events share a
     * partition, with offsets growing in send order. */
    for (int i = 0; i < N_EVENTS; i++) {
        if (!same_event(&s.ev[i], &evs[i]))
            fail_msg("delivered event %d differs from the one sent", i);
        if (i >= 7) {
            assert_int_equal(s.partition[i], s.partition[i - 7]);
            assert_true(s.offset[i] > s.offset[i - 7]);
        }
    }
    lw_producer_destroy(p);
    lw_producer_destroy(NULL);
    lw_id_key_destroy(key);
}

/* No broker: every event must come back through the failure callback. */
static void test_unreachable(void **state)
{
    static seen_t s;
    lw_id_key_t *key = test_key();
    lw_producer_conf_t *conf = lw_producer_conf_new();
    lw_producer_t *p;
    lw_producer_stats_t st;
    lw_event_t evs[20];
    char err[512];

    (void)state;
    memset(&s, 0, sizeof s);
    /* Port 1 on loopback: nothing listens there. */
    assert_int_equal(
        lw_producer_conf_set(conf, "bootstrap.servers", "127.0.0.1:1", err, sizeof err), LW_OK);
    assert_int_equal(lw_producer_conf_set_kv(conf, "message.timeout.ms=1500", err, sizeof err),
                     LW_OK);
    assert_int_equal(lw_producer_conf_set_kv(conf, "log_level=0", err, sizeof err), LW_OK);
    lw_producer_conf_set_callbacks(conf, NULL, on_failed, &s);
    p = lw_producer_new(conf, err, sizeof err);
    assert_non_null(p);
    for (int i = 0; i < 10; i++) {
        make_event(&evs[i], i, key);
        assert_int_equal(lw_producer_send(p, &evs[i], (void *)(intptr_t)i, err, sizeof err), LW_OK);
    }
    /* Times out after message.timeout.ms: all ten fail, none are lost. */
    assert_int_equal(lw_producer_flush(p, 20000), LW_OK);
    lw_producer_stats(p, &st);
    assert_int_equal(st.failed, 10);
    assert_int_equal(st.delivered, 0);
    assert_int_equal(s.failed, 10);
    assert_int_equal(s.err, LW_ERR_TRANSIENT);
    assert_true(strlen(s.reason) > 0);
    for (int i = 0; i < 10; i++)
        if (!same_event(&s.ev[i], &evs[i]))
            fail_msg("failed event %d differs from the one sent", i);

    /* Purge: outstanding events are reported at once, not after the timeout. */
    for (int i = 10; i < 20; i++) {
        make_event(&evs[i], i, key);
        assert_int_equal(lw_producer_send(p, &evs[i], (void *)(intptr_t)i, err, sizeof err), LW_OK);
    }
    lw_producer_purge(p);
    lw_producer_stats(p, &st);
    assert_int_equal(st.failed, 20);
    assert_int_equal(st.in_flight, 0);
    assert_non_null(strstr(s.reason, "purged"));
    assert_true(same_event(&s.ev[19], &evs[19]));
    lw_producer_destroy(p);
    lw_id_key_destroy(key);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_deliver),
        cmocka_unit_test(test_unreachable),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
