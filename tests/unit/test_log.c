/*
 * test_log.c - logging, signals, clocks and progress (common/src/log.c):
 * the "LEVEL prog: message" line format and level filter, the stop flag set
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

static void test_log_format(void **state)
{
    (void)state;
    capture(log_some);
    assert_string_equal(captured, "ERROR loanwire-test: disk full\n"
                                  "WARN loanwire-test: w1\n"
                                  "INFO loanwire-test: hello\n");
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
    assert_string_equal(captured, "ERROR p: yes\n");
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
        cmocka_unit_test(test_clocks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
