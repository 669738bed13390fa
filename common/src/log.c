/*
 * log.c - logging, signal handling, clocks and the terminal progress line.
 *
 * Everything a command-line program needs around its real work: one-line log
 * messages on stderr ("2026-12-04T19:20:01.123Z LEVEL prog: message", or with
 * --log-format json one JSON object per line: time, level, program, msg and
 * any structured fields, for a log shipper that should not parse text), a
 * stop flag set by SIGINT/SIGTERM
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
static const char *const lw_log_level_json[] = {"error", "warn", "info", "debug"};
static lw_log_format_t lw_log_fmt = LW_LOG_TEXT;

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

void lw_log_set_format(lw_log_format_t fmt)
{
    lw_log_fmt = fmt;
}

lw_log_format_t lw_log_get_format(void)
{
    return lw_log_fmt;
}

int lw_log_take_args(int *argc, char **argv)
{
    int out = 1, i;
    for (i = 1; i < *argc; i++) {
        const char *v;
        if (!strcmp(argv[i], "--"))
            break; /* operands from here on are not options: keep them as they are */
        if (!strncmp(argv[i], "--log-format=", 13)) {
            v = argv[i] + 13;
        } else if (!strcmp(argv[i], "--log-format")) {
            if (i + 1 >= *argc)
                return -1;
            v = argv[++i];
        } else {
            argv[out++] = argv[i];
            continue;
        }
        if (!strcmp(v, "json"))
            lw_log_fmt = LW_LOG_JSON;
        else if (!strcmp(v, "text"))
            lw_log_fmt = LW_LOG_TEXT;
        else
            return -1;
    }
    for (; i < *argc; i++)
        argv[out++] = argv[i];
    *argc = out;
    argv[out] = NULL;
    return 0;
}

size_t lw_log_time_rfc3339(int64_t ms, char *out, size_t cap)
{
    time_t secs = (time_t)(ms / 1000);
    struct tm tm;
    if (!gmtime_r(&secs, &tm) || cap < 25) {
        if (cap)
            out[0] = '\0';
        return 0;
    }
    size_t n = strftime(out, cap, "%Y-%m-%dT%H:%M:%S", &tm);
    int k = snprintf(out + n, cap - n, ".%03dZ", (int)(ms % 1000));
    return k > 0 ? n + (size_t)k : n;
}

size_t lw_log_json_escape(const char *s, char *out, size_t cap)
{
    static const char hex[] = "0123456789abcdef";
    size_t n = 0;
    if (!cap)
        return 0;
    for (; s && *s; s++) {
        unsigned char c = (unsigned char)*s;
        char esc[7];
        size_t k;
        if (c == '"' || c == '\\') {
            esc[0] = '\\', esc[1] = (char)c, k = 2;
        } else if (c == '\n') {
            esc[0] = '\\', esc[1] = 'n', k = 2;
        } else if (c == '\r') {
            esc[0] = '\\', esc[1] = 'r', k = 2;
        } else if (c == '\t') {
            esc[0] = '\\', esc[1] = 't', k = 2;
        } else if (c < 0x20 || c == 0x7f) {
            memcpy(esc, "\\u00", 4);
            esc[4] = hex[c >> 4], esc[5] = hex[c & 15], k = 6;
        } else {
            esc[0] = (char)c, k = 1; /* UTF-8 bytes pass through */
        }
        if (n + k >= cap)
            break; /* truncated on a character boundary of the escape */
        memcpy(out + n, esc, k);
        n += k;
    }
    out[n] = '\0';
    return n;
}

size_t lw_log_format_line(lw_log_format_t fmt, int64_t ms, lw_log_level_t level, const char *prog,
                          const char *const *kv, const char *msg, char *out, size_t cap)
{
    char ts[40];
    size_t n = 0;
    if ((unsigned)level > LW_LOG_DEBUG)
        level = LW_LOG_DEBUG;
    lw_log_time_rfc3339(ms, ts, sizeof ts);
#define PUTS(...)                                                                                  \
    do {                                                                                           \
        int k_ = snprintf(out + n, cap - n, __VA_ARGS__);                                          \
        n = k_ < 0 ? n : (size_t)k_ >= cap - n ? cap - 1 : n + (size_t)k_;                         \
    } while (0)
#define PUTJ(s)                                                                                    \
    do {                                                                                           \
        n += lw_log_json_escape((s), out + n, cap - n > 2 ? cap - n - 2 : 1);                      \
    } while (0)
    if (cap < 2)
        return 0;
    out[0] = '\0';
    if (fmt == LW_LOG_JSON) {
        PUTS("{\"time\":\"%s\",\"level\":\"%s\",\"program\":\"", ts, lw_log_level_json[level]);
        PUTJ(prog);
        PUTS("\",\"msg\":\"");
        PUTJ(msg);
        PUTS("\"");
        for (size_t i = 0; kv && kv[i] && kv[i + 1]; i += 2) {
            PUTS(",\"");
            PUTJ(kv[i]);
            PUTS("\":\"");
            PUTJ(kv[i + 1]);
            PUTS("\"");
        }
        PUTS("}\n");
    } else {
        PUTS("%s %s %s: %s", ts, lw_log_level_names[level], prog, msg);
        for (size_t i = 0; kv && kv[i] && kv[i + 1]; i += 2)
            PUTS(" %s=%s", kv[i], kv[i + 1]);
        PUTS("\n");
    }
#undef PUTS
#undef PUTJ
    if (n > 0 && out[n - 1] != '\n') { /* truncated: still one line (a JSON one cut short) */
        n = n < cap - 1 ? n : cap - 2;
        out[n++] = '\n';
        out[n] = '\0';
    }
    return n;
}

static void lw_log_emit(lw_log_level_t level, const char *const *kv, const char *fmt, va_list ap)
{
    char msg[2048], line[16384]; /* room for a message escaped at worst (6 bytes each) */
    int saved = errno;

    vsnprintf(msg, sizeof msg, fmt, ap);
    lw_log_format_line(lw_log_fmt, lw_now_ms(), level, lw_log_prog, kv, msg, line, sizeof line);
    /* One fprintf per line so concurrent threads do not interleave inside it. */
    fprintf(stderr, "%s%s", lw_progress_drawn ? "\r\033[K" : "", line);
    lw_progress_drawn = 0;
    errno = saved;
}

void lw_log(lw_log_level_t level, const char *fmt, ...)
{
    va_list ap;
    if (level > lw_log_max)
        return;
    va_start(ap, fmt);
    lw_log_emit(level, NULL, fmt, ap);
    va_end(ap);
}

void lw_log_kv(lw_log_level_t level, const char *const *kv, const char *fmt, ...)
{
    va_list ap;
    if (level > lw_log_max)
        return;
    va_start(ap, fmt);
    lw_log_emit(level, kv, fmt, ap);
    va_end(ap);
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
