/*
 * log.c - logging, signal handling, clocks and the terminal progress line.
 *
 * Everything a command-line program needs around its real work: one-line log
 * messages on stderr ("LEVEL prog: message"), a stop flag set by SIGINT/SIGTERM
 * so loops can finish cleanly (a second signal means "now": _exit(130)), and a
 * progress line redrawn in place, only when stderr is a terminal so that logs
 * and pipes stay clean.
 */
#include "loanwire/log.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char *lw_log_prog = "loanwire";
static lw_log_level_t lw_log_max = LW_LOG_INFO;

static const char *const lw_log_level_names[] = {"ERROR", "WARN", "INFO", "DEBUG"};

/* Whether the progress line is currently on screen: a log line must clear it
 * first, or the two would share one terminal line. */
static volatile int lw_progress_drawn;

void lw_log_init(const char *prog, lw_log_level_t level)
{
    if (prog) {
        const char *slash = strrchr(prog, '/');
        lw_log_prog = slash ? slash + 1 : prog;
    }
    lw_log_max = level;
}

void lw_log(lw_log_level_t level, const char *fmt, ...)
{
    char msg[2048];
    va_list ap;
    int saved = errno;

    if (level > lw_log_max)
        return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if ((unsigned)level > LW_LOG_DEBUG)
        level = LW_LOG_DEBUG;
    /* One fprintf per line so concurrent threads do not interleave inside it. */
    fprintf(stderr, "%s%s %s: %s\n", lw_progress_drawn ? "\r\033[K" : "", lw_log_level_names[level],
            lw_log_prog, msg);
    lw_progress_drawn = 0;
    errno = saved;
}

/* ---- Signals --------------------------------------------------------------- */

static volatile sig_atomic_t lw_stop_flag;

static void lw_on_signal(int sig)
{
    (void)sig;
    if (lw_stop_flag)
        _exit(130); /* second request: the user means it */
    lw_stop_flag = 1;
}

void lw_signals_install(void)
{
    struct sigaction sa;

    memset(&sa, 0, sizeof sa);
    sa.sa_handler = lw_on_signal;
    sigemptyset(&sa.sa_mask);
    /* No SA_RESTART: a blocking read (stdin) returns EINTR so loops notice. */
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_IGN;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGPIPE, &sa, NULL);
}

bool lw_stop_requested(void)
{
    return lw_stop_flag != 0;
}

void lw_stop_request(void)
{
    lw_stop_flag = 1;
}

/* ---- Clocks ---------------------------------------------------------------- */

static int64_t lw_clock_us(clockid_t id)
{
    struct timespec ts;

    clock_gettime(id, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t lw_now_ms(void)
{
    return lw_clock_us(CLOCK_REALTIME) / 1000;
}

int64_t lw_now_us(void)
{
    return lw_clock_us(CLOCK_REALTIME);
}

int64_t lw_mono_ms(void)
{
    return lw_clock_us(CLOCK_MONOTONIC) / 1000;
}

int64_t lw_mono_us(void)
{
    return lw_clock_us(CLOCK_MONOTONIC);
}

/* ---- Progress -------------------------------------------------------------- */

#define LW_PROGRESS_INTERVAL_US 200000

void lw_progress_init(lw_progress_t *p)
{
    p->enabled = isatty(STDERR_FILENO) == 1;
    p->started_us = lw_mono_us();
    p->last_draw_us = 0;
}

void lw_progress_update(lw_progress_t *p, const char *label, uint64_t done, uint64_t total,
                        const char *extra)
{
    char line[512];
    int64_t now;
    double secs, rate;
    int n;

    if (!p || !p->enabled)
        return;
    now = lw_mono_us();
    if (p->last_draw_us && now - p->last_draw_us < LW_PROGRESS_INTERVAL_US)
        return;
    p->last_draw_us = now;
    secs = (double)(now - p->started_us) / 1e6; /* display only, never money */
    rate = secs > 0 ? (double)done / secs : 0.0;
    if (total)
        n = snprintf(line, sizeof line, "%s  %llu/%llu (%3.0f%%)  %.0f/s", label ? label : "",
                     (unsigned long long)done, (unsigned long long)total,
                     100.0 * (double)done / (double)total, rate);
    else
        n = snprintf(line, sizeof line, "%s  %llu  %.0f/s", label ? label : "",
                     (unsigned long long)done, rate);
    if (n > 0 && (size_t)n < sizeof line && extra && *extra)
        snprintf(line + n, sizeof line - (size_t)n, "  %s", extra);
    fprintf(stderr, "\r\033[K%s", line);
    fflush(stderr);
    lw_progress_drawn = 1;
}

void lw_progress_finish(lw_progress_t *p)
{
    if (!p || !p->enabled)
        return;
    if (lw_progress_drawn) {
        fputs("\r\033[K", stderr);
        fflush(stderr);
    }
    lw_progress_drawn = 0;
}
