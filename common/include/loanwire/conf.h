/*
 * loanwire/conf.h - configuration shared by every program.
 *
 * librdkafka properties come from a file of key=value lines (as kcat -F:
 * '#' comments, blank lines ignored) and from -X key=value on the command
 * line, applied in that order. Redis is addressed by a URL:
 * redis://HOST:PORT[/DB] (also unix:///path/to/sock[?db=N]).
 * Defaults come from the environment: LOANWIRE_BOOTSTRAP, LOANWIRE_REDIS.
 */
#ifndef LOANWIRE_CONF_H
#define LOANWIRE_CONF_H

#include "loanwire/error.h"

#include <librdkafka/rdkafka.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#define LW_DEFAULT_BOOTSTRAP  "127.0.0.1:9092"
#define LW_DEFAULT_REDIS      "redis://127.0.0.1:6379"
#define LW_TOPIC_EVENTS       "loanwire.loan-events"
#define LW_TOPIC_ALERTS       "loanwire.alerts"
#define LW_TOPIC_DEAD_LETTERS "loanwire.dead-letters"
#define LW_REDIS_ALERT_STREAM "lw:alerts"

/* $LOANWIRE_BOOTSTRAP or the default. Static storage. */
const char *lw_conf_default_bootstrap(void);
/* $LOANWIRE_REDIS or the default. Static storage. */
const char *lw_conf_default_redis(void);

/* Sets one "key=value" on conf. */
lw_err_t lw_conf_set_kv(rd_kafka_conf_t *conf, const char *kv, char *errstr, size_t errstr_size);
/* Applies a properties file ("file:line: ..." in errstr on failure). */
lw_err_t lw_conf_load_file(rd_kafka_conf_t *conf, const char *path, char *errstr,
                           size_t errstr_size);

/* Sends librdkafka's log lines through lw_log() ("WARN prog: rdkafka: ...")
 * instead of its own "%3|..." format on stderr. */
void lw_conf_route_logs(rd_kafka_conf_t *conf);

typedef struct lw_redis_url {
    char host[256]; /* empty when unix socket */
    int port;
    char path[256]; /* unix socket path, or empty */
    int db;
    char password[128];
} lw_redis_url_t;

lw_err_t lw_redis_url_parse(const char *url, lw_redis_url_t *out, char *errstr, size_t errstr_size);

#ifdef __cplusplus
}
#endif
#endif /* LOANWIRE_CONF_H */
