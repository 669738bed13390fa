/*
 * loanwire/log.h - logging, signals and terminal progress for the programs.
 *
 * Log lines go to stderr as "2026-12-04T19:20:01.123Z LEVEL prog: message"
 * (RFC 3339, UTC, milliseconds), or with --log-format json as one object per
 * line: {"time":...,"level":"info","program":...,"msg":...,<fields>}. lw_stop_requested() turns
 * true after SIGINT or SIGTERM once lw_signals_install() ran, so loops finish
 * their work and exit cleanly. The progress line is drawn only when stderr is
 * a terminal.
 */
#ifndef LOANWIRE_LOG_H
#define LOANWIRE_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum lw_log_level {
    LW_LOG_ERROR = 0,
    LW_LOG_WARN,
    LW_LOG_INFO,
    LW_LOG_DEBUG,
} lw_log_level_t;

typedef enum lw_log_format {
    LW_LOG_TEXT = 0,
    LW_LOG_JSON,
} lw_log_format_t;

void lw_log_init(const char *prog, lw_log_level_t level);
void lw_log_set_format(lw_log_format_t fmt);
lw_log_format_t lw_log_get_format(void);
/*
 * Takes "--log-format text|json" (or --log-format=...) out of argv, before
 * the program's own getopt_long sees it, so every program has the flag once.
 * Stops at "--". Returns 0, or -1 for a missing or unknown value.
 */
int lw_log_take_args(int *argc, char **argv);

/* Structured fields: kv is NULL-terminated key, value, key, value, ...
 * ("key=value" after the message in text, members in JSON). */
void lw_log_kv(lw_log_level_t level, const char *const *kv, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Formatting, exposed for tests: ms since the epoch as 2026-12-04T19:20:01.123Z
 * (cap >= 25); s as JSON string contents (truncated to fit, terminated); one
 * whole line with its '\n'. Each returns the length written. */
size_t lw_log_time_rfc3339(int64_t ms, char *out, size_t cap);
size_t lw_log_json_escape(const char *s, char *out, size_t cap);
size_t lw_log_format_line(lw_log_format_t fmt, int64_t ms, lw_log_level_t level, const char *prog,
                          const char *const *kv, const char *msg, char *out, size_t cap);
void lw_log(lw_log_level_t level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define lw_error(...) lw_log(LW_LOG_ERROR, __VA_ARGS__)
#define lw_warn(...)  lw_log(LW_LOG_WARN, __VA_ARGS__)
#define lw_info(...)  lw_log(LW_LOG_INFO, __VA_ARGS__)
#define lw_debug(...) lw_log(LW_LOG_DEBUG, __VA_ARGS__)

/* SIGINT/SIGTERM set a flag (a second one exits at once); SIGPIPE ignored. */
void lw_signals_install(void);
bool lw_stop_requested(void);
void lw_stop_request(void); /* same as receiving a signal */

/* Wall-clock and monotonic milliseconds. */
int64_t lw_now_ms(void);
int64_t lw_now_us(void); /* wall clock, microseconds since the epoch */
int64_t lw_mono_ms(void);
int64_t lw_mono_us(void);

/* Progress: a single redrawn line on a tty, nothing otherwise. */
typedef struct lw_progress {
    bool enabled;
    int64_t started_us;
    int64_t last_draw_us;
} lw_progress_t;

void lw_progress_init(lw_progress_t *p);
/* Draws at most every 200 ms: "label  N done  R/s  extra". */
void lw_progress_update(lw_progress_t *p, const char *label, uint64_t done, uint64_t total,
                        const char *extra);
void lw_progress_finish(lw_progress_t *p); /* clears the line */

#ifdef __cplusplus
}
#endif
#endif /* LOANWIRE_LOG_H */
