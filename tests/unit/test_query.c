/*
 * test_query.c - loanwire-query without servers: routing, /v1/alerts
 * parameters, --listen parsing, the token file (permissions, comments,
 * constant-time check) and the Prometheus rendering of consumer metrics.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "loanwire/listen.h"
#include "loanwire/query.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define BID "Abcdefghij_-0123456789"

static char tmpdir[256];

static const char *write_file(const char *name, const char *text, mode_t mode)
{
    static char path[512];
    FILE *fp;

    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    fp = fopen(path, "w");
    assert_non_null(fp);
    fputs(text, fp);
    fclose(fp);
    assert_int_equal(chmod(path, mode), 0);
    return path;
}

static void test_route(void **state)
{
    char bid[LW_BORROWER_ID_LEN + 1];
    bool bad;

    assert_int_equal(lw_query_route("/healthz", bid, &bad), LW_ROUTE_HEALTHZ);
    assert_int_equal(lw_query_route("/metrics", bid, &bad), LW_ROUTE_METRICS);
    assert_int_equal(lw_query_route("/v1/alerts", bid, &bad), LW_ROUTE_ALERTS);
    assert_int_equal(lw_query_route("/v1/borrowers/" BID "/exposure", bid, &bad),
                     LW_ROUTE_EXPOSURE);
    assert_false(bad);
    assert_string_equal(bid, BID);

    /* Malformed ids: too short, too long, bad character, empty. */
    assert_int_equal(lw_query_route("/v1/borrowers/abc/exposure", bid, &bad), LW_ROUTE_EXPOSURE);
    assert_true(bad);
    assert_int_equal(lw_query_route("/v1/borrowers/" BID "x/exposure", bid, &bad),
                     LW_ROUTE_EXPOSURE);
    assert_true(bad);
    assert_int_equal(lw_query_route("/v1/borrowers/Abcdefghij_-012345678=/exposure", bid, &bad),
                     LW_ROUTE_EXPOSURE);
    assert_true(bad);
    assert_int_equal(lw_query_route("/v1/borrowers//exposure", bid, &bad), LW_ROUTE_EXPOSURE);
    assert_true(bad);

    /* Anything else is an unknown path. */
    const char *nf[] = {"/",
                        "",
                        "/healthz/",
                        "/metricsx",
                        "/v1/alerts/",
                        "/v1/borrowers/" BID,
                        "/v1/borrowers/" BID "/exposure/",
                        "/v1/borrowers/a/b/exposure",
                        "/v2/borrowers/" BID "/exposure",
                        "/v1/borrowers/exposure"};
    for (size_t i = 0; i < sizeof nf / sizeof nf[0]; i++) {
        assert_int_equal(lw_query_route(nf[i], bid, &bad), LW_ROUTE_NOT_FOUND);
    }
    assert_int_equal(lw_query_route(NULL, bid, &bad), LW_ROUTE_NOT_FOUND);
}

static void test_alerts_params(void **state)
{
    lw_alerts_params_t p;
    char err[256];

    assert_int_equal(lw_alerts_params_parse(NULL, NULL, NULL, &p, err, sizeof err), LW_OK);
    assert_false(p.has_since);
    assert_false(p.has_rule);
    assert_int_equal(p.limit, LW_QUERY_ALERTS_DEFAULT);

    assert_int_equal(
        lw_alerts_params_parse("1700000000000", "balance_cap", "1000", &p, err, sizeof err), LW_OK);
    assert_true(p.has_since);
    assert_false(p.since_exclusive);
    assert_string_equal(p.since_id, "1700000000000-0");
    assert_string_equal(p.rule, "balance_cap");
    assert_int_equal(p.limit, 1000);

    assert_int_equal(lw_alerts_params_parse("1700000000000-7", NULL, "1", &p, err, sizeof err),
                     LW_OK);
    assert_true(p.since_exclusive);
    assert_string_equal(p.since_id, "1700000000000-7");
    assert_int_equal(p.limit, 1);
    assert_int_equal(p.since_stream, -1);
    assert_int_equal(lw_alerts_params_parse(NULL, NULL, NULL, &p, err, sizeof err), LW_OK);
    assert_int_equal(p.since_stream, -1);

    /* a cluster's stream_id names its slot */
    assert_int_equal(
        lw_alerts_params_parse("1700000000000-7:16383", NULL, NULL, &p, err, sizeof err), LW_OK);
    assert_true(p.since_exclusive);
    assert_string_equal(p.since_id, "1700000000000-7");
    assert_int_equal(p.since_stream, 16383);
    const char *bad_slot[] = {"1-2:16384", "1-2:", "1-2:x", "1-2:-1", "1:2", "1-2:3:4"};
    for (size_t i = 0; i < sizeof bad_slot / sizeof bad_slot[0]; i++)
        assert_int_equal(lw_alerts_params_parse(bad_slot[i], NULL, NULL, &p, err, sizeof err),
                         LW_ERR_INVALID_ARG);

    const char *bad_since[] = {"",    "-1",  "12-",    "-",
                               "abc", "1.5", "12-3-4", "99999999999999999999"};
    for (size_t i = 0; i < sizeof bad_since / sizeof bad_since[0]; i++) {
        assert_int_equal(lw_alerts_params_parse(bad_since[i], NULL, NULL, &p, err, sizeof err),
                         LW_ERR_INVALID_ARG);
        assert_non_null(strstr(err, "since"));
    }
    const char *bad_limit[] = {"0", "1001", "", "-5", "10x", "1e3"};
    for (size_t i = 0; i < sizeof bad_limit / sizeof bad_limit[0]; i++) {
        assert_int_equal(lw_alerts_params_parse(NULL, NULL, bad_limit[i], &p, err, sizeof err),
                         LW_ERR_INVALID_ARG);
        assert_non_null(strstr(err, "limit"));
    }
    assert_int_equal(lw_alerts_params_parse(NULL, "a b", NULL, &p, err, sizeof err),
                     LW_ERR_INVALID_ARG);
    assert_int_equal(lw_alerts_params_parse(NULL, "", NULL, &p, err, sizeof err),
                     LW_ERR_INVALID_ARG);
}

static void test_listen(void **state)
{
    char host[64], err[256];
    int port;

    assert_int_equal(
        lw_listen_parse_host("127.0.0.1:9000", host, sizeof host, &port, err, sizeof err), LW_OK);
    assert_string_equal(host, "127.0.0.1");
    assert_int_equal(port, 9000);
    assert_int_equal(lw_listen_parse_host("8081", host, sizeof host, &port, err, sizeof err),
                     LW_OK);
    assert_string_equal(host, LW_QUERY_DEFAULT_HOST);
    assert_int_equal(port, 8081);
    assert_int_equal(lw_listen_parse_host("[::1]:0", host, sizeof host, &port, err, sizeof err),
                     LW_OK);
    assert_string_equal(host, "::1");
    assert_int_equal(port, 0);
    assert_int_equal(
        lw_listen_parse_host("localhost:80", host, sizeof host, &port, err, sizeof err), LW_OK);
    assert_string_equal(host, "127.0.0.1");

    const char *bad[] = {"",    "127.0.0.1:", "127.0.0.1:65536", "example.com:80",
                         ":80", "[::1]80",    "1.2.3.4:x"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(lw_listen_parse_host(bad[i], host, sizeof host, &port, err, sizeof err),
                         LW_ERR_CONFIG);
}

static void test_tokens(void **state)
{
    char err[512];
    lw_tokens_t *tk;
    const char *path;

    path = write_file(
        "tokens",
        "# lenders\n\n  tok-alpha_1-Zq8rLmW3xY0pVb  \nBeta.Token~2+/Kq9sWmX7fRd==\n# end\n", 0600);
    tk = lw_tokens_load(path, err, sizeof err);
    assert_non_null(tk);
    assert_int_equal(lw_tokens_count(tk), 2);
    assert_true(lw_tokens_check(tk, "Bearer tok-alpha_1-Zq8rLmW3xY0pVb"));
    assert_true(lw_tokens_check(tk, "bearer Beta.Token~2+/Kq9sWmX7fRd=="));
    assert_true(lw_tokens_check(tk, "Bearer  tok-alpha_1-Zq8rLmW3xY0pVb "));
    assert_false(lw_tokens_check(tk, "Bearer tok-alpha_1-Zq8rLmW3xY0pV"));
    assert_false(lw_tokens_check(tk, "Bearer tok-alpha_1-Zq8rLmW3xY0pVb2"));
    assert_false(lw_tokens_check(tk, "Bearer # lenders"));
    assert_false(lw_tokens_check(tk, "Basic tok-alpha_1-Zq8rLmW3xY0pVb"));
    assert_false(lw_tokens_check(tk, "tok-alpha_1-Zq8rLmW3xY0pVb"));
    assert_false(lw_tokens_check(tk, "Bearer "));
    assert_false(lw_tokens_check(tk, ""));
    assert_false(lw_tokens_check(tk, NULL));
    assert_false(lw_tokens_check(NULL, "Bearer tok-alpha_1-Zq8rLmW3xY0pVb"));
    /* a token alone belongs to the bureau's staff */
    assert_string_equal(lw_tokens_institution(tk, "Bearer tok-alpha_1-Zq8rLmW3xY0pVb"), "BUREAU");
    assert_null(lw_tokens_institution(tk, "Bearer tok-alpha_1-Zq8rLmW3xY0pV"));
    lw_tokens_destroy(tk);
    lw_tokens_destroy(NULL);

    /* Issue 20: "TOKEN INSTITUTION_ID", each look-up recorded for its owner */
    path = write_file("tokens-inst",
                      "tok-alpha_1-Zq8rLmW3xY0pVb bank-042\n"
                      "Beta.Token~2+/Kq9sWmX7fRd==\t  card.co_7  \n"
                      "staff-token-AAAAAAAAAAAAAAAA\n",
                      0600);
    tk = lw_tokens_load(path, err, sizeof err);
    if (!tk)
        fail_msg("%s", err);
    assert_int_equal(lw_tokens_count(tk), 3);
    assert_string_equal(lw_tokens_institution(tk, "Bearer tok-alpha_1-Zq8rLmW3xY0pVb"), "bank-042");
    assert_string_equal(lw_tokens_institution(tk, "Bearer Beta.Token~2+/Kq9sWmX7fRd=="),
                        "card.co_7");
    assert_string_equal(lw_tokens_institution(tk, "Bearer staff-token-AAAAAAAAAAAAAAAA"), "BUREAU");
    assert_null(lw_tokens_institution(tk, "Bearer bank-042"));
    assert_true(lw_tokens_check(tk, "Bearer tok-alpha_1-Zq8rLmW3xY0pVb"));
    lw_tokens_destroy(tk);
    /* a token listed twice: its last line's institution (found by fuzz_tokens: the index
     * of two matches was OR'ed together, past the end) */
    path = write_file("tokens-dup",
                      "staff-token-AAAAAAAAAAAAAAAA\ntok-alpha_1-Zq8rLmW3xY0pVb bank-1\n"
                      "tok-alpha_1-Zq8rLmW3xY0pVb bank-2\n", /* lines 1 | 2 = 3: past the end */
                      0600);
    tk = lw_tokens_load(path, err, sizeof err);
    assert_non_null(tk);
    assert_string_equal(lw_tokens_institution(tk, "Bearer tok-alpha_1-Zq8rLmW3xY0pVb"), "bank-2");
    assert_string_equal(lw_tokens_institution(tk, "Bearer staff-token-AAAAAAAAAAAAAAAA"), "BUREAU");
    lw_tokens_destroy(tk);
    path = write_file("tokens-inst-bad", "tok-alpha_1-Zq8rLmW3xY0pVb bank 042\n", 0600);
    assert_null(lw_tokens_load(path, err, sizeof err));
    assert_non_null(strstr(err, ":1: institution id"));

    /* purpose= of a look-up */
    assert_int_equal(lw_query_purpose_parse("LOAN_APPROVAL"), 0);
    assert_int_equal(lw_query_purpose_parse("BORROWER_REQUEST"), 4);
    assert_int_equal(lw_query_purpose_parse("loan_approval"), -1);
    assert_int_equal(lw_query_purpose_parse(""), -1);
    assert_int_equal(lw_query_purpose_parse(NULL), -1);

    /* Readable (or writable) by group or others: refused, with the fix. */
    path = write_file("tokens-open", "secret\n", 0644);
    assert_null(lw_tokens_load(path, err, sizeof err));
    assert_non_null(strstr(err, "chmod 600"));
    path = write_file("tokens-grp", "secret\n", 0620);
    assert_null(lw_tokens_load(path, err, sizeof err));
    /* No token at all, a bad character, a missing file. */
    path = write_file("tokens-empty", "# nothing\n\n", 0600);
    assert_null(lw_tokens_load(path, err, sizeof err));
    assert_non_null(strstr(err, "no token"));
    path = write_file("tokens-bad", "tok-alpha_1-Zq8rLmW3xY0pVb\nnot ok\n", 0600);
    assert_null(lw_tokens_load(path, err, sizeof err));
    assert_non_null(strstr(err, ":2:"));
    assert_null(lw_tokens_load("/nonexistent/tokens", err, sizeof err));
    assert_non_null(strstr(err, "/nonexistent/tokens"));
}

/* Issue 21 item 11: a token must carry at least 128 bits (22 base64url, 32
 * hex, 39 decimal characters); a shorter one is refused at load, naming its
 * line. */
static void test_token_strength(void **state)
{
    static const struct {
        const char *tok;
        bool ok;
    } cases[] = {
        {"x", false},
        {"secret", false},
        {"t0k-12345-1767225600", false},                   /* the old test token: 20 */
        {"AbCdEfGhIjKlMnOpQrStU", false},                  /* 21 base64url */
        {"AbCdEfGhIjKlMnOpQrStUv", true},                  /* 22 base64url */
        {"AbCdEfGhIjKlMnOpQrStU=", false},                 /* padding carries nothing */
        {"0123456789abcdef0123456789abcde", false},        /* 31 hex */
        {"0123456789abcdef0123456789abcdef", true},        /* 32 hex */
        {"0123456789ABCDEF0123456789ABCDEF", true},        /* 32 hex, upper case */
        {"01234567890123456789012345678901234567", false}, /* 38 digits */
        {"012345678901234567890123456789012345678", true}, /* 39 digits */
        {"abcdefghijklmnopqrstu", false},                  /* 21 lower case */
        {"abcdefghijklmnopqrstuv", true},                  /* 22 lower case */
    };
    char err[512], text[128];
    const char *path;

    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        lw_tokens_t *tk;
        snprintf(text, sizeof text, "# ok\n%s\n", cases[i].tok);
        path = write_file("tokens-strength", text, 0600);
        err[0] = '\0';
        tk = lw_tokens_load(path, err, sizeof err);
        if ((tk != NULL) != cases[i].ok)
            fail_msg("token \"%s\": %s (%s)", cases[i].tok, tk ? "accepted" : "refused", err);
        if (!tk) {
            assert_non_null(strstr(err, ":2: token too weak"));
            if (strlen(cases[i].tok) >= 6) /* the secret is not echoed */
                assert_null(strstr(err, cases[i].tok));
        }
        lw_tokens_destroy(tk);
    }
}

/* A NUL byte in a token line is refused, not a cut (fuzz_tokens found the
 * rest of such a line silently dropped). */
static void test_token_nul(void **state)
{
    static const char text[] = "AbCdEfGhIjKlMnOpQrStUv\0junk\n";
    char err[512];
    const char *path = write_file("tokens-nul", "", 0600);
    FILE *fp = fopen(path, "w");

    (void)state;
    assert_non_null(fp);
    assert_int_equal(fwrite(text, 1, sizeof text - 1, fp), sizeof text - 1);
    fclose(fp);
    assert_null(lw_tokens_load(path, err, sizeof err));
    assert_non_null(strstr(err, ":1: NUL byte"));
}

static void test_metrics_render(void **state)
{
    lw_query_counts_t counts;
    char *text;

    (void)state;
    memset(&counts, 0, sizeof counts);
    counts.by_status[lw_query_status_slot(200)] = 5;
    counts.by_status[lw_query_status_slot(404)] = 2;
    counts.by_status[lw_query_status_slot(418)] = 1;
    counts.lat_bucket[lw_query_lat_slot(800)] = 3;     /* <= 1 ms */
    counts.lat_bucket[lw_query_lat_slot(30000)] = 4;   /* <= 50 ms */
    counts.lat_bucket[lw_query_lat_slot(9000000)] = 1; /* +Inf */
    counts.lat_sum_us = 1500000;
    text = lw_query_metrics_render(&counts);
    assert_non_null(text);

    assert_non_null(strstr(text, "\nloanwire_build_info{version=\""));
    assert_non_null(strstr(text, "program=\"loanwire-query\"} 1\n"));
    assert_non_null(strstr(text, "# TYPE loanwire_query_requests_total counter\n"));
    assert_non_null(strstr(text, "\nloanwire_query_requests_total{code=\"200\"} 5\n"));
    assert_non_null(strstr(text, "\nloanwire_query_requests_total{code=\"404\"} 2\n"));
    assert_non_null(strstr(text, "\nloanwire_query_requests_total{code=\"other\"} 1\n"));
    assert_non_null(strstr(text, "# TYPE loanwire_query_request_duration_seconds histogram\n"));
    /* buckets are cumulative */
    assert_non_null(
        strstr(text, "\nloanwire_query_request_duration_seconds_bucket{le=\"0.001\"} 3\n"));
    assert_non_null(
        strstr(text, "\nloanwire_query_request_duration_seconds_bucket{le=\"0.025\"} 3\n"));
    assert_non_null(
        strstr(text, "\nloanwire_query_request_duration_seconds_bucket{le=\"0.05\"} 7\n"));
    assert_non_null(
        strstr(text, "\nloanwire_query_request_duration_seconds_bucket{le=\"+Inf\"} 8\n"));
    assert_non_null(strstr(text, "\nloanwire_query_request_duration_seconds_count 8\n"));
    assert_non_null(strstr(text, "\nloanwire_query_request_duration_seconds_sum 1.5\n"));
    /* the consumers' figures come from their own endpoints now */
    assert_null(strstr(text, "loanwire_events_applied_total"));
    assert_null(strstr(text, "loanwire_consumer_lag"));
    assert_int_equal(text[strlen(text) - 1], '\n');
    free(text);
    assert_int_equal(lw_query_lat_slot(1000), 0);
    assert_int_equal(lw_query_lat_slot(1001), 1);
    assert_int_equal(lw_query_lat_slot(INT64_MAX), LW_QUERY_LAT_BUCKETS - 1);
}

static void test_status_slots(void **state)
{
    for (int i = 0; i < LW_QUERY_STATUS_SLOTS - 1; i++)
        assert_int_equal(lw_query_status_slot(lw_query_status_codes[i]), i);
    assert_int_equal(lw_query_status_slot(302), LW_QUERY_STATUS_SLOTS - 1);
}

static int setup(void **state)
{
    const char *base = getenv("LW_TMP_DIR");
    snprintf(tmpdir, sizeof tmpdir, "%s/test_query.XXXXXX", base && *base ? base : "/tmp");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state)
{
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_route),          cmocka_unit_test(test_alerts_params),
        cmocka_unit_test(test_listen),         cmocka_unit_test(test_tokens),
        cmocka_unit_test(test_token_strength), cmocka_unit_test(test_token_nul),
        cmocka_unit_test(test_metrics_render), cmocka_unit_test(test_status_slots),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
