/*
 * test_prom.c - Prometheus text rendering (common/src/prom.c): HELP/TYPE
 * headers, label escaping (\\, \", newline), HELP escaping, integer and
 * floating samples (NaN, infinities), and growth across many lines.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "loanwire/prom.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static char *text(lw_sbuf_t *b)
{
    assert_true(lw_sbuf_reserve(b, 1));
    b->p[b->len] = '\0';
    return b->p;
}

static void test_family_and_samples(void **state)
{
    lw_sbuf_t b = {0};
    const char *l[] = {"topic", "a\"b\\c\nd", "partition", "3", NULL};
    (void)state;
    assert_true(lw_prom_family(&b, "x_total", "counter", "Help with \\ and\nnewline and \"q\"."));
    assert_true(lw_prom_u64(&b, "x_total", NULL, UINT64_MAX));
    assert_true(lw_prom_i64(&b, "x_total", l, -5));
    assert_string_equal(text(&b), "# HELP x_total Help with \\\\ and\\nnewline and \"q\".\n"
                                  "# TYPE x_total counter\n"
                                  "x_total 18446744073709551615\n"
                                  "x_total{topic=\"a\\\"b\\\\c\\nd\",partition=\"3\"} -5\n");
    lw_sbuf_free(&b);
}

static void test_doubles(void **state)
{
    lw_sbuf_t b = {0};
    (void)state;
    assert_true(lw_prom_double(&b, "g", NULL, 0.25));
    assert_true(lw_prom_double(&b, "g", NULL, NAN));
    assert_true(lw_prom_double(&b, "g", NULL, INFINITY));
    assert_true(lw_prom_double(&b, "g", NULL, -INFINITY));
    assert_true(lw_prom_double(&b, "g", NULL, 0));
    assert_string_equal(text(&b), "g 0.25\ng NaN\ng +Inf\ng -Inf\ng 0\n");
    lw_sbuf_free(&b);
}

static void test_grows(void **state)
{
    lw_sbuf_t b = {0};
    (void)state;
    for (int i = 0; i < 5000; i++) {
        char p[16];
        snprintf(p, sizeof p, "%d", i);
        const char *l[] = {"partition", p, NULL};
        assert_true(lw_prom_i64(&b, "lag", l, i));
    }
    char *t = text(&b);
    assert_int_equal(strncmp(t, "lag{partition=\"0\"} 0\n", 21), 0);
    assert_non_null(strstr(t, "\nlag{partition=\"4999\"} 4999\n"));
    lw_sbuf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_family_and_samples),
        cmocka_unit_test(test_doubles),
        cmocka_unit_test(test_grows),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
