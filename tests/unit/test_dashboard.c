/*
 * test_dashboard.c - the dashboard's pieces that need no socket: the
 * Cookie header parser, the session table (create, check, end, eviction
 * when full) and which paths and methods the dashboard answers.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "../../consumers/query/src/dash_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void test_cookie_get(void **state)
{
    char v[80];
    (void)state;
    assert_true(lw_cookie_get("lw_session=abc", "lw_session", v, sizeof v));
    assert_string_equal(v, "abc");
    assert_true(lw_cookie_get("a=b; lw_session=xyz; c=d", "lw_session", v, sizeof v));
    assert_string_equal(v, "xyz");
    assert_true(lw_cookie_get("a=b;lw_session=q", "lw_session", v, sizeof v));
    assert_string_equal(v, "q");
    /* another cookie whose name ends or starts like ours is not ours */
    assert_false(lw_cookie_get("xlw_session=1; lw_session_x=2", "lw_session", v, sizeof v));
    assert_false(lw_cookie_get("", "lw_session", v, sizeof v));
    assert_false(lw_cookie_get(NULL, "lw_session", v, sizeof v));
    /* a value longer than the buffer is refused, not cut */
    assert_false(lw_cookie_get("lw_session=0123456789", "lw_session", v, 5));
}

static void test_sessions(void **state)
{
    lw_sessions_t *s = lw_sessions_new();
    char id[65], first[65], hdr[128];
    (void)state;

    assert_non_null(s);
    assert_true(lw_sessions_create(s, id));
    assert_int_equal(strlen(id), 64);
    assert_true(strspn(id, "0123456789abcdef") == 64);
    snprintf(hdr, sizeof hdr, "theme=dark; lw_session=%s", id);
    assert_true(lw_sessions_check(s, hdr));
    assert_false(lw_sessions_check(s, NULL));
    assert_false(lw_sessions_check(s, "lw_session="));
    id[0] = id[0] == 'a' ? 'b' : 'a'; /* one character off */
    snprintf(hdr, sizeof hdr, "lw_session=%s", id);
    assert_false(lw_sessions_check(s, hdr));
    id[0] = id[0] == 'a' ? 'b' : 'a';
    snprintf(hdr, sizeof hdr, "lw_session=%s", id);
    lw_sessions_end(s, hdr);
    assert_false(lw_sessions_check(s, hdr));

    /* A full table drops the oldest session, not the new one. */
    assert_true(lw_sessions_create(s, first));
    for (int i = 0; i < LW_DASH_SESSIONS_MAX; i++)
        assert_true(lw_sessions_create(s, id));
    snprintf(hdr, sizeof hdr, "lw_session=%s", id);
    assert_true(lw_sessions_check(s, hdr));
    snprintf(hdr, sizeof hdr, "lw_session=%s", first);
    assert_false(lw_sessions_check(s, hdr));
    lw_sessions_free(s);
}

static void test_paths(void **state)
{
    (void)state;
    assert_true(lw_dash_owns("/"));
    assert_true(lw_dash_owns("/index.html"));
    assert_true(lw_dash_owns("/assets/app.js"));
    assert_true(lw_dash_owns("/session"));
    assert_true(lw_dash_owns("/v1/alerts/stream"));
    assert_true(lw_dash_owns("/v1/dashboard/stats"));
    assert_true(lw_dash_owns("/v1/dashboard/borrowers/AAAAAAAAAAAAAAAAAAAAAA/alerts"));
    /* the API's own paths stay the API's */
    assert_false(lw_dash_owns("/v1/alerts"));
    assert_false(lw_dash_owns("/metrics"));
    assert_false(lw_dash_owns("/healthz"));
    assert_false(lw_dash_owns("/v1/borrowers/AAAAAAAAAAAAAAAAAAAAAA/exposure"));
    assert_false(lw_dash_owns(NULL));
    /* POST only to sign in and out; GET everywhere else */
    assert_true(lw_dash_method_ok("/session", "POST"));
    assert_true(lw_dash_method_ok("/session/end", "POST"));
    assert_true(lw_dash_method_ok("/session", "GET"));
    assert_false(lw_dash_method_ok("/session/end", "GET"));
    assert_false(lw_dash_method_ok("/", "POST"));
    assert_false(lw_dash_method_ok("/v1/alerts/stream", "POST"));
    assert_false(lw_dash_method_ok("/session", "DELETE"));
    assert_true(lw_dash_needs_redis("/v1/dashboard/borrowers/AAAAAAAAAAAAAAAAAAAAAA/alerts"));
    assert_false(lw_dash_needs_redis("/v1/dashboard/stats"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cookie_get),
        cmocka_unit_test(test_sessions),
        cmocka_unit_test(test_paths),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
