/*
 * test_rules.c - the rule pack: defaults, the rules file format and its
 * errors (file:line: reason), the shipped rules.default, and the script the
 * pack compiles into.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "loanwire/exposure.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void test_defaults(void **state)
{
    lw_rules_t *rs = lw_rules_default();
    assert_int_equal(lw_rules_count(rs), 5);
    const lw_rule_t *r = lw_rules_find(rs, "income_cap");
    assert_non_null(r);
    assert_int_equal(r->kind, LW_RULE_INCOME_CAP);
    assert_int_equal(r->cap_fen, 30000000);
    assert_int_equal(r->income_divisor, 3);
    r = lw_rules_find(rs, "multi_lender");
    assert_int_equal(r->min_count, 4);
    r = lw_rules_find(rs, "stacking");
    assert_int_equal(r->min_count, 5);
    assert_int_equal(r->window_ms, 7LL * 86400000);
    r = lw_rules_find(rs, "borrow_while_delinquent");
    assert_int_equal(r->kind, LW_RULE_BORROW_DELINQUENT);
    assert_int_equal(r->severity, LW_SEVERITY_CRITICAL);
    r = lw_rules_find(rs, "inquiry_spree");
    assert_non_null(r);
    assert_int_equal(r->kind, LW_RULE_INQUIRY_SPREE);
    assert_int_equal(r->severity, LW_SEVERITY_WARNING);
    assert_int_equal(r->min_count, 6);
    assert_int_equal(r->window_ms, 30LL * 86400000);
    assert_int_equal(lw_rules_inquiry_keep_ms(rs), 90LL * 86400000);
    assert_int_equal(lw_rules_max_inquiries(rs), LW_MAX_INQUIRIES_DEFAULT);
    assert_null(lw_rules_get(rs, 5));
    lw_rules_destroy(rs);
    lw_rules_destroy(NULL);
}

static void test_parse(void **state)
{
    char es[256];
    lw_rules_t *rs = lw_rules_parse("# comment\n\n"
                                    "income_cap 2 WARNING cap_fen=100 income_divisor=4 # tail\n"
                                    "stack_1h 3 INFO kind=stacking window=90m min_lenders=2\n"
                                    "stack_ms 1 INFO kind=stacking window=1500\n",
                                    "t", es, sizeof es);
    assert_non_null(rs);
    assert_int_equal(lw_rules_count(rs), 3);
    const lw_rule_t *r = lw_rules_get(rs, 0);
    assert_string_equal(r->id, "income_cap");
    assert_int_equal(r->version, 2);
    assert_int_equal(r->severity, LW_SEVERITY_WARNING);
    assert_int_equal(r->cap_fen, 100);
    assert_int_equal(r->income_divisor, 4);
    r = lw_rules_find(rs, "stack_1h");
    assert_int_equal(r->kind, LW_RULE_STACKING);
    assert_int_equal(r->window_ms, 90LL * 60000);
    assert_int_equal(r->min_count, 2);
    assert_int_equal(lw_rules_find(rs, "stack_ms")->window_ms, 1500);
    lw_rules_destroy(rs);
}

static void expect_error(const char *text, const char *want)
{
    char es[256] = "";
    lw_rules_t *rs = lw_rules_parse(text, "f.rules", es, sizeof es);
    if (rs)
        fail_msg("accepted: %s", text);
    if (!strstr(es, want))
        fail_msg("error '%s' lacks '%s'", es, want);
}

static void test_errors(void **state)
{
    expect_error("income_cap 1\n", "f.rules:1: expected");
    expect_error("\nincome_cap x CRITICAL\n", "f.rules:2: version 'x'");
    expect_error("income_cap 1 LOUD\n", "severity 'LOUD'");
    expect_error("Bad-Id 1 INFO kind=stacking\n", "rule id 'Bad-Id'");
    expect_error("foo 1 INFO\n", "names no kind");
    expect_error("foo 1 INFO kind=nope\n", "kind 'nope'");
    expect_error("stacking 1 INFO window=91d\n", "window '91d'");
    expect_error("stacking 1 INFO window=0\n", "window '0'");
    expect_error("stacking 1 INFO window=7w\n", "window '7w'");
    expect_error("multi_lender 1 INFO min_lenders=0\n", "min_lenders '0'");
    expect_error("multi_lender 1 INFO cap_fen=5\n", "unknown parameter 'cap_fen'");
    expect_error("income_cap 1 INFO cap_fen=-5\n", "cap_fen '-5'");
    expect_error("income_cap 1 INFO cap_fen=99999999999999999999\n", "cap_fen");
    expect_error("income_cap 1 INFO\nincome_cap 2 INFO\n",
                 "f.rules:2: rule id 'income_cap' defined twice");
    expect_error("income_cap 1 INFO novalue\n", "expected key=value");
    expect_error("inquiry_spree 1 INFO min_lenders=3\n", "unknown parameter 'min_lenders'");
    expect_error("inquiry_spree 1 INFO min_institutions=0\n", "min_institutions '0'");
    expect_error("inquiry_spree 1 INFO window=91d\n", "window '91d'");
}

/* Issue 20 item 3: windows from 1h to 90d, several of one kind at once
 * (separate ids with kind=), and entries kept only as long as the longest
 * window needs, at least the 30 days readers report. */
static void test_windows_90d(void **state)
{
    char es[256];
    lw_rules_t *d = lw_rules_default();
    assert_int_equal(lw_rules_keep_ms(d), 30LL * 86400000);
    lw_rules_destroy(d);
    lw_rules_t *rs = lw_rules_parse("stack_1h 1 INFO kind=stacking window=1h min_lenders=2\n"
                                    "stack_24h 1 INFO kind=stacking window=24h min_lenders=3\n"
                                    "stack_7d 1 INFO kind=stacking window=7d\n"
                                    "stack_90d 1 WARNING kind=stacking window=90d min_lenders=9\n",
                                    "t", es, sizeof es);
    if (!rs)
        fail_msg("%s", es);
    assert_int_equal(lw_rules_count(rs), 4);
    assert_int_equal(lw_rules_find(rs, "stack_1h")->window_ms, 3600000);
    assert_int_equal(lw_rules_find(rs, "stack_24h")->window_ms, 86400000);
    assert_int_equal(lw_rules_find(rs, "stack_90d")->window_ms, 90LL * 86400000);
    assert_int_equal(lw_rules_find(rs, "stack_90d")->min_count, 9);
    assert_int_equal(lw_rules_keep_ms(rs), 90LL * 86400000);
    lw_rules_destroy(rs);
    /* short windows only: still the 30 days the readers report */
    rs = lw_rules_parse("stack_1h 1 INFO kind=stacking window=1h\n", "t", es, sizeof es);
    assert_non_null(rs);
    assert_int_equal(lw_rules_keep_ms(rs), 30LL * 86400000);
    lw_rules_destroy(rs);
    /* inquiry_spree: its own parameters; a window past 90 days keeps inquiries longer */
    rs = lw_rules_parse("spree_7d 2 CRITICAL kind=inquiry_spree min_institutions=3 window=7d\n"
                        "inquiry_spree 1 WARNING window=90d\n",
                        "t", es, sizeof es);
    if (!rs)
        fail_msg("%s", es);
    assert_int_equal(lw_rules_find(rs, "spree_7d")->kind, LW_RULE_INQUIRY_SPREE);
    assert_int_equal(lw_rules_find(rs, "spree_7d")->min_count, 3);
    assert_int_equal(lw_rules_find(rs, "spree_7d")->window_ms, 7LL * 86400000);
    assert_int_equal(lw_rules_find(rs, "inquiry_spree")->min_count, 6);
    assert_int_equal(lw_rules_inquiry_keep_ms(rs), 90LL * 86400000);
    assert_int_equal(lw_rules_keep_ms(rs), 30LL * 86400000); /* not a stacking window */
    lw_rules_destroy(rs);
    rs = lw_rules_parse("s45 1 INFO kind=stacking window=45d\n", "t", es, sizeof es);
    assert_non_null(rs);
    assert_int_equal(lw_rules_keep_ms(rs), 45LL * 86400000);
    lw_rules_destroy(rs);
}

static void test_default_file(void **state)
{
    char path[1024], es[256];
    const char *src = getenv("LW_SOURCE_DIR");
    snprintf(path, sizeof path, "%s/consumers/exposure/rules.default", src ? src : ".");
    lw_rules_t *f = lw_rules_load_file(path, es, sizeof es);
    if (!f)
        fail_msg("%s", es);
    lw_rules_t *d = lw_rules_default();
    assert_int_equal(lw_rules_count(f), lw_rules_count(d));
    for (size_t i = 0; i < lw_rules_count(d); i++)
        assert_memory_equal(lw_rules_get(f, i), lw_rules_get(d, i), sizeof(lw_rule_t));
    lw_rules_destroy(f);
    lw_rules_destroy(d);
    assert_null(lw_rules_load_file("/nonexistent/rules", es, sizeof es));
    assert_non_null(strstr(es, "/nonexistent/rules"));
}

static void test_script_has_options(void **state)
{
    lw_script_opts_t o;
    lw_script_opts_init(&o);
    o.stream_maxlen = 1234;
    char *s = lw_script_build(&o);
    assert_non_null(s);
    assert_non_null(strstr(s, "local MAXLEN = 1234"));
    assert_non_null(strstr(s, "local STREAM = true"));
    assert_non_null(strstr(s, "redis.call('MSET', unpack(kv))"));
    free(s);
    o.alert_stream = false;
    s = lw_script_build(&o);
    assert_non_null(strstr(s, "local STREAM = false"));
    free(s);
    char key[LW_STATE_KEY_MAX];
    lw_state_key("AAAAAAAAAAAAAAAAAAAAAA", key, sizeof key);
    assert_string_equal(key, "b:{AAAAAAAAAAAAAAAAAAAAAA}");
    lw_alerts_key("AAAAAAAAAAAAAAAAAAAAAA", key, sizeof key);
    assert_string_equal(key, "a:{AAAAAAAAAAAAAAAAAAAAAA}");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),     cmocka_unit_test(test_parse),
        cmocka_unit_test(test_errors),       cmocka_unit_test(test_windows_90d),
        cmocka_unit_test(test_default_file), cmocka_unit_test(test_script_has_options),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
