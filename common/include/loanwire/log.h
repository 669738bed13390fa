/*
 * loanwire/log.h - logging, signals and terminal progress for the programs.
 *
 * Log lines go to stderr as "LEVEL prog: message". lw_stop_requested() turns
 * true after SIGINT or SIGTERM once lw_signals_install() ran, so loops finish
 * their work and exit cleanly. The progress line is drawn only when stderr is
 * a terminal.
 */
#ifndef LOANWIRE_LOG_H
#define LOANWIRE_LOG_H

#include <stdbool.h>
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

void lw_log_init(const char *prog, lw_log_level_t level);
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
