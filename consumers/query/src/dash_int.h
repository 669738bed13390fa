/*
 * dash_int.h - the browser dashboard of loanwire-query, private to the
 * query library: its static page, sign-in sessions, the live alert feed
 * (Server-Sent Events) and the chart data.
 *
 * server.c calls into it at four points only (start, the request handler,
 * the authorisation check, stop), so the API's own code stays as it was:
 * the dashboard lives in dashboard.c, session.c and sse.c.
 */
#ifndef LOANWIRE_QUERY_DASH_INT_H
#define LOANWIRE_QUERY_DASH_INT_H

#include "loanwire/query.h"

#include <microhttpd.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define LW_DASH_COOKIE        "lw_session"
#define LW_DASH_SESSION_TTL_S (8 * 3600) /* a working day; then sign in again */
#define LW_DASH_SESSIONS_MAX  4096       /* the oldest goes when a new one needs room */

/* ---- Sessions (session.c) ------------------------------------------------ */

typedef struct lw_sessions_s lw_sessions_t;

lw_sessions_t *lw_sessions_new(void);
void lw_sessions_free(lw_sessions_t *s); /* NULL is fine */
/* Makes a session and writes its id (64 hex characters + NUL) to id. Only
 * the id's SHA-256 is kept, as for tokens. False when no random bytes. */
bool lw_sessions_create(lw_sessions_t *s, char id[65]);
/* True when the Cookie header value holds a live session's id. */
bool lw_sessions_check(lw_sessions_t *s, const char *cookie_header);
/* Ends the session named in the Cookie header, if any. */
void lw_sessions_end(lw_sessions_t *s, const char *cookie_header);
/* The value of cookie name in a Cookie header into out; false when absent. */
bool lw_cookie_get(const char *header, const char *name, char *out, size_t out_size);

/* ---- Live feed (sse.c) --------------------------------------------------- */

typedef struct lw_feed_s lw_feed_t;

/* Starts the thread that follows the alert stream and samples the
 * consumers' event rate. NULL (errstr says why) when the thread cannot
 * start; Redis being down is not an error (it retries). */
lw_feed_t *lw_feed_start(const lw_redis_url_t *url, char *errstr, size_t errstr_size);
/* Resumes every suspended stream so it ends, then stops the thread. Call
 * before MHD_stop_daemon: MHD must not be stopped with connections
 * suspended. */
void lw_feed_shutdown(lw_feed_t *f);
void lw_feed_free(lw_feed_t *f); /* after MHD_stop_daemon; NULL is fine */
/* The text/event-stream response for one browser (NULL: out of memory). */
struct MHD_Response *lw_feed_response(lw_feed_t *f, struct MHD_Connection *conn);
/* The chart data as JSON (malloc'd): alerts per minute by rule over the
 * last hour, and the consumers' summed events_per_s samples. */
char *lw_feed_stats_json(lw_feed_t *f);

/* ---- The dashboard (dashboard.c) ----------------------------------------- */

typedef struct lw_dash_s lw_dash_t;

/* web_dir NULL: <directory of the executable>/../share/loanwire/web, which
 * is the build tree's copy and the installed one alike. Missing assets do
 * not stop the API: the page answers 503 and a warning says where it looked. */
lw_dash_t *lw_dash_new(const char *web_dir, bool cookie_secure, const lw_redis_url_t *redis,
                       char *errstr, size_t errstr_size);
void lw_dash_shutdown(lw_dash_t *d); /* before MHD_stop_daemon */
void lw_dash_free(lw_dash_t *d);     /* after it; NULL is fine */

/* True for the paths the dashboard answers, and the methods it takes there
 * (POST only for signing in and out). */
bool lw_dash_owns(const char *path);
bool lw_dash_method_ok(const char *path, const char *method);
/* True when the request carries a live session cookie. */
bool lw_dash_session_ok(lw_dash_t *d, struct MHD_Connection *conn);

/*
 * Answers a dashboard request. authed: a valid bearer token, or a live
 * session, or --no-auth; bearer: the request itself carried a valid bearer
 * token (signing in takes nothing else); rc: the thread's Redis handle (one
 * Redis or a cluster) when lw_dash_needs_redis(path), else NULL. Returns the response to queue with
 * *status, and its body size in *bytes (0 for a stream); NULL when out of
 * memory.
 */
struct MHD_Response *lw_dash_handle(lw_dash_t *d, struct MHD_Connection *conn, const char *path,
                                    const char *method, bool authed, bool bearer, lw_rcluster_t *rc,
                                    int *status, size_t *bytes);
/* True when lw_dash_handle needs the thread's Redis context for path. */
bool lw_dash_needs_redis(const char *path);

/* The headers every answer of loanwire-query carries: a strict
 * Content-Security-Policy (no inline script or style, nothing from another
 * origin, no framing), nosniff and no Referer. */
void lw_dash_security_headers(struct MHD_Response *resp);

#endif /* LOANWIRE_QUERY_DASH_INT_H */
