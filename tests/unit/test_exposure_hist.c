/*
 * test_exposure_hist.c - the latency histogram (loanwire/latency.h):
 * exact below 256, < 1 % relative error above, percentiles by rank,
 * max exact, JSON shape. Expected values are computed here from the data.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "loanwire/latency.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void test_empty(void **state)
{
    lw_hist_t *h = lw_hist_new();
    assert_non_null(h);
    assert_int_equal(lw_hist_count(h), 0);
    assert_int_equal(lw_hist_percentile(h, 99), 0);
    char buf[200];
    assert_true(lw_hist_json(h, buf, sizeof buf) > 0);
    assert_string_equal(buf, "{\"count\":0,\"p50_us\":0,\"p99_us\":0,\"p999_us\":0,\"max_us\":0}");
    lw_hist_destroy(h);
    lw_hist_destroy(NULL);
}

static void test_small_exact(void **state)
{
    lw_hist_t *h = lw_hist_new();
    for (int v = 1; v <= 200; v++) /* 1..200: p50 = 100, p99 = 198, p99.9 = 200 */
        lw_hist_record(h, v);
    lw_hist_record(h, -5); /* counts as 0 */
    assert_int_equal(lw_hist_count(h), 201);
    /* 201 values 0..200: rank ceil(0.5*201) = 101 -> value 100 */
    assert_int_equal(lw_hist_percentile(h, 50), 100);
    /* rank ceil(0.99*201) = 199 -> value 198 */
    assert_int_equal(lw_hist_percentile(h, 99), 198);
    assert_int_equal(lw_hist_percentile(h, 100), 200);
    assert_int_equal(lw_hist_max(h), 200);
    lw_hist_destroy(h);
}

static int cmp(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static void test_wide_range_precision(void **state)
{
    enum { N = 100000 };
    int64_t *v = malloc(N * sizeof *v);
    lw_hist_t *h = lw_hist_new();
    uint64_t x = 88172645463325252ULL;
    for (int i = 0; i < N; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17; /* xorshift: values over 1 .. ~10^9 */
        v[i] = (int64_t)(1 + (x % 1000) * (x % 1000) * (int64_t)((x >> 20) % 1000));
        lw_hist_record(h, v[i]);
    }
    qsort(v, N, sizeof *v, cmp);
    const double qs[] = {1, 10, 50, 90, 99, 99.9, 99.99};
    for (size_t k = 0; k < sizeof qs / sizeof qs[0]; k++) {
        size_t rank = (size_t)(qs[k] / 100.0 * N + 0.999999);
        int64_t want = v[rank - 1];
        int64_t got = lw_hist_percentile(h, qs[k]);
        /* reported as the bucket's upper bound: never below, < 1/128 above */
        assert_true(got >= want);
        assert_true((double)(got - want) <= (double)want / 128.0 + 1.0);
    }
    assert_int_equal(lw_hist_max(h), v[N - 1]);
    assert_int_equal(lw_hist_percentile(h, 100), v[N - 1]);
    char buf[200];
    assert_true(lw_hist_json(h, buf, sizeof buf) > 0);
    char want[200];
    snprintf(want, sizeof want, "{\"count\":%d,", N);
    assert_memory_equal(buf, want, strlen(want));
    assert_non_null(strstr(buf, "\"p999_us\":"));
    assert_int_equal(lw_hist_json(h, buf, 10), -1);
    free(v);
    lw_hist_destroy(h);
}

static void test_huge_values(void **state)
{
    lw_hist_t *h = lw_hist_new();
    lw_hist_record(h, INT64_MAX);
    lw_hist_record(h, (int64_t)1 << 40);
    assert_int_equal(lw_hist_max(h), INT64_MAX);
    int64_t p50 = lw_hist_percentile(h, 50);
    assert_true(p50 >= ((int64_t)1 << 40) && p50 - ((int64_t)1 << 40) <= ((int64_t)1 << 33));
    assert_int_equal(lw_hist_percentile(h, 100), INT64_MAX);
    lw_hist_destroy(h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty),
        cmocka_unit_test(test_small_exact),
        cmocka_unit_test(test_wide_range_precision),
        cmocka_unit_test(test_huge_values),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
