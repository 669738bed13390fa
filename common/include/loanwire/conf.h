/*
 * loanwire/conf.h - configuration shared by every program.
 *
 * librdkafka properties come from a file of key=value lines (as kcat -F:
 * '#' comments, blank lines ignored) and from -X key=value on the command
 * line, applied in that order. Redis is addressed by a URL:
 * redis://[[USER]:PASSWORD@]HOST:PORT[/DB] (also unix:///path/to/sock[?db=N]).
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
#define LW_TOPIC_INQUIRIES    "loanwire.inquiries"
#define LW_REDIS_ALERT_STREAM "lw:alerts"

/* $LOANWIRE_BOOTSTRAP or the default. Static storage. */
const char *lw_conf_default_bootstrap(void);
/* $LOANWIRE_REDIS or the default. Static storage. */
const char *lw_conf_default_redis(void);

/* Sets one "key=value" on conf. */
lw_err_t lw_conf_set_kv(rd_kafka_conf_t *conf, const char *kv, char *errstr, size_t errstr_size);
/* Applies a properties file ("file:line: ..." in errstr on failure). A file
 * that group or others may access is refused (LW_ERR_CONFIG): it may hold
 * sasl.password. */
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
    char user[128];     /* ACL user (AUTH user password), or empty: the default user */
    char password[128]; /* empty: no AUTH */
} lw_redis_url_t;

/*
 * Parses redis://[[user]:password@]host[:port][/db] (host may be [IPv6]) or
 * unix:///path[?db=N]. user and password are percent-decoded (%40 for '@',
 * %3A for ':', %25 for '%'); "password@" without a ':' is a password for the
 * default user. Error messages show the URL without its password.
 */
lw_err_t lw_redis_url_parse(const char *url, lw_redis_url_t *out, char *errstr, size_t errstr_size);

/* url (as given, parsed or not) with its password replaced by "***", for
 * logs and error messages. Returns out (always terminated). */
const char *lw_redis_url_redact(const char *url, char *out, size_t cap);

/* A parsed URL for a log line: redis://[user[:***]@]host:port/db, or
 * unix://path?db=N; never the password. Returns out. */
const char *lw_redis_url_format(const lw_redis_url_t *u, char *out, size_t cap);

#ifdef __cplusplus
}
#endif
#endif /* LOANWIRE_CONF_H */
