/*
 * test_alerts.c - loanwire-alerts without servers: the filters (comma lists,
 * OR within a field, AND across fields, minimum vs exact severity), the set
 * that drops repeated alert_ids (including eviction when full) and the
 * terminal line.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "loanwire/alerts.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static lw_alert_t mk(const char *id, const char *rule, lw_severity_t sev, const char *plat,
                     const char *lender, const char *bid)
{
    lw_alert_t a;
    memset(&a, 0, sizeof a);
    snprintf(a.alert_id, sizeof a.alert_id, "%s", id);
    snprintf(a.rule_id, sizeof a.rule_id, "%s", rule);
    a.severity = sev;
    snprintf(a.trigger_platform_id, sizeof a.trigger_platform_id, "%s", plat);
    snprintf(a.trigger_lender_id, sizeof a.trigger_lender_id, "%s", lender);
    snprintf(a.borrower_id, sizeof a.borrower_id, "%s", bid);
    return a;
}

#define B1 "AAAAAAAAAAAAAAAAAAAAAA"
#define B2 "BBBBBBBBBBBBBBBBBBBBBB"

static void test_filter_fields(void **state)
{
    lw_alerts_filter_t *f = lw_alerts_filter_new();
    char err[256];
    lw_alert_t a = mk("1", "balance_cap", LW_SEVERITY_CRITICAL, "ant", "bank1", B1);
    lw_alert_t b = mk("2", "stacking_7d", LW_SEVERITY_WARNING, "jd", "bank2", B2);
    lw_alert_t c = mk("3", "delinquent_borrowing", LW_SEVERITY_INFO, "webank", "bank1", B1);

    /* No filter: everything. */
    assert_true(lw_alerts_filter_match(f, &a));
    assert_true(lw_alerts_filter_match(NULL, &a));

    assert_int_equal(lw_alerts_filter_add(f, LW_ALERTS_F_RULE, "balance_cap", err, sizeof err),
                     LW_OK);
    assert_true(lw_alerts_filter_match(f, &a));
    assert_false(lw_alerts_filter_match(f, &b));
    /* A second --rule and a comma list add alternatives. */
    assert_int_equal(
        lw_alerts_filter_add(f, LW_ALERTS_F_RULE, "stacking_7d, other", err, sizeof err), LW_OK);
    assert_true(lw_alerts_filter_match(f, &b));
    assert_false(lw_alerts_filter_match(f, &c));
    /* Different fields must all match. */
    assert_int_equal(lw_alerts_filter_add(f, LW_ALERTS_F_LENDER, "bank1", err, sizeof err), LW_OK);
    assert_true(lw_alerts_filter_match(f, &a));
    assert_false(lw_alerts_filter_match(f, &b));
    assert_int_equal(lw_alerts_filter_add(f, LW_ALERTS_F_PLATFORM, "jd,webank", err, sizeof err),
                     LW_OK);
    assert_false(lw_alerts_filter_match(f, &a));
    lw_alerts_filter_destroy(f);

    f = lw_alerts_filter_new();
    assert_int_equal(lw_alerts_filter_add(f, LW_ALERTS_F_BORROWER, B2, err, sizeof err), LW_OK);
    assert_false(lw_alerts_filter_match(f, &a));
    assert_true(lw_alerts_filter_match(f, &b));
    /* Bad values: empty items, too long. */
    assert_int_equal(lw_alerts_filter_add(f, LW_ALERTS_F_RULE, "a,,b", err, sizeof err),
                     LW_ERR_INVALID_ARG);
    assert_non_null(strstr(err, "--rule"));
    assert_int_equal(lw_alerts_filter_add(f, LW_ALERTS_F_RULE, "", err, sizeof err),
                     LW_ERR_INVALID_ARG);
    assert_int_equal(lw_alerts_filter_add(f, LW_ALERTS_F_BORROWER, B1 "X", err, sizeof err),
                     LW_ERR_INVALID_ARG);
    lw_alerts_filter_destroy(f);
    lw_alerts_filter_destroy(NULL);
}

static void test_filter_severity(void **state)
{
    lw_alerts_filter_t *f = lw_alerts_filter_new();
    char err[256];
    lw_alert_t info = mk("1", "r", LW_SEVERITY_INFO, "p", "l", B1);
    lw_alert_t warn = mk("2", "r", LW_SEVERITY_WARNING, "p", "l", B1);
    lw_alert_t crit = mk("3", "r", LW_SEVERITY_CRITICAL, "p", "l", B1);

    assert_int_equal(lw_alerts_filter_severity(f, "warning", err, sizeof err), LW_OK);
    assert_false(lw_alerts_filter_match(f, &info));
    assert_true(lw_alerts_filter_match(f, &warn));
    assert_true(lw_alerts_filter_match(f, &crit));
    assert_int_equal(lw_alerts_filter_severity(f, "=WARNING", err, sizeof err), LW_OK);
    assert_false(lw_alerts_filter_match(f, &info));
    assert_true(lw_alerts_filter_match(f, &warn));
    assert_false(lw_alerts_filter_match(f, &crit));
    assert_int_equal(lw_alerts_filter_severity(f, "CRITICAL", err, sizeof err), LW_OK);
    assert_false(lw_alerts_filter_match(f, &warn));
    assert_true(lw_alerts_filter_match(f, &crit));
    assert_int_equal(lw_alerts_filter_severity(f, "LOUD", err, sizeof err), LW_ERR_INVALID_ARG);
    assert_non_null(strstr(err, "--severity"));
    assert_int_equal(lw_alerts_filter_severity(f, "=", err, sizeof err), LW_ERR_INVALID_ARG);
    lw_alerts_filter_destroy(f);
}

static void test_seen(void **state)
{
    lw_alerts_seen_t *s = lw_alerts_seen_new(3);
    char id[16];

    assert_true(lw_alerts_seen_add(s, "a"));
    assert_false(lw_alerts_seen_add(s, "a"));
    assert_true(lw_alerts_seen_add(s, "b"));
    assert_true(lw_alerts_seen_add(s, "c"));
    assert_false(lw_alerts_seen_add(s, "b"));
    /* Full: "d" evicts the oldest ("a"), which then counts as new again. */
    assert_true(lw_alerts_seen_add(s, "d"));
    assert_false(lw_alerts_seen_add(s, "c"));
    assert_false(lw_alerts_seen_add(s, "d"));
    assert_true(lw_alerts_seen_add(s, "a"));
    lw_alerts_seen_destroy(s);

    /* Many ids through a small set: the last `cap` are always remembered. */
    s = lw_alerts_seen_new(50);
    for (int i = 0; i < 2000; i++) {
        snprintf(id, sizeof id, "id%d", i);
        assert_true(lw_alerts_seen_add(s, id));
        for (int j = i; j > i - 50 && j >= 0; j -= 7) {
            snprintf(id, sizeof id, "id%d", j);
            assert_false(lw_alerts_seen_add(s, id));
        }
    }
    lw_alerts_seen_destroy(s);
    lw_alerts_seen_destroy(NULL);
}

static void test_format(void **state)
{
    char buf[512];
    lw_alert_t a = mk("x", "balance_cap", LW_SEVERITY_CRITICAL, "ant", "bank1", B1);

    lw_fen_format(0, buf, sizeof buf);
    assert_string_equal(buf, "0.00");
    lw_fen_format(5, buf, sizeof buf);
    assert_string_equal(buf, "0.05");
    lw_fen_format(123456789, buf, sizeof buf);
    assert_string_equal(buf, "1,234,567.89");
    lw_fen_format(-100000, buf, sizeof buf);
    assert_string_equal(buf, "-1,000.00");
    lw_fen_format(INT64_MIN, buf, sizeof buf);
    assert_string_equal(buf, "-92,233,720,368,547,758.08");

    a.raised_at = 1700000000123LL; /* 2023-11-14 22:13:20 UTC */
    a.total_outstanding_fen = 31000000;
    a.active_loans = 4;
    a.active_lenders = 3;
    a.window_count = 5;
    a.window_ms = 7LL * 24 * 3600 * 1000;
    snprintf(a.reason, sizeof a.reason, "over the cap\nnext line");
    assert_true(lw_alert_format_line(&a, buf, sizeof buf) > 0);
    assert_non_null(strstr(buf, "2023-11-14 22:13:20Z"));
    assert_non_null(strstr(buf, "CRITICAL"));
    assert_non_null(strstr(buf, "balance_cap"));
    assert_non_null(strstr(buf, B1));
    assert_non_null(strstr(buf, "310,000.00 CNY"));
    assert_non_null(strstr(buf, "5 in 7d"));
    assert_null(strchr(buf, '\n'));
    assert_non_null(strstr(buf, "over the cap\\x0anext line"));
    /* Truncation keeps a terminated string. */
    assert_int_equal(lw_alert_format_line(&a, buf, 10), 9);
    assert_int_equal(strlen(buf), 9);
}

/* Issue 21 item 8: an alert's strings come from the wire; none of them may
 * put a control sequence on the reader's terminal. */
static void test_format_escapes_controls(void **state)
{
    char buf[2048], esc[64];
    lw_alert_t a = mk("x", "balance_cap", LW_SEVERITY_CRITICAL, "ant", "bank1", B1);

    (void)state;
    snprintf(a.rule_id, sizeof a.rule_id, "\x1b[2Jcap\x07");
    snprintf(a.borrower_id, sizeof a.borrower_id,
             "B\x1b]0;owned\x07\x9b"
             "1m");
    snprintf(a.reason, sizeof a.reason,
             "r\x1b[31m \xc2\x9b"
             "2J \x7f \\x1b \xe4\xb8\xad");
    assert_true(lw_alert_format_line(&a, buf, sizeof buf) > 0);
    for (const unsigned char *c = (const unsigned char *)buf; *c; c++)
        if (*c < 0x20 || *c == 0x7f || *c == 0x9b)
            fail_msg("control byte 0x%02x in the text line: %s", *c, buf);
    assert_null(strstr(buf, "\xc2\x9b"));
    assert_non_null(strstr(buf, "\\x1b[2Jcap\\x07"));
    assert_non_null(strstr(buf, "B\\x1b]0;owned\\x07\\x9b1m"));
    assert_non_null(strstr(buf, "r\\x1b[31m \\u009b2J \\x7f \\\\x1b \xe4\xb8\xad"));

    /* The escaper alone: plain text unchanged, never half an escape. */
    assert_int_equal(lw_alerts_text_escape("stacking", esc, sizeof esc), 8);
    assert_string_equal(esc, "stacking");
    assert_int_equal(lw_alerts_text_escape("ab\x1b", esc, 5), 2);
    assert_string_equal(esc, "ab");
    assert_int_equal(lw_alerts_text_escape("\xe4\xb8\xad", esc, 3), 0);      /* no half character */
    assert_int_equal(lw_alerts_text_escape("\xe4\xb8", esc, sizeof esc), 8); /* cut: bytes */
    assert_string_equal(esc, "\\xe4\\xb8");
    assert_int_equal(lw_alerts_text_escape("\xed\xa0\x80", esc, sizeof esc), 12); /* surrogate */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_filter_fields),
        cmocka_unit_test(test_filter_severity),
        cmocka_unit_test(test_seen),
        cmocka_unit_test(test_format),
        cmocka_unit_test(test_format_escapes_controls),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
