/*
 * test_codec.c - the single-object codec (common/src/codec*.c, canonical.c,
 * fingerprint.c): round trips of every event type and of alerts, the fast
 * path against Avro C's generic path (bytes and values), schema evolution
 * with fastavro-written v1/v2 fixtures, and hostile input: truncations,
 * every single-byte mutation, bad markers, unknown fingerprints, bad varints,
 * lengths and indexes. None of it may crash (run it under ASan too).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "codec_int.h"
#include "loanwire/codec.h"
#include "loanwire/json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static lw_codec_t *codec;

static lw_event_t make_event(lw_event_type_t t)
{
    lw_event_t ev;
    memset(&ev, 0, sizeof(ev));
    snprintf(ev.event_id, sizeof(ev.event_id), "ev-%d", (int)t);
    ev.event_type = t;
    strcpy(ev.platform_id, "antpay");
    strcpy(ev.lender_id, "bank-042");
    strcpy(ev.borrower_id, "abcdefghijklmnopqrstu_");
    strcpy(ev.loan_id, t == LW_EVENT_APPLICATION ? "APP-1" : "LOAN-1");
    ev.product = t == LW_EVENT_CREDIT_LINE ? LW_PRODUCT_REVOLVING : LW_PRODUCT_INSTALLMENT;
    ev.sequence = 1 + (int64_t)t * 1000003;
    ev.occurred_at = 1700000000000LL + t;
    ev.amount_fen = 100000 * (t + 1);
    ev.outstanding_fen = t == LW_EVENT_CLOSURE || t == LW_EVENT_APPLICATION ? 0 : 9000000000000LL;
    ev.credit_limit_fen = t == LW_EVENT_CREDIT_LINE ? 5000000 : 0;
    ev.days_past_due = t == LW_EVENT_DELINQUENCY ? 95 : 0;
    ev.past_due_fen = t == LW_EVENT_DELINQUENCY ? 12345 : 0;
    strcpy(ev.currency, "CNY");
    ev.has_annual_income = t % 2 == 0;
    ev.annual_income_fen = ev.has_annual_income ? 36000000 : 0;
    ev.has_term_months = t % 3 == 0;
    ev.term_months = ev.has_term_months ? 24 : 0;
    return ev;
}

static lw_alert_t make_alert(void)
{
    lw_alert_t al;
    memset(&al, 0, sizeof(al));
    strcpy(al.alert_id, "al-0001");
    strcpy(al.borrower_id, "abcdefghijklmnopqrstu_");
    strcpy(al.rule_id, "balance_cap");
    al.rule_version = 3;
    al.severity = LW_SEVERITY_CRITICAL;
    strcpy(al.reason, "outstanding 320000.00 CNY over cap 300000.00 \xe4\xb8\xad \"quoted\"");
    al.total_outstanding_fen = 32000000;
    al.active_lenders = 4;
    al.active_loans = 7;
    al.window_count = -1;
    al.window_ms = INT64_MIN;
    al.has_annual_income = true;
    al.annual_income_fen = INT64_MAX;
    al.limit = 30000000;
    strcpy(al.trigger_event_id, "ev-9");
    strcpy(al.trigger_platform_id, "antpay");
    strcpy(al.trigger_lender_id, "bank-042");
    al.raised_at = 1700000000123LL;
    return al;
}

static void assert_events_equal(const lw_event_t *a, const lw_event_t *b)
{
    char ja[2048], jb[2048];
    assert_true(lw_event_to_json(a, ja, sizeof(ja)) > 0);
    assert_true(lw_event_to_json(b, jb, sizeof(jb)) > 0);
    assert_string_equal(ja, jb);
}

static void round_trip_every_type(void **state)
{
    (void)state;
    for (int t = 0; t < LW_EVENT__CNT; t++) {
        lw_event_t ev = make_event((lw_event_type_t)t), fast, gen;
        unsigned char buf[LW_CODEC_MAX_EVENT], buf2[LW_CODEC_MAX_EVENT];
        size_t len, len2;
        char errstr[256];

        assert_int_equal(lw_codec_encode_event(codec, &ev, buf, sizeof(buf), &len), LW_OK);
        assert_int_equal(buf[0], 0xC3);
        assert_int_equal(buf[1], 0x01);
        assert_int_equal(lw_codec_record_kind(codec, buf, len), LW_RECORD_LOAN_EVENT);
        /* Avro C's generic writer must produce the same bytes. */
        assert_int_equal(lw_codec_encode_version(codec, "LoanEvent.avsc", &ev, buf2, sizeof(buf2),
                                                 &len2, errstr, sizeof(errstr)),
                         LW_OK);
        assert_int_equal(len, len2);
        assert_memory_equal(buf, buf2, len);
        /* Both decode paths give the original values. */
        assert_int_equal(lw_codec_decode_event(codec, buf, len, &fast, errstr, sizeof(errstr)),
                         LW_OK);
        assert_int_equal(lw_codec_decode_generic(codec, LW_RECORD_LOAN_EVENT, buf, len, &gen,
                                                 errstr, sizeof(errstr)),
                         LW_OK);
        assert_events_equal(&ev, &fast);
        assert_events_equal(&ev, &gen);
        assert_int_equal(fast.has_annual_income, ev.has_annual_income);
        assert_int_equal(fast.has_term_months, ev.has_term_months);
    }
}

static void extremes_round_trip(void **state)
{
    (void)state;
    lw_event_t ev = make_event(LW_EVENT_CORRECTION), out;
    unsigned char buf[LW_CODEC_MAX_EVENT], buf2[LW_CODEC_MAX_EVENT];
    size_t len, len2;
    char errstr[256];
    int64_t vals[] = {0, -1, 1, 63, 64, -64, -65, INT64_MAX, INT64_MIN, 1LL << 53};

    memset(ev.event_id, 'x', LW_ID_MAX); /* the longest string that fits */
    ev.event_id[LW_ID_MAX] = '\0';
    for (size_t i = 0; i < sizeof(vals) / sizeof(vals[0]); i++) {
        ev.sequence = vals[i];
        ev.amount_fen = (int64_t)(0 - (uint64_t)vals[i]);
        ev.days_past_due = (int32_t)(vals[i] >> 32);
        ev.has_term_months = true;
        ev.term_months = i % 2 ? INT32_MIN : INT32_MAX;
        assert_int_equal(lw_codec_encode_event(codec, &ev, buf, sizeof(buf), &len), LW_OK);
        assert_int_equal(lw_codec_encode_version(codec, "LoanEvent.avsc", &ev, buf2, sizeof(buf2),
                                                 &len2, errstr, sizeof(errstr)),
                         LW_OK);
        assert_int_equal(len, len2);
        assert_memory_equal(buf, buf2, len);
        assert_int_equal(lw_codec_decode_event(codec, buf, len, &out, errstr, sizeof(errstr)),
                         LW_OK);
        assert_int_equal(out.sequence, vals[i]);
        assert_int_equal(out.term_months, ev.term_months);
        assert_events_equal(&ev, &out);
    }
}

static void alert_round_trip(void **state)
{
    (void)state;
    lw_alert_t al = make_alert(), out, gen;
    unsigned char buf[LW_CODEC_MAX_ALERT], buf2[LW_CODEC_MAX_ALERT];
    size_t len, len2;
    char errstr[256], ja[4096], jb[4096];
    lw_event_t ev;

    assert_int_equal(lw_codec_encode_alert(codec, &al, buf, sizeof(buf), &len), LW_OK);
    assert_int_equal(lw_codec_record_kind(codec, buf, len), LW_RECORD_ALERT);
    assert_int_equal(lw_codec_encode_version(codec, "OverIndebtednessAlert.avsc", &al, buf2,
                                             sizeof(buf2), &len2, errstr, sizeof(errstr)),
                     LW_OK);
    assert_int_equal(len, len2);
    assert_memory_equal(buf, buf2, len);
    assert_int_equal(lw_codec_decode_alert(codec, buf, len, &out, errstr, sizeof(errstr)), LW_OK);
    assert_int_equal(
        lw_codec_decode_generic(codec, LW_RECORD_ALERT, buf, len, &gen, errstr, sizeof(errstr)),
        LW_OK);
    assert_true(lw_alert_to_json(&al, ja, sizeof(ja)) > 0);
    assert_true(lw_alert_to_json(&out, jb, sizeof(jb)) > 0);
    assert_string_equal(ja, jb);
    assert_true(lw_alert_to_json(&gen, jb, sizeof(jb)) > 0);
    assert_string_equal(ja, jb);
    /* An alert is not an event. */
    assert_int_equal(lw_codec_decode_event(codec, buf, len, &ev, errstr, sizeof(errstr)),
                     LW_ERR_UNKNOWN_SCHEMA);
    assert_non_null(strstr(errstr, "OverIndebtednessAlert"));
}

/* ---- Evolution ----------------------------------------------------------- */

static unsigned char *read_fixture(const char *name, size_t *len)
{
    const char *src = getenv("LW_SOURCE_DIR");
    char path[1024];
    FILE *f;
    unsigned char *buf = malloc(4096);

    assert_non_null(src);
    assert_non_null(buf);
    snprintf(path, sizeof(path), "%s/tests/support/fixtures/%s", src, name);
    f = fopen(path, "rb");
    assert_non_null(f);
    *len = fread(buf, 1, 4095, f);
    buf[*len] = '\0';
    fclose(f);
    return buf;
}

static void evolution_fixtures(void **state)
{
    (void)state;
    const char *names[][2] = {{"event_v1.avro", "event_v1.json"},
                              {"event_v2.avro", "event_v2.json"}};
    for (int i = 0; i < 2; i++) {
        size_t blen, jlen;
        unsigned char *bin = read_fixture(names[i][0], &blen);
        char *json = (char *)read_fixture(names[i][1], &jlen);
        char errstr[256], out[2048];
        lw_event_t ev, gen;

        while (jlen && json[jlen - 1] == '\n')
            json[--jlen] = '\0';
        assert_int_equal(lw_codec_decode_event(codec, bin, blen, &ev, errstr, sizeof(errstr)),
                         LW_OK);
        assert_true(lw_event_to_json(&ev, out, sizeof(out)) > 0);
        assert_string_equal(out, json);
        assert_int_equal(lw_codec_decode_generic(codec, LW_RECORD_LOAN_EVENT, bin, blen, &gen,
                                                 errstr, sizeof(errstr)),
                         LW_OK);
        assert_events_equal(&ev, &gen);
        if (i == 0) { /* v1 knows neither optional field */
            assert_false(ev.has_annual_income);
            assert_false(ev.has_term_months);
            assert_string_equal(ev.currency, "HKD");
        } else {
            assert_true(ev.has_annual_income);
            assert_int_equal(ev.annual_income_fen, 30000000);
        }
        free(bin);
        free(json);
    }
}

static void encode_with_v1(void **state)
{
    (void)state;
    lw_event_t ev = make_event(LW_EVENT_DRAWDOWN), out;
    unsigned char v1[LW_CODEC_MAX_EVENT], v2[LW_CODEC_MAX_EVENT];
    size_t l1, l2;
    char errstr[256];

    ev.has_annual_income = ev.has_term_months = true;
    assert_int_equal(lw_codec_encode_version(codec, "v1/LoanEvent.avsc", &ev, v1, sizeof(v1), &l1,
                                             errstr, sizeof(errstr)),
                     LW_OK);
    assert_int_equal(lw_codec_encode_event(codec, &ev, v2, sizeof(v2), &l2), LW_OK);
    assert_true(l1 < l2);
    assert_memory_not_equal(v1 + 2, v2 + 2, 8); /* different fingerprints */
    /* The v1 datum is the v2 datum without the two trailing unions. */
    assert_memory_equal(v1 + LW_SO_HEADER_LEN, v2 + LW_SO_HEADER_LEN, l1 - LW_SO_HEADER_LEN);
    assert_int_equal(lw_codec_decode_event(codec, v1, l1, &out, errstr, sizeof(errstr)), LW_OK);
    assert_false(out.has_annual_income);
    assert_false(out.has_term_months);
    ev.has_annual_income = ev.has_term_months = false;
    ev.annual_income_fen = 0;
    ev.term_months = 0;
    assert_events_equal(&ev, &out);
    /* A v1 record that runs long or ends early is still caught on the Avro C path. */
    assert_int_equal(lw_codec_decode_event(codec, v1, l1 - 1, &out, errstr, sizeof(errstr)),
                     LW_ERR_TRUNCATED);
    v1[l1] = 0;
    assert_int_equal(lw_codec_decode_event(codec, v1, l1 + 1, &out, errstr, sizeof(errstr)),
                     LW_ERR_TRAILING_BYTES);
}

/* ---- Hostile input ------------------------------------------------------- */

static int allowed_error(lw_err_t e)
{
    return e == LW_ERR_TRUNCATED || e == LW_ERR_BAD_MAGIC || e == LW_ERR_UNKNOWN_SCHEMA ||
           e == LW_ERR_TRAILING_BYTES || e == LW_ERR_PARSE || e == LW_ERR_VALIDATION;
}

static void header_errors(void **state)
{
    (void)state;
    lw_event_t ev = make_event(LW_EVENT_REPAYMENT), out;
    unsigned char buf[LW_CODEC_MAX_EVENT];
    size_t len;
    char errstr[256];

    assert_int_equal(lw_codec_encode_event(codec, &ev, buf, sizeof(buf), &len), LW_OK);
    assert_int_equal(lw_codec_decode_event(codec, buf, 0, &out, errstr, sizeof(errstr)),
                     LW_ERR_TRUNCATED);
    for (size_t n = 1; n < LW_SO_HEADER_LEN; n++)
        assert_int_equal(lw_codec_decode_event(codec, buf, n, &out, errstr, sizeof(errstr)),
                         LW_ERR_TRUNCATED);
    buf[0] = 0x4f; /* e.g. a JSON '{' or Confluent's 00 magic */
    assert_int_equal(lw_codec_decode_event(codec, buf, len, &out, errstr, sizeof(errstr)),
                     LW_ERR_BAD_MAGIC);
    assert_non_null(strstr(errstr, "c3 01"));
    buf[0] = 0xC3;
    buf[1] = 0x02;
    assert_int_equal(lw_codec_decode_event(codec, buf, len, &out, errstr, sizeof(errstr)),
                     LW_ERR_BAD_MAGIC);
    buf[1] = 0x01;
    buf[5] ^= 0x40;
    assert_int_equal(lw_codec_decode_event(codec, buf, len, &out, errstr, sizeof(errstr)),
                     LW_ERR_UNKNOWN_SCHEMA);
    assert_non_null(strstr(errstr, "fingerprint"));
    assert_int_equal(lw_codec_record_kind(codec, buf, len), -1);
}

static void truncations_and_trailing(void **state)
{
    (void)state;
    for (int t = 0; t < LW_EVENT__CNT; t++) {
        lw_event_t ev = make_event((lw_event_type_t)t), out;
        unsigned char buf[LW_CODEC_MAX_EVENT];
        size_t len;
        char errstr[256];
        assert_int_equal(lw_codec_encode_event(codec, &ev, buf, sizeof(buf), &len), LW_OK);
        for (size_t n = LW_SO_HEADER_LEN; n < len; n++) {
            assert_int_equal(lw_codec_decode_event(codec, buf, n, &out, errstr, sizeof(errstr)),
                             LW_ERR_TRUNCATED);
            assert_true(strlen(errstr) > 0);
            assert_int_equal(lw_codec_decode_generic(codec, LW_RECORD_LOAN_EVENT, buf, n, &out,
                                                     errstr, sizeof(errstr)),
                             LW_ERR_TRUNCATED);
        }
        buf[len] = 0x00;
        assert_int_equal(lw_codec_decode_event(codec, buf, len + 1, &out, errstr, sizeof(errstr)),
                         LW_ERR_TRAILING_BYTES);
        assert_int_equal(lw_codec_decode_generic(codec, LW_RECORD_LOAN_EVENT, buf, len + 1, &out,
                                                 errstr, sizeof(errstr)),
                         LW_ERR_TRAILING_BYTES);
        /* Encoding into every buffer that is too small fails cleanly. */
        for (size_t cap = 0; cap < len; cap++)
            assert_int_equal(lw_codec_encode_event(codec, &ev, buf, cap, &len), LW_ERR_INVALID_ARG);
    }
}

/* Every single-byte change of a valid record: no crash, an error from the
 * documented set, and the fast path agrees with Avro C's path. */
static void every_single_byte_mutation(void **state)
{
    (void)state;
    const unsigned char repl[] = {0x00, 0x01, 0x02, 0x7f, 0x80, 0xff, 0xfe, 0x3f, 0x81};
    lw_event_t ev = make_event(LW_EVENT_DELINQUENCY), a, b;
    unsigned char orig[LW_CODEC_MAX_EVENT], buf[LW_CODEC_MAX_EVENT];
    size_t len;
    char errstr[256];
    int ok = 0, bad = 0;

    assert_int_equal(lw_codec_encode_event(codec, &ev, orig, sizeof(orig), &len), LW_OK);
    for (size_t i = 0; i < len; i++) {
        for (size_t r = 0; r < sizeof(repl) + 1; r++) {
            memcpy(buf, orig, len);
            buf[i] = r < sizeof(repl) ? repl[r] : (unsigned char)(orig[i] ^ 0x55);
            if (buf[i] == orig[i])
                continue;
            lw_err_t e1 = lw_codec_decode_event(codec, buf, len, &a, errstr, sizeof(errstr));
            lw_err_t e2 = lw_codec_decode_generic(codec, LW_RECORD_LOAN_EVENT, buf, len, &b, errstr,
                                                  sizeof(errstr));
            if (e1 == LW_OK) {
                assert_int_equal(e2, LW_OK);
                assert_events_equal(&a, &b);
                ok++;
            } else {
                assert_true(allowed_error(e1));
                assert_true(allowed_error(e2));
                assert_int_not_equal(e2, LW_OK);
                bad++;
            }
        }
    }
    assert_true(ok > 0 && bad > 0);
}

/* A datum assembled by hand, after a valid header. */
static size_t craft(unsigned char *buf, const unsigned char *datum, size_t n)
{
    lw_event_t ev = make_event(LW_EVENT_DRAWDOWN);
    size_t len;
    assert_int_equal(lw_codec_encode_event(codec, &ev, buf, LW_CODEC_MAX_EVENT, &len), LW_OK);
    memcpy(buf + LW_SO_HEADER_LEN, datum, n);
    return LW_SO_HEADER_LEN + n;
}

static void bad_datums(void **state)
{
    (void)state;
    unsigned char buf[LW_CODEC_MAX_EVENT];
    char errstr[256];
    lw_event_t out;
    struct {
        unsigned char d[96];
        size_t n;
        lw_err_t want;
        const char *msg;
    } cases[] = {
        /* negative string length (-1) */
        {{0x01}, 1, LW_ERR_PARSE, "negative"},
        /* 11-byte varint */
        {{0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00},
         11,
         LW_ERR_PARSE,
         "varint"},
        /* 10-byte varint whose last byte carries more than bit 63 */
        {{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02}, 10, LW_ERR_PARSE, "varint"},
        /* string length past the end */
        {{0x7e, 'a', 'b'}, 3, LW_ERR_TRUNCATED, "past the end"},
        /* event_id of 65 bytes: too long for its buffer */
        {{0x82, 0x01}, 2, LW_ERR_VALIDATION, "exceeds"},
        /* "a", then event_type index 8 (8 symbols) */
        {{0x02, 'a', 0x10}, 3, LW_ERR_PARSE, "enum index 8"},
        /* "a", event_type -1 */
        {{0x02, 'a', 0x01}, 3, LW_ERR_PARSE, "enum index -1"},
        /* NUL inside a string */
        {{0x06, 'a', 0x00, 'b'}, 4, LW_ERR_VALIDATION, "UTF-8"},
        /* invalid UTF-8 */
        {{0x04, 0xc3, 0x28}, 3, LW_ERR_VALIDATION, "UTF-8"},
        /* empty datum */
        {{0}, 0, LW_ERR_TRUNCATED, "ends"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        size_t len = craft(buf, cases[i].d, cases[i].n);
        /* the 65-byte case needs its bytes */
        if (cases[i].want == LW_ERR_VALIDATION && cases[i].d[0] == 0x82) {
            memset(buf + len, 'x', 65);
            len += 65;
        }
        lw_err_t e = lw_codec_decode_event(codec, buf, len, &out, errstr, sizeof(errstr));
        if (e != cases[i].want || !strstr(errstr, cases[i].msg))
            print_error("case %zu: got %d (%s), want %d with '%s'\n", i, e, errstr, cases[i].want,
                        cases[i].msg);
        assert_int_equal(e, cases[i].want);
        assert_non_null(strstr(errstr, cases[i].msg));
        assert_non_null(strstr(errstr, "event_id") ? "ok" : (i < 3 ? NULL : "ok"));
        assert_true(allowed_error(lw_codec_decode_generic(codec, LW_RECORD_LOAN_EVENT, buf, len,
                                                          &out, errstr, sizeof(errstr))));
    }
}

static void bad_union_index(void **state)
{
    (void)state;
    lw_event_t ev = make_event(LW_EVENT_DRAWDOWN), out;
    unsigned char buf[LW_CODEC_MAX_EVENT];
    size_t len;
    char errstr[256];

    ev.has_annual_income = false;
    ev.has_term_months = false;
    assert_int_equal(lw_codec_encode_event(codec, &ev, buf, sizeof(buf), &len), LW_OK);
    assert_int_equal(buf[len - 1], 0x00); /* term_months: null branch */
    buf[len - 1] = 0x04;                  /* branch 2 of a 2-branch union */
    assert_int_equal(lw_codec_decode_event(codec, buf, len, &out, errstr, sizeof(errstr)),
                     LW_ERR_PARSE);
    assert_non_null(strstr(errstr, "term_months"));
    assert_non_null(strstr(errstr, "union index 2"));
    assert_int_equal(lw_codec_decode_generic(codec, LW_RECORD_LOAN_EVENT, buf, len, &out, errstr,
                                             sizeof(errstr)),
                     LW_ERR_PARSE);
    /* int field out of 32-bit range: term_months = 2^31 */
    buf[len - 1] = 0x02;
    buf[len++] = 0x80;
    buf[len++] = 0x80;
    buf[len++] = 0x80;
    buf[len++] = 0x80;
    buf[len++] = 0x10;
    assert_int_equal(lw_codec_decode_event(codec, buf, len, &out, errstr, sizeof(errstr)),
                     LW_ERR_PARSE);
    assert_non_null(strstr(errstr, "32-bit"));
}

static void encode_rejects_bad_structs(void **state)
{
    (void)state;
    lw_event_t ev = make_event(LW_EVENT_DRAWDOWN);
    unsigned char buf[LW_CODEC_MAX_EVENT];
    size_t len;

    ev.event_type = LW_EVENT__CNT;
    assert_int_equal(lw_codec_encode_event(codec, &ev, buf, sizeof(buf), &len), LW_ERR_INVALID_ARG);
    ev = make_event(LW_EVENT_DRAWDOWN);
    memset(ev.loan_id, 'x', sizeof(ev.loan_id)); /* no NUL */
    assert_int_equal(lw_codec_encode_event(codec, &ev, buf, sizeof(buf), &len), LW_ERR_INVALID_ARG);
}

/* ---- Canonical form and fingerprint --------------------------------------- */

/* The spec's definition, bit by bit, to check the table-driven version. */
static uint64_t slow_fp(const unsigned char *p, size_t n)
{
    uint64_t fp = 0xc15d213aa4d7a795ULL;
    for (size_t i = 0; i < n; i++) {
        fp ^= p[i];
        for (int j = 0; j < 8; j++)
            fp = (fp >> 1) ^ (0xc15d213aa4d7a795ULL & (0 - (fp & 1)));
    }
    return fp;
}

static void fingerprint_matches_definition(void **state)
{
    (void)state;
    unsigned char data[300];
    assert_true(lw_fingerprint64("", 0) == 0xc15d213aa4d7a795ULL);
    for (size_t i = 0; i < sizeof(data); i++)
        data[i] = (unsigned char)(i * 131 + 7);
    for (size_t n = 0; n <= sizeof(data); n += 37)
        assert_true(lw_fingerprint64(data, n) == slow_fp(data, n));
}

static void canonical_forms(void **state)
{
    (void)state;
    const char *cases[][2] = {
        {"\"int\"", "\"int\""},
        {"{\"type\":\"int\"}", "\"int\""},
        {"{\"type\":\"long\",\"logicalType\":\"timestamp-millis\"}", "\"long\""},
        {"{\"type\":\"fixed\",\"name\":\"Foo\",\"size\":16}",
         "{\"name\":\"Foo\",\"type\":\"fixed\",\"size\":16}"},
        {"{\"type\":\"fixed\",\"name\":\"Foo\",\"size\":\"016\",\"namespace\":\"x.y\"}",
         "{\"name\":\"x.y.Foo\",\"type\":\"fixed\",\"size\":16}"},
        {" { \"type\" : \"array\", \"items\" : {\"type\":\"string\"}, \"doc\":\"d\" } ",
         "{\"type\":\"array\",\"items\":\"string\"}"},
        {"{\"type\":\"map\",\"values\":[\"null\",\"long\"]}",
         "{\"type\":\"map\",\"values\":[\"null\",\"long\"]}"},
        {"{\"namespace\":\"a.b\",\"type\":\"record\",\"name\":\"R\",\"doc\":\"x\",\"fields\":["
         "{\"name\":\"e\",\"type\":{\"type\":\"enum\",\"name\":\"E\",\"symbols\":[\"A\",\"B\"]},"
         "\"default\":\"A\"},"
         "{\"name\":\"f\",\"type\":{\"type\":\"fixed\",\"name\":\"c.F\",\"size\":2}},"
         "{\"name\":\"g\",\"type\":\"E\"},{\"name\":\"h\",\"type\":\"c.F\"},"
         "{\"name\":\"r\",\"type\":[\"null\",\"R\"]}]}",
         "{\"name\":\"a.b.R\",\"type\":\"record\",\"fields\":["
         "{\"name\":\"e\",\"type\":{\"name\":\"a.b.E\",\"type\":\"enum\",\"symbols\":[\"A\",\"B\"]}"
         "},"
         "{\"name\":\"f\",\"type\":{\"name\":\"c.F\",\"type\":\"fixed\",\"size\":2}},"
         "{\"name\":\"g\",\"type\":\"a.b.E\"},{\"name\":\"h\",\"type\":\"c.F\"},"
         "{\"name\":\"r\",\"type\":[\"null\",\"a.b.R\"]}]}"},
        {"{\"type\":\"record\",\"name\":\"\\u0052\",\"fields\":[]}",
         "{\"name\":\"R\",\"type\":\"record\",\"fields\":[]}"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char errstr[256];
        char *pcf = lw_schema_canonical(cases[i][0], errstr, sizeof(errstr));
        if (!pcf)
            print_error("case %zu: %s\n", i, errstr);
        assert_non_null(pcf);
        assert_string_equal(pcf, cases[i][1]);
        free(pcf);
    }
    const char *bad[] = {"",
                         "{",
                         "{\"type\":\"record\",\"name\":\"R\"}",
                         "\"Unknown\"",
                         "{\"type\":\"fixed\",\"name\":\"F\",\"size\":-1}",
                         "42",
                         "{\"type\":\"enum\",\"name\":\"E\",\"symbols\":[1]}"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char errstr[256] = "";
        char *pcf = lw_schema_canonical(bad[i], errstr, sizeof(errstr));
        assert_null(pcf);
        assert_true(strlen(errstr) > 0);
    }
}

static void embedded_schemas(void **state)
{
    (void)state;
    const char *json, *path;
    int n = 0, v1 = 0;
    for (size_t i = 0; (path = lw_schema_embedded(i, &json)); i++) {
        n++;
        v1 += !strcmp(path, "v1/LoanEvent.avsc");
        assert_non_null(json);
    }
    assert_true(n >= 3);
    assert_int_equal(v1, 1);
    assert_non_null(lw_schema_current(LW_RECORD_LOAN_EVENT));
    assert_non_null(strstr(lw_schema_current(LW_RECORD_ALERT), "OverIndebtednessAlert"));
    lw_codec_destroy(NULL);
}

static int setup(void **state)
{
    char errstr[512];
    (void)state;
    codec = lw_codec_new(errstr, sizeof(errstr));
    if (!codec)
        print_error("lw_codec_new: %s\n", errstr);
    return codec ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    lw_codec_destroy(codec);
    return 0;
}

/* Issue 20: CreditInquiry, one recorded look-up: fast and generic paths
 * agree, every purpose round-trips, and a frame of another kind is refused
 * by name. */
static void inquiry_round_trip(void **state)
{
    (void)state;
    for (int p = 0; p < LW_PURPOSE__CNT; p++) {
        lw_inquiry_t iq, back, gen;
        memset(&iq, 0, sizeof iq);
        strcpy(iq.inquiry_id, "0123456789abcdef0123456789abcdef");
        strcpy(iq.borrower_id, "abcdefghijklmnopqrstu_");
        strcpy(iq.institution_id, p == 0 ? "BUREAU" : "bank-042");
        iq.purpose = (lw_inquiry_purpose_t)p;
        iq.inquired_at = 1767225600000LL + p;
        unsigned char buf[LW_CODEC_MAX_INQUIRY];
        size_t n = 0;
        char es[256];
        assert_int_equal(lw_codec_encode_inquiry(codec, &iq, buf, sizeof buf, &n), LW_OK);
        assert_int_equal(buf[0], 0xC3);
        assert_int_equal(lw_codec_record_kind(codec, buf, n), LW_RECORD_INQUIRY);
        assert_int_equal(lw_codec_decode_inquiry(codec, buf, n, &back, es, sizeof es), LW_OK);
        assert_memory_equal(&iq, &back, sizeof iq);
        assert_int_equal(
            lw_codec_decode_generic(codec, LW_RECORD_INQUIRY, buf, n, &gen, es, sizeof es), LW_OK);
        assert_memory_equal(&iq, &gen, sizeof iq);
        assert_string_equal(lw_purpose_name((lw_inquiry_purpose_t)p), lw_purpose_syms[p]);
        assert_int_equal(lw_purpose_parse(lw_purpose_syms[p]), p);
        assert_int_equal(lw_purpose_is_approval((lw_inquiry_purpose_t)p), p < 3);
        /* an inquiry is not an event, nor the reverse */
        lw_event_t ev;
        assert_int_equal(lw_codec_decode_event(codec, buf, n, &ev, es, sizeof es),
                         LW_ERR_UNKNOWN_SCHEMA);
        assert_non_null(strstr(es, "CreditInquiry"));
        /* a purpose past the enum (zigzag 5, after the three strings) is refused */
        size_t at = LW_SO_HEADER_LEN + 1 + 32 + 1 + 22 + 1 + strlen(iq.institution_id);
        assert_int_equal(buf[at], 2 * p);
        buf[at] = 2 * LW_PURPOSE__CNT;
        assert_int_not_equal(lw_codec_decode_inquiry(codec, buf, n, &back, es, sizeof es), LW_OK);
    }
    assert_int_equal(lw_purpose_parse("MARKETING"), -1);
    assert_int_equal(lw_purpose_parse(NULL), -1);
    assert_null(lw_purpose_name(LW_PURPOSE__CNT));
    /* truncated */
    lw_inquiry_t iq = {.purpose = LW_PURPOSE_LOAN_APPROVAL, .inquired_at = 1};
    strcpy(iq.borrower_id, "abcdefghijklmnopqrstu_");
    unsigned char buf[LW_CODEC_MAX_INQUIRY];
    size_t n;
    char es[256];
    assert_int_equal(lw_codec_encode_inquiry(codec, &iq, buf, sizeof buf, &n), LW_OK);
    for (size_t k = 0; k < n; k++)
        assert_int_not_equal(lw_codec_decode_inquiry(codec, buf, k, &iq, es, sizeof es), LW_OK);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(round_trip_every_type),
        cmocka_unit_test(extremes_round_trip),
        cmocka_unit_test(alert_round_trip),
        cmocka_unit_test(inquiry_round_trip),
        cmocka_unit_test(evolution_fixtures),
        cmocka_unit_test(encode_with_v1),
        cmocka_unit_test(header_errors),
        cmocka_unit_test(truncations_and_trailing),
        cmocka_unit_test(every_single_byte_mutation),
        cmocka_unit_test(bad_datums),
        cmocka_unit_test(bad_union_index),
        cmocka_unit_test(encode_rejects_bad_structs),
        cmocka_unit_test(fingerprint_matches_definition),
        cmocka_unit_test(canonical_forms),
        cmocka_unit_test(embedded_schemas),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
