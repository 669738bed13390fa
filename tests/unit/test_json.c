/*
 * test_json.c - the JSON form (common/src/json.c): every event type and an
 * alert both ways, exact output (keys in schema order, null optionals),
 * and each rejection naming its field: floats, exponents, int64 overflow,
 * unknown or repeated fields, missing fields, bad symbols, long strings,
 * national_id handling, escapes.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "loanwire/json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BASE                                                                                       \
    "\"event_id\":\"e1\",\"event_type\":\"%s\",\"platform_id\":\"p\",\"lender_id\":\"l\","         \
    "\"borrower_id\":\"abcdefghijklmnopqrstuv\",\"loan_id\":\"L1\",\"product\":\"REVOLVING\","     \
    "\"sequence\":7,\"occurred_at\":1700000000000,\"amount_fen\":100,\"outstanding_fen\":200,"     \
    "\"credit_limit_fen\":300,\"days_past_due\":4,\"past_due_fen\":5"

static const char *event_json(const char *type, const char *extra)
{
    static char buf[2048];
    char base[1024];
    snprintf(base, sizeof(base), BASE, type);
    snprintf(buf, sizeof(buf), "{%s%s}", base, extra);
    return buf;
}

static void every_type_both_ways(void **state)
{
    (void)state;
    for (int t = 0; t < LW_EVENT__CNT; t++) {
        const char *in = event_json(lw_event_type_name((lw_event_type_t)t),
                                    ",\"currency\":\"USD\",\"annual_income_fen\":null,"
                                    "\"term_months\":36");
        lw_event_t ev, again;
        lw_field_error_t fe;
        char raw[LW_ID_MAX + 1], out[2048], out2[2048];

        assert_int_equal(lw_event_from_json(in, strlen(in), &ev, raw, &fe), LW_OK);
        assert_int_equal(ev.event_type, t);
        assert_string_equal(raw, "");
        assert_int_equal(ev.sequence, 7);
        assert_true(ev.has_term_months);
        assert_false(ev.has_annual_income);
        int n = lw_event_to_json(&ev, out, sizeof(out));
        assert_int_equal(n, (int)strlen(out));
        assert_string_equal(out, in); /* keys in schema order, compact */
        assert_int_equal(lw_event_from_json(out, (size_t)n, &again, NULL, &fe), LW_OK);
        assert_int_equal(lw_event_to_json(&again, out2, sizeof(out2)), n);
        assert_string_equal(out, out2);
        assert_int_equal(lw_event_to_json(&ev, out, (size_t)n), -1); /* no room for the NUL */
    }
}

static void defaults_and_whitespace(void **state)
{
    (void)state;
    char in[2048];
    lw_event_t ev;
    lw_field_error_t fe;
    char base[1024];
    snprintf(base, sizeof(base), BASE, "DRAWDOWN");
    snprintf(in, sizeof(in), " \n{ %s }\r\n ", base);
    assert_int_equal(lw_event_from_json(in, strlen(in), &ev, NULL, &fe), LW_OK);
    assert_string_equal(ev.currency, "CNY");
    assert_false(ev.has_annual_income);
    assert_false(ev.has_term_months);
}

static void escapes(void **state)
{
    (void)state;
    const char *in = event_json("CLOSURE", ",\"currency\":\"\\u0043NY\"");
    lw_event_t ev;
    lw_field_error_t fe;
    char out[2048];
    assert_int_equal(lw_event_from_json(in, strlen(in), &ev, NULL, &fe), LW_OK);
    assert_string_equal(ev.currency, "CNY");
    /* a surrogate pair and a quote in an alert's reason round trip */
    const char *al_in =
        "{\"alert_id\":\"a\",\"borrower_id\":\"abcdefghijklmnopqrstuv\",\"rule_id\":\"r\","
        "\"rule_version\":1,\"severity\":\"WARNING\",\"reason\":\"x\\ud83d\\ude00\\\"\\n\\u4e2d\","
        "\"total_outstanding_fen\":1,\"active_lenders\":2,\"active_loans\":3,\"window_count\":0,"
        "\"window_ms\":0,\"annual_income_fen\":5,\"limit\":9,\"trigger_event_id\":\"e\","
        "\"trigger_platform_id\":\"p\",\"trigger_lender_id\":\"l\",\"raised_at\":1}";
    lw_alert_t al;
    assert_int_equal(lw_alert_from_json(al_in, strlen(al_in), &al, &fe), LW_OK);
    assert_string_equal(al.reason, "x\xf0\x9f\x98\x80\"\n\xe4\xb8\xad");
    assert_int_equal(al.severity, LW_SEVERITY_WARNING);
    assert_true(al.has_annual_income);
    assert_true(lw_alert_to_json(&al, out, sizeof(out)) > 0);
    assert_non_null(strstr(out, "\"reason\":\"x\xf0\x9f\x98\x80\\\"\\n\xe4\xb8\xad\""));
    lw_alert_t al2;
    assert_int_equal(lw_alert_from_json(out, strlen(out), &al2, &fe), LW_OK);
    assert_memory_equal(&al, &al2, sizeof(al));
}

static void expect_error(const char *in, const char *field, const char *reason_part)
{
    lw_event_t ev;
    lw_field_error_t fe;
    char raw[LW_ID_MAX + 1];
    lw_err_t err = lw_event_from_json(in, strlen(in), &ev, raw, &fe);
    if (err == LW_OK || strcmp(fe.field, field) || !strstr(fe.reason, reason_part))
        print_error("input %s\n  got err %d field '%s' reason '%s'\n", in, err, fe.field,
                    fe.reason);
    assert_int_not_equal(err, LW_OK);
    assert_string_equal(fe.field, field);
    assert_non_null(strstr(fe.reason, reason_part));
}

static void rejections(void **state)
{
    (void)state;
    char in[2048], base[1024];
    snprintf(base, sizeof(base), BASE, "REPAYMENT");

#define WITH(extra) (snprintf(in, sizeof(in), "{%s%s}", base, extra), in)
    expect_error(WITH(",\"annual_income_fen\":1.5"), "annual_income_fen", "integer");
    expect_error(WITH(",\"annual_income_fen\":1e3"), "annual_income_fen", "integer");
    expect_error(WITH(",\"annual_income_fen\":1E3"), "annual_income_fen", "integer");
    expect_error(WITH(",\"annual_income_fen\":9223372036854775808"), "annual_income_fen", "64-bit");
    expect_error(WITH(",\"annual_income_fen\":-9223372036854775809"), "annual_income_fen",
                 "64-bit");
    expect_error(WITH(",\"annual_income_fen\":\"12\""), "annual_income_fen", "integer");
    expect_error(WITH(",\"annual_income_fen\":true"), "annual_income_fen", "integer");
    expect_error(WITH(",\"annual_income_fen\":012"), "annual_income_fen", "leading zeros");
    expect_error(WITH(",\"term_months\":2147483648"), "term_months", "out of range");
    expect_error(WITH(",\"colour\":1"), "colour", "unknown field");
    expect_error(WITH(",\"sequence\":8"), "sequence", "twice");
    expect_error(WITH(",\"currency\":null"), "currency", "string");
    expect_error(WITH(",\"currency\":\"DOLLARS\""), "currency", "longer than 3");
    expect_error(WITH(",\"national_id\":\"110101199003074578\""), "national_id", "not both");
    expect_error(WITH("}"), "", "trailing");
    expect_error(WITH(" x"), "past_due_fen", "after the value");
    expect_error("[1]", "", "object");
    expect_error("", "", "object");
    expect_error("{\"event_id\":\"e1\"", "event_id", "expected ','");
    expect_error("{\"event_id\":\"e1\"}", "event_type", "missing");
    expect_error("{\"event_id\":\"e\\u0000\"}", "event_id", "NUL");
    expect_error("{\"event_id\":\"e\\ud800\"}", "event_id", "surrogate");
    expect_error("{\"event_id\":\"e\x01\"}", "event_id", "control");
    expect_error("{\"event_id\":\"\xc3\x28\"}", "event_id", "UTF-8");
    expect_error("{\"event_type\":\"LOAN\"}", "event_type", "unknown symbol");
    expect_error("{\"event_id\":\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
                 "x\"}",
                 "event_id", "longer than 64");
#undef WITH
}

static void national_id(void **state)
{
    (void)state;
    const char *in =
        "{\"event_id\":\"e1\",\"event_type\":\"APPLICATION\",\"platform_id\":\"p\","
        "\"lender_id\":\"l\",\"national_id\":\"11010519491231002X\",\"loan_id\":\"A1\","
        "\"product\":\"OTHER\",\"sequence\":1,\"occurred_at\":1700000000000,\"amount_fen\":100,"
        "\"outstanding_fen\":0,\"credit_limit_fen\":0,\"days_past_due\":0,\"past_due_fen\":0}";
    lw_event_t ev;
    lw_field_error_t fe;
    char raw[LW_ID_MAX + 1];
    assert_int_equal(lw_event_from_json(in, strlen(in), &ev, raw, &fe), LW_OK);
    assert_string_equal(raw, "11010519491231002X");
    assert_string_equal(ev.borrower_id, "");
    /* without a place to put it, the raw id is refused */
    assert_int_not_equal(lw_event_from_json(in, strlen(in), &ev, NULL, &fe), LW_OK);
    assert_string_equal(fe.field, "national_id");
    /* neither id */
    const char *none = "{\"event_id\":\"e1\",\"event_type\":\"APPLICATION\",\"platform_id\":\"p\","
                       "\"lender_id\":\"l\",\"loan_id\":\"A1\",\"product\":\"OTHER\","
                       "\"sequence\":1,\"occurred_at\":1,\"amount_fen\":1,\"outstanding_fen\":0,"
                       "\"credit_limit_fen\":0,\"days_past_due\":0,\"past_due_fen\":0}";
    assert_int_not_equal(lw_event_from_json(none, strlen(none), &ev, raw, &fe), LW_OK);
    assert_string_equal(fe.field, "borrower_id");
}

static void alert_requires_fields(void **state)
{
    (void)state;
    lw_alert_t al;
    lw_field_error_t fe;
    const char *in = "{\"alert_id\":\"a\",\"national_id\":\"x\"}";
    assert_int_not_equal(lw_alert_from_json(in, strlen(in), &al, &fe), LW_OK);
    assert_string_equal(fe.field, "national_id");
    in = "{\"alert_id\":\"a\"}";
    assert_int_not_equal(lw_alert_from_json(in, strlen(in), &al, &fe), LW_OK);
    assert_string_equal(fe.field, "borrower_id");
    assert_non_null(strstr(fe.reason, "missing"));
}

/* Keys are compared in place a word at a time (json.c match_key): every
 * prefix of a line, in a buffer of exactly its size (ASan sees any read past
 * it), is refused, the whole line is read; a key off by one byte anywhere, or
 * cut short, or longer, is an unknown field named as written. */
static void keys_in_place(void **state)
{
    const char *in = event_json("DRAWDOWN", ",\"currency\":\"CNY\",\"annual_income_fen\":7,"
                                            "\"term_months\":null");
    size_t len = strlen(in);
    lw_event_t ev;
    lw_field_error_t fe;
    (void)state;
    for (size_t n = 0; n <= len; n++) {
        char *copy = malloc(n ? n : 1);
        assert_non_null(copy);
        memcpy(copy, in, n);
        lw_err_t err = lw_event_from_json(copy, n, &ev, NULL, &fe);
        if (n == len)
            assert_int_equal(err, LW_OK);
        else
            assert_int_not_equal(err, LW_OK);
        free(copy);
    }
    assert_int_equal(ev.annual_income_fen, 7);
    assert_false(ev.has_term_months);

    static const char *const keys[] = {"event_id", "credit_limit_fen", "annual_income_fen"};
    for (size_t k = 0; k < sizeof keys / sizeof *keys; k++) {
        size_t kl = strlen(keys[k]);
        char line[2048], key[64];
        const char *at = strstr(in, keys[k]);
        assert_non_null(at);
        for (size_t i = 0; i <= kl + 1; i++) {
            /* i < kl: byte i changed; kl: one byte more; kl + 1: last byte cut */
            memcpy(key, keys[k], kl + 1);
            if (i < kl)
                key[i] = key[i] == 'x' ? 'y' : 'x';
            else if (i == kl)
                memcpy(key + kl, "x", 2);
            else
                key[kl - 1] = '\0';
            snprintf(line, sizeof line, "%.*s%s%s", (int)(at - in), in, key, at + kl);
            assert_int_equal(lw_event_from_json(line, strlen(line), &ev, NULL, &fe),
                             LW_ERR_VALIDATION);
            assert_string_equal(fe.field, key);
            assert_string_equal(fe.reason, "unknown field");
        }
    }
}

/* The fast lane (a compact line, every field in schema order) must accept,
 * refuse and explain exactly as the general reader does. A line with one
 * trailing space never completes the lane, so it is read by the general
 * reader alone: every one-byte change and every one-byte deletion of a
 * canonical line is parsed both ways and compared (result, field, reason). */
static void fast_lane_same_as_general(void **state)
{
    static const char repl[] = {' ', '"',  ',', ':', '{', '}',  '0',    '9',   'x',
                                'A', '\\', '.', '-', 'n', '\n', '\x01', '\xc3'};
    const char *canon[] = {
        event_json("DRAWDOWN", ",\"currency\":\"CNY\",\"annual_income_fen\":7,"
                               "\"term_months\":null"),
        NULL,
    };
    char first[2048];
    (void)state;
    snprintf(first, sizeof first, "%s", canon[0]);
    canon[0] = first;
    canon[1] = event_json("REPAYMENT", ",\"currency\":\"USD\",\"annual_income_fen\":null,"
                                       "\"term_months\":360");
    for (int c = 0; c < 2; c++) {
        size_t len = strlen(canon[c]);
        for (size_t k = 0; k < len; k++) {
            for (size_t r = 0; r <= sizeof repl; r++) {
                char m[2048], m2[2048];
                size_t n;
                if (r < sizeof repl) { /* byte k replaced */
                    memcpy(m, canon[c], len);
                    m[k] = repl[r];
                    n = len;
                } else { /* byte k deleted */
                    memcpy(m, canon[c], k);
                    memcpy(m + k, canon[c] + k + 1, len - k - 1);
                    n = len - 1;
                }
                memcpy(m2, m, n);
                m2[n] = ' ';
                lw_event_t e1, e2;
                lw_field_error_t f1, f2;
                char raw1[LW_ID_MAX + 1], raw2[LW_ID_MAX + 1];
                lw_err_t r1 = lw_event_from_json(m, n, &e1, raw1, &f1);
                lw_err_t r2 = lw_event_from_json(m2, n + 1, &e2, raw2, &f2);
                /* The one place the space shows: a field name expected at the
                 * end of the input is expected one byte later. */
                char at_end[80];
                snprintf(at_end, sizeof at_end, "expected a field name at offset %zu", n + 1);
                if (!strcmp(f2.reason, at_end))
                    snprintf(f2.reason, sizeof f2.reason, "expected a field name at offset %zu", n);
                if (r1 != r2 || strcmp(f1.field, f2.field) || strcmp(f1.reason, f2.reason))
                    print_error("line %d byte %zu repl %zu: %d %s: %s vs %d %s: %s\n", c, k, r, r1,
                                f1.field, f1.reason, r2, f2.field, f2.reason);
                assert_int_equal(r1, r2);
                assert_string_equal(f1.field, f2.field);
                assert_string_equal(f1.reason, f2.reason);
                if (r1 == LW_OK) {
                    assert_memory_equal(&e1, &e2, sizeof e1);
                    assert_string_equal(raw1, raw2);
                }
            }
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(every_type_both_ways),
        cmocka_unit_test(defaults_and_whitespace),
        cmocka_unit_test(escapes),
        cmocka_unit_test(rejections),
        cmocka_unit_test(national_id),
        cmocka_unit_test(alert_requires_fields),
        cmocka_unit_test(keys_in_place),
        cmocka_unit_test(fast_lane_same_as_general),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
