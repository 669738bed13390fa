/*
 * loanwire/query.h - loanwire-query, the lenders' HTTP API over the bureau's
 * Redis state (consumers/README.md documents the keys it reads).
 *
 * Endpoints (all GET; consumers/query/README.md has the JSON shapes):
 *   /v1/borrowers/{borrower_id}/exposure   a borrower's exposure (token)
 *   /v1/alerts?since=&rule=&limit=         recent alerts from lw:alerts (token)
 *   /healthz                               PINGs Redis: 200 or 503 (open)
 *   /metrics                               Prometheus text (open)
 *   /, /session, /v1/alerts/stream, /v1/dashboard/...
 *                                          the browser dashboard (src/dashboard.c)
 *
 * The server is libmicrohttpd with an internal thread pool; each pool thread
 * keeps its own lw_rcluster handle (hiredis is not thread-safe), which works
 * on a single Redis and on a Redis Cluster alike and reopens a connection
 * that broke. The pieces below the server (routing, parameters,
 * tokens, JSON and metrics rendering) are exported so tests reach them
 * without a socket.
 */
#ifndef LOANWIRE_QUERY_H
#define LOANWIRE_QUERY_H

#include "loanwire/conf.h"
#include "loanwire/error.h"
#include "loanwire/event.h"
#include "loanwire/rcluster.h"
#include "loanwire/state.h"

#include <hiredis/hiredis.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define LW_QUERY_DEFAULT_HOST    "127.0.0.1"
#define LW_QUERY_DEFAULT_PORT    8080
#define LW_QUERY_DEFAULT_THREADS 4
#define LW_QUERY_MAX_URL         2048 /* path + query string; longer gets 414 */
#define LW_QUERY_ALERTS_MAX      1000 /* largest limit= of /v1/alerts */
#define LW_QUERY_ALERTS_DEFAULT  100
/* Against slow clients (slowloris): connections held open while their
 * headers trickle in. Every limit is an option of lw_query_conf_t. */
#define LW_QUERY_DEFAULT_MAX_CONNECTIONS 10000 /* in all */
#define LW_QUERY_DEFAULT_MAX_PER_IP      64    /* from one client address */
#define LW_QUERY_DEFAULT_HEADER_TIMEOUT  10    /* s to send a request's headers */
#define LW_QUERY_DEFAULT_IDLE_TIMEOUT    30    /* s without any byte either way */

/* ---- Bearer tokens ------------------------------------------------------- */

typedef struct lw_tokens_s lw_tokens_t;

/* The institution of a token given alone on its line: the bureau's staff. */
#define LW_INSTITUTION_BUREAU "BUREAU"

/*
 * Loads a token file: one token per line, "TOKEN INSTITUTION_ID" (white
 * space between; the institution 1..64 characters of [A-Za-z0-9._-]), or
 * the token alone for the bureau's own staff (institution BUREAU). Look-ups
 * are recorded as inquiries of the token's institution. Blank lines and
 * lines starting with '#' ignored, surrounding white space trimmed. Refused (NULL, errstr
 * says why) when the file is readable or writable by group or others, when
 * it holds no token, when a token has characters outside RFC 6750's
 * b64token set, or when a token is shorter than lw_token_min_len() (under
 * 128 bits: e.g. fewer than 22 base64url or 32 hex characters). Only SHA-256
 * digests of the tokens are kept in memory.
 */
lw_tokens_t *lw_tokens_load(const char *path, char *errstr, size_t errstr_size);
/* The length a token of tok's character classes needs for 128 bits. */
size_t lw_token_min_len(const char *tok, size_t len);
size_t lw_tokens_count(const lw_tokens_t *tk);
/* True when authorization is "Bearer <token>" for a known token. Compares
 * digests of every known token in constant time (no early exit). */
bool lw_tokens_check(const lw_tokens_t *tk, const char *authorization);
/* The institution owning the token in authorization (same constant-time
 * comparison), or NULL when it is no known token. */
const char *lw_tokens_institution(const lw_tokens_t *tk, const char *authorization);
void lw_tokens_destroy(lw_tokens_t *tk); /* NULL is fine */

/* ---- Routing and parameters --------------------------------------------- */

typedef enum lw_route {
    LW_ROUTE_NOT_FOUND = 0,
    LW_ROUTE_EXPOSURE, /* borrower_id filled, or *bad_id set */
    LW_ROUTE_ALERTS,
    LW_ROUTE_HEALTHZ,
    LW_ROUTE_METRICS,
} lw_route_t;

/* Maps a request path (no query string) to a route. For the exposure path
 * borrower_id receives the id when well-formed; *bad_id is set otherwise. */
lw_route_t lw_query_route(const char *path, char borrower_id[LW_BORROWER_ID_LEN + 1], bool *bad_id);

typedef struct lw_alerts_params {
    bool has_since;
    bool since_exclusive; /* since was a stream id: start after it */
    char since_id[48];    /* "<ms>-<seq>" */
    int since_stream;     /* the ":<slot>" of a cluster's stream_id, else -1 */
    bool has_rule;
    char rule[LW_ID_MAX + 1];
    int limit;
} lw_alerts_params_t;

/* Parses the /v1/alerts query parameters (NULL when absent). since is either
 * milliseconds (inclusive, on the stream id's time) or a stream id
 * "<ms>-<seq>" or, as a cluster gives them, "<ms>-<seq>:<slot>" (exclusive).
 * limit is 1..LW_QUERY_ALERTS_MAX. */
lw_err_t lw_alerts_params_parse(const char *since, const char *rule, const char *limit,
                                lw_alerts_params_t *out, char *errstr, size_t errstr_size);

/* ---- Rendering ----------------------------------------------------------- */

/* How long one request waits out a Redis failure (a failover) before 503. */
#define LW_QUERY_REDIS_RETRY_MS 6000

/* The reader's Redis handle: the URL of a single Redis (AUTH, SELECT of its
 * database) or of any node of a Redis Cluster (detected, slot map loaded);
 * 2 s per connect, read or write. The caller frees it (lw_rcluster_destroy). */
lw_rcluster_t *lw_query_redis_connect(const lw_redis_url_t *url, char *errstr, size_t errstr_size);

/*
 * The exposure document of one borrower as a malloc'd JSON string (caller
 * frees). *found false and *json NULL for an unknown borrower.
 * LW_ERR_INVALID_ARG for a malformed id, LW_ERR_REDIS when Redis fails.
 */
lw_err_t lw_query_exposure_json(lw_rcluster_t *cl, const char *borrower_id, char **json,
                                bool *found, char *errstr, size_t errstr_size);
/*
 * The same document from a state already read (lw_state_read or
 * lw_state_read_many, found): *st is taken over and cleared, read or not;
 * cl is only read for the open alerts' JSON (one HMGET when there are any).
 */
lw_err_t lw_query_exposure_render(lw_rcluster_t *cl, const char *borrower_id,
                                  lw_borrower_state_t *st, char **json, char *errstr,
                                  size_t errstr_size);

/* Recent alerts from the stream as a JSON array (malloc'd), oldest first. On
 * a cluster the per-slot streams are merged by entry id (loanwire/streams.h)
 * and each stream_id carries its slot: "<ms>-<seq>:<slot>". */
lw_err_t lw_query_alerts_json(lw_rcluster_t *cl, const lw_alerts_params_t *p, char **json,
                              char *errstr, size_t errstr_size);

/* The query service's own request counters, by HTTP status, and the time
 * from a request's first byte to its answer completed (a histogram). */
#define LW_QUERY_STATUS_SLOTS 10
#define LW_QUERY_LAT_BUCKETS  12 /* the last one is +Inf */
typedef struct lw_query_counts {
    uint64_t by_status[LW_QUERY_STATUS_SLOTS];
    uint64_t lat_bucket[LW_QUERY_LAT_BUCKETS]; /* not cumulative: one slot per request */
    uint64_t lat_sum_us;
} lw_query_counts_t;
/* Status codes the slots count ("other" last). */
extern const int lw_query_status_codes[LW_QUERY_STATUS_SLOTS];
int lw_query_status_slot(int status);
/* Upper bounds of the latency buckets, microseconds (the last: INT64_MAX). */
extern const int64_t lw_query_lat_bounds_us[LW_QUERY_LAT_BUCKETS];
int lw_query_lat_slot(int64_t us);

/*
 * /metrics: this process's own figures only (build_info, requests by status,
 * request latency), Prometheus text, malloc'd; NULL when out of memory. The
 * consumers' figures are not here any more: each loanwire-exposure serves
 * its own (--metrics-listen), so a consumer that stops no longer makes sums
 * drop. A 503 counted here is always Redis failing.
 */
char *lw_query_metrics_render(const lw_query_counts_t *counts);

/* ---- Server -------------------------------------------------------------- */

/* The purpose= of an exposure look-up: one of lw_purpose_syms; -1 when
 * missing or unknown (400). */
int lw_query_purpose_parse(const char *s);

typedef struct lw_query_conf {
    char host[64]; /* numeric address to bind */
    int port;      /* 0: any free port (see lw_query_port) */
    const char *redis_url;
    const char *tokens_path; /* NULL only with no_auth */
    bool no_auth;            /* data endpoints open: development only */
    int threads;
    int max_connections;         /* open connections in all (MHD refuses more) */
    int max_per_ip;              /* open connections from one client address */
    int header_timeout;          /* seconds from connect, or from the previous answer on
                                    a kept-alive connection, until the request's headers
                                    are complete; then the connection is closed */
    int idle_timeout;            /* seconds without a byte received or sent */
    const char *web_dir;         /* the dashboard's files; NULL: beside the binary
                                    (<bin>/../share/loanwire/web) */
    bool cookie_secure;          /* the session cookie says Secure (behind HTTPS) */
    const char *brokers;         /* Kafka for the inquiry records; NULL: the default */
    const char *inquiries_topic; /* NULL: LW_TOPIC_INQUIRIES */
} lw_query_conf_t;

void lw_query_conf_init(lw_query_conf_t *conf);

typedef struct lw_query_s lw_query_t;

/* Loads tokens, checks the Redis URL and starts serving. */
lw_query_t *lw_query_start(const lw_query_conf_t *conf, char *errstr, size_t errstr_size);
int lw_query_port(const lw_query_t *q); /* the port actually bound */
void lw_query_counts_get(lw_query_t *q, lw_query_counts_t *out);
void lw_query_stop(lw_query_t *q); /* NULL is fine; stops and frees */

#ifdef __cplusplus
}
#endif
#endif /* LOANWIRE_QUERY_H */
