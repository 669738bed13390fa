/*
 * test_log.c - logging, signals, clocks and progress (common/src/log.c):
 * the "TIME LEVEL prog: message" line format (RFC 3339 UTC with milliseconds)
 * and its JSON form (escaping, structured fields, --log-format taken out of
 * argv), the level filter, the stop flag set
 * by SIGINT/SIGTERM, SIGPIPE ignored, clocks that move the right way, and a
 * progress line that stays silent when stderr is not a terminal.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "loanwire/log.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* Runs fn with stderr sent to a temp file and returns what was written. */
static char captured[4096];

static void capture(void (*fn)(void))
{
    FILE *tmp = tmpfile();
    int saved = dup(STDERR_FILENO);
    size_t n;

    assert_non_null(tmp);
    fflush(stderr);
    dup2(fileno(tmp), STDERR_FILENO);
    fn();
    fflush(stderr);
    dup2(saved, STDERR_FILENO);
    close(saved);
    rewind(tmp);
    n = fread(captured, 1, sizeof captured - 1, tmp);
    captured[n] = '\0';
    fclose(tmp);
}

static void log_some(void)
{
    lw_log_init("/usr/bin/loanwire-test", LW_LOG_INFO);
    lw_error("disk %s", "full");
    lw_warn("w%d", 1);
    lw_info("hello");
    lw_debug("hidden");
}

/* captured without the 25-byte "2026-12-04T19:20:01.123Z " of each line,
 * after checking that each line starts with one. */
static char untimed[4096];

static void strip_times(void)
{
    const char *p = captured;
    size_t n = 0;
    while (*p) {
        assert_true(strlen(p) > 25);
        for (int i = 0; i < 24; i++) {
            char c = p[i];
            if (i == 4 || i == 7)
                assert_int_equal(c, '-');
            else if (i == 10)
                assert_int_equal(c, 'T');
            else if (i == 13 || i == 16)
                assert_int_equal(c, ':');
            else if (i == 19)
                assert_int_equal(c, '.');
            else if (i == 23)
                assert_int_equal(c, 'Z');
            else
                assert_true(c >= '0' && c <= '9');
        }
        assert_int_equal(p[24], ' ');
        p += 25;
        const char *nl = strchr(p, '\n');
        assert_non_null(nl);
        memcpy(untimed + n, p, (size_t)(nl - p) + 1);
        n += (size_t)(nl - p) + 1;
        p = nl + 1;
    }
    untimed[n] = '\0';
}

static void test_log_format(void **state)
{
    (void)state;
    capture(log_some);
    strip_times();
    assert_string_equal(untimed, "ERROR loanwire-test: disk full\n"
                                 "WARN loanwire-test: w1\n"
                                 "INFO loanwire-test: hello\n");
}

static void test_rfc3339(void **state)
{
    char out[40];
    (void)state;
    /* 2026-12-04T19:20:01.123Z = 1796412001 s + 123 ms */
    assert_int_equal(lw_log_time_rfc3339(INT64_C(1796412001123), out, sizeof out), 24);
    assert_string_equal(out, "2026-12-04T19:20:01.123Z");
    lw_log_time_rfc3339(INT64_C(5), out, sizeof out);
    assert_string_equal(out, "1970-01-01T00:00:00.005Z");
    assert_int_equal(lw_log_time_rfc3339(0, out, 10), 0); /* too small: nothing */
    assert_string_equal(out, "");
}

static void test_json_escape(void **state)
{
    char out[128];
    (void)state;
    lw_log_json_escape("a\"b\\c\nd\re\tf\x01g\x7f h\xc3\xa9", out, sizeof out);
    assert_string_equal(out, "a\\\"b\\\\c\\nd\\re\\tf\\u0001g\\u007f h\xc3\xa9");
    /* truncation never cuts an escape in half */
    assert_int_equal(lw_log_json_escape("ab\"", out, 4), 2);
    assert_string_equal(out, "ab");
}

static void test_json_line(void **state)
{
    char out[512];
    const char *kv[] = {"partition", "3", "why", "quote\"d", NULL};
    (void)state;
    size_t n = lw_log_format_line(LW_LOG_JSON, INT64_C(1796412001123), LW_LOG_WARN, "loanwire-x",
                                  kv, "lag \"high\"\n", out, sizeof out);
    assert_string_equal(out, "{\"time\":\"2026-12-04T19:20:01.123Z\",\"level\":\"warn\","
                             "\"program\":\"loanwire-x\",\"msg\":\"lag \\\"high\\\"\\n\","
                             "\"partition\":\"3\",\"why\":\"quote\\\"d\"}\n");
    assert_int_equal(n, strlen(out));
    lw_log_format_line(LW_LOG_TEXT, INT64_C(1796412001123), LW_LOG_INFO, "p", kv, "m", out,
                       sizeof out);
    assert_string_equal(out, "2026-12-04T19:20:01.123Z INFO p: m partition=3 why=quote\"d\n");
    /* too long for the buffer: still one line ending in a newline */
    char small[48];
    n = lw_log_format_line(LW_LOG_JSON, 0, LW_LOG_INFO, "p", NULL,
                           "a message much longer than the buffer it goes into", small,
                           sizeof small);
    assert_int_equal(n, strlen(small));
    assert_int_equal(small[n - 1], '\n');
    assert_null(strchr(small, '\n') != small + n - 1 ? small : NULL);
}

static void test_take_args(void **state)
{
    char a0[] = "prog", a1[] = "--log-format", a2[] = "json", a3[] = "-v", a4[] = "--",
         a5[] = "--log-format=text";
    char *argv[] = {a0, a1, a2, a3, a4, a5, NULL};
    int argc = 6;
    (void)state;
    assert_int_equal(lw_log_take_args(&argc, argv), 0);
    assert_int_equal(lw_log_get_format(), LW_LOG_JSON);
    assert_int_equal(argc, 4); /* after "--" nothing is taken */
    assert_string_equal(argv[1], "-v");
    assert_string_equal(argv[2], "--");
    assert_string_equal(argv[3], "--log-format=text");
    assert_null(argv[4]);

    char b1[] = "--log-format=xml";
    char *bad[] = {a0, b1, NULL};
    argc = 2;
    assert_int_equal(lw_log_take_args(&argc, bad), -1);
    char *missing[] = {a0, a1, NULL};
    argc = 2;
    assert_int_equal(lw_log_take_args(&argc, missing), -1);
    lw_log_set_format(LW_LOG_TEXT);
}

static void log_json_some(void)
{
    lw_log_init("loanwire-test", LW_LOG_INFO);
    lw_log_set_format(LW_LOG_JSON);
    const char *kv[] = {"k", "v", NULL};
    lw_log_kv(LW_LOG_INFO, kv, "n=%d", 5);
    lw_debug("hidden");
    lw_log_set_format(LW_LOG_TEXT);
}

static void test_log_json_emit(void **state)
{
    (void)state;
    capture(log_json_some);
    assert_int_equal(strncmp(captured, "{\"time\":\"", 9), 0);
    assert_non_null(strstr(captured, "\"level\":\"info\",\"program\":\"loanwire-test\","
                                     "\"msg\":\"n=5\",\"k\":\"v\"}\n"));
    assert_null(strstr(captured, "hidden"));
}

static void log_error_only(void)
{
    lw_log_init("p", LW_LOG_ERROR);
    lw_warn("no");
    lw_error("yes");
}

static void test_log_level(void **state)
{
    (void)state;
    capture(log_error_only);
    strip_times();
    assert_string_equal(untimed, "ERROR p: yes\n");
}

static void draw_progress(void)
{
    lw_progress_t p;
    lw_progress_init(&p);
    lw_progress_update(&p, "events", 10, 100, "x");
    lw_progress_finish(&p);
}

static void test_progress_not_tty(void **state)
{
    (void)state;
    capture(draw_progress); /* stderr is a file here: nothing drawn */
    assert_string_equal(captured, "");
}

static void draw_progress_forced(void)
{
    lw_progress_t p;
    lw_progress_init(&p);
    p.enabled = true; /* as on a terminal */
    lw_progress_update(&p, "events", 10, 100, "rejected 2");
    lw_progress_update(&p, "events", 20, 100, "again"); /* within 200 ms: skipped */
    lw_progress_finish(&p);
}

static void test_progress_line(void **state)
{
    (void)state;
    capture(draw_progress_forced);
    assert_non_null(strstr(captured, "events  10/100"));
    assert_non_null(strstr(captured, "rejected 2"));
    assert_null(strstr(captured, "again"));
    assert_non_null(strstr(captured, "\r"));
}

static void test_signals(void **state)
{
    (void)state;
    lw_signals_install();
    assert_false(lw_stop_requested());
    raise(SIGTERM); /* first one only sets the flag */
    assert_true(lw_stop_requested());
    /* SIGPIPE is ignored: raising it does not kill us. */
    raise(SIGPIPE);
    lw_stop_request();
    assert_true(lw_stop_requested());
}

static void test_second_signal_exits(void **state)
{
    pid_t pid;
    int status;

    (void)state;
    fflush(NULL);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        lw_signals_install();
        raise(SIGINT);
        raise(SIGINT);
        _exit(0); /* not reached when the second signal exits */
    }
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 130);
}

static void test_clocks(void **state)
{
    int64_t m0 = lw_mono_us(), ms0 = lw_mono_ms(), now = lw_now_ms();

    (void)state;
    usleep(20000);
    assert_true(lw_mono_us() - m0 >= 20000);
    assert_true(lw_mono_ms() - ms0 >= 20);
    /* Wall clock in ms since the epoch: after 2020, before 2100. */
    assert_true(now > INT64_C(1577836800000));
    assert_true(now < INT64_C(4102444800000));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_log_format),       cmocka_unit_test(test_log_level),
        cmocka_unit_test(test_progress_not_tty), cmocka_unit_test(test_progress_line),
        cmocka_unit_test(test_signals),          cmocka_unit_test(test_second_signal_exits),
        cmocka_unit_test(test_clocks),           cmocka_unit_test(test_rfc3339),
        cmocka_unit_test(test_json_escape),      cmocka_unit_test(test_json_line),
        cmocka_unit_test(test_take_args),        cmocka_unit_test(test_log_json_emit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
