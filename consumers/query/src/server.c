/*
 * server.c - the HTTP side of loanwire-query (libmicrohttpd).
 *
 * An internal thread pool serves connections; a worker thread makes its own
 * lw_rcluster handle on first use (thread-specific data, freed when the
 * thread ends): from the URL of a single Redis or any cluster node, it routes
 * every key to its slot's master and reopens a connection that broke, so a
 * handle lives as long as its thread. Only a handle that could not be made
 * (Redis down at the first request) is tried again by the next request.
 * Nothing here reads a body, so any request announcing one gets 413 on the
 * first call of the access handler; a request without one is answered on
 * the second (see lw_handle: answered on the first, this libmicrohttpd
 * closes the connection after every answer).
 * One access line per request goes to stderr when MHD reports completion.
 *
 * Slow clients (slowloris: many connections, each sending a header line now
 * and then) are held off three ways: MHD refuses more than max_per_ip
 * connections from one address and more than max_connections in all, and
 * a watchdog thread closes any connection whose request headers are not
 * complete header_timeout seconds after it opened (or after its previous
 * answer). MHD's own timeout is one of inactivity, which a byte every few
 * seconds resets for ever; the watchdog's deadline is not reset by
 * anything but a complete request.
 *
 * An exposure look-up is a credit inquiry (issue 20): it needs ?purpose=,
 * and is recorded on the inquiries topic (inquiry.c), confirmed by Kafka,
 * before Redis is read; a record Kafka does not confirm answers 503. While
 * Kafka confirms it the connection is suspended, not its thread. The
 * delivery thread takes the reports of a batch of records together: it
 * reads the borrowers of the confirmed look-ups from Redis in one pipelined
 * round trip, renders each answer, and resumes the connections; MHD calls
 * the handler again, which sends the answer. So all open connections'
 * records share batches, and their reads share round trips.
 */
#include "dash_int.h"
#include "query_int.h"
#include "loanwire/log.h"
#include "loanwire/query.h"

#include <arpa/inet.h>
#include <inttypes.h>
#include <jansson.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>

/* One open connection, for the header deadline. Linked in q->conns from
 * MHD's STARTED notification to its CLOSED one, which MHD sends before it
 * closes the socket: under conn_mu, fd is always still this connection's. */
typedef struct lw_conn {
    struct lw_conn *prev, *next;
    int fd;
    int64_t deadline_us; /* lw_mono_us() by which headers must be in; 0: none */
} lw_conn_t;

struct lw_query_s {
    struct MHD_Daemon *mhd;
    lw_redis_url_t redis;
    lw_tokens_t *tokens;
    bool no_auth;
    int port;
    pthread_key_t rc_key;
    _Atomic uint64_t counts[LW_QUERY_STATUS_SLOTS];
    _Atomic uint64_t lat[LW_QUERY_LAT_BUCKETS], lat_sum_us; /* for /metrics */
    int64_t header_timeout_us;
    pthread_mutex_t conn_mu;
    pthread_cond_t stop_cv;
    lw_conn_t conns; /* list head (a sentinel) */
    bool stopping;   /* under conn_mu */
    bool watchdog_started;
    pthread_t watchdog;
    _Atomic uint64_t header_timeouts; /* connections closed by the watchdog */
    lw_dash_t *dash;                  /* the browser dashboard (dashboard.c) */
    lw_inq_t *inq;                    /* the inquiry records (inquiry.c) */
    /* look-ups whose record Kafka answered, since the last batch end
     * (lw_inq_done adds, lw_inq_batch takes them) */
    pthread_mutex_t pend_mu;
    struct lw_req **pend, **pend_spare;
    size_t n_pend, cap_pend;
    /* the delivery thread's Redis handle and reader (lw_inq_batch only) */
    lw_rcluster_t *batch_rc;
    lw_state_reader_t *batch_reader;
    /* look-ups suspended for their record and not yet resumed; once closing
     * is set (lw_query_stop) no new one is suspended */
    atomic_int inq_open;
    atomic_bool inq_closing;
};

/* One per request, from the URI log callback to the completion callback. */
typedef struct lw_req {
    int64_t started_us;
    size_t uri_len;
    bool answered;
    int status;
    size_t bytes;
    char method[16];
    char path[256]; /* for the access log; never the query string */
    /* an exposure look-up's inquiry record: none, waiting for Kafka (the
     * connection suspended), or confirmed / failed (resumed) */
    enum { LW_INQ_NONE = 0, LW_INQ_WAITING, LW_INQ_DONE } inq;
    bool headers_seen; /* the first call (headers only) has run: see lw_handle */
    lw_err_t inq_err;
    struct MHD_Connection *conn;
    struct lw_query_s *q;
    char bid[LW_BORROWER_ID_LEN + 1];
    /* the answer, read by lw_inq_batch once Kafka confirmed the record:
     * its status, and the body (200) or the error's detail */
    int prep_status;
    char *prep_body;
    const char *prep_detail;
} lw_req_t;

static void lw_rc_free(void *p)
{
    lw_rcluster_destroy(p);
}

/* Sets the header deadline of the connection conn (0: none). */
static void lw_conn_deadline(lw_query_t *q, struct MHD_Connection *conn, int64_t deadline_us)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    lw_conn_t *c = ci ? ci->socket_context : NULL;

    if (!c)
        return;
    pthread_mutex_lock(&q->conn_mu);
    c->deadline_us = deadline_us;
    pthread_mutex_unlock(&q->conn_mu);
}

static void lw_notify_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                                 enum MHD_ConnectionNotificationCode code)
{
    lw_query_t *q = cls;
    lw_conn_t *c;

    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        if (!ci || !(c = calloc(1, sizeof *c)))
            return; /* untracked: MHD's idle timeout still applies */
        c->fd = ci->connect_fd;
        c->deadline_us = lw_mono_us() + q->header_timeout_us;
        pthread_mutex_lock(&q->conn_mu);
        c->next = q->conns.next;
        c->prev = &q->conns;
        q->conns.next->prev = c;
        q->conns.next = c;
        pthread_mutex_unlock(&q->conn_mu);
        *socket_context = c;
    } else if (code == MHD_CONNECTION_NOTIFY_CLOSED && (c = *socket_context) != NULL) {
        pthread_mutex_lock(&q->conn_mu);
        c->prev->next = c->next;
        c->next->prev = c->prev;
        pthread_mutex_unlock(&q->conn_mu);
        free(c);
        *socket_context = NULL;
    }
}

/* Closes connections past their header deadline. shutdown(), not close():
 * the socket stays MHD's, which sees the end of the stream on its next read
 * and closes and forgets the connection the usual way. */
static void *lw_watchdog(void *arg)
{
    lw_query_t *q = arg;

    pthread_mutex_lock(&q->conn_mu);
    while (!q->stopping) {
        struct timespec ts;
        int64_t now = lw_mono_us();
        uint64_t n = 0;

        for (lw_conn_t *c = q->conns.next; c != &q->conns; c = c->next) {
            if (c->deadline_us && now > c->deadline_us) {
                shutdown(c->fd, SHUT_RDWR);
                c->deadline_us = 0;
                n++;
            }
        }
        if (n)
            atomic_fetch_add(&q->header_timeouts, n);
        /* 100 ms: the deadline is in seconds; a scan of 10,000 entries costs
         * a few microseconds. */
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_nsec += 100 * 1000 * 1000;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&q->stop_cv, &q->conn_mu, &ts);
    }
    pthread_mutex_unlock(&q->conn_mu);
    return NULL;
}

/* MHD's own messages (a refused connection over a limit, among others)
 * through lw_warn, at most 10 a second: under a flood of connections they
 * would otherwise fill the log as fast as the flood comes. */
static void lw_mhd_log(void *cls, const char *fmt, va_list ap)
{
    static _Atomic int64_t window;
    static _Atomic int in_window;
    int64_t sec = lw_mono_us() / 1000000;
    char msg[512];
    size_t n;

    if (atomic_exchange(&window, sec) != sec)
        atomic_store(&in_window, 0);
    if (atomic_fetch_add(&in_window, 1) >= 10)
        return;
    vsnprintf(msg, sizeof msg, fmt, ap);
    n = strlen(msg);
    while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = '\0';
    lw_warn("http: %s", msg);
}

/* This thread's Redis handle, made when there is none. */
static lw_rcluster_t *lw_thread_redis(lw_query_t *q, char *errstr, size_t errstr_size)
{
    lw_rcluster_t *cl = pthread_getspecific(q->rc_key);
    if (cl)
        return cl;
    cl = lw_query_redis_connect(&q->redis, errstr, errstr_size);
    if (cl)
        pthread_setspecific(q->rc_key, cl);
    return cl;
}

/* /healthz: PING on every master, all at once. On a cluster "up" means every
 * master answered: a master down is a part of the borrowers unreadable. */
typedef struct lw_ping {
    int masters, up;
    char why[256];
} lw_ping_t;

static void lw_ping_cb(void *opaque, int master, const char *host, int port, const redisReply *r,
                       lw_rcluster_err_t err)
{
    lw_ping_t *pg = opaque;
    (void)master;
    pg->masters++;
    if (r && r->type == REDIS_REPLY_STATUS && strcmp(r->str, "PONG") == 0) {
        pg->up++;
        return;
    }
    if (!pg->why[0])
        snprintf(pg->why, sizeof pg->why, "%s:%d: %s", host, port,
                 r && r->type == REDIS_REPLY_ERROR ? r->str
                 : r                               ? "bad reply"
                                                   : lw_rcluster_err2str(err));
}

static enum MHD_Result lw_respond(lw_query_t *q, lw_req_t *req, struct MHD_Connection *conn,
                                  int status, const char *ctype, char *body, bool owned)
{
    struct MHD_Response *resp;
    enum MHD_Result ret;
    size_t len = strlen(body);

    resp = MHD_create_response_from_buffer(len, body,
                                           owned ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_MUST_COPY);
    if (!resp) {
        if (owned)
            free(body);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    lw_dash_security_headers(resp);
    if (status == 401)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE,
                                "Bearer realm=\"loanwire\"");
    if (status == 405)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, "GET");
    if (status == 413)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
    ret = MHD_queue_response(conn, (unsigned)status, resp);
    MHD_destroy_response(resp);
    req->answered = true;
    req->status = status;
    req->bytes = len;
    atomic_fetch_add(&q->counts[lw_query_status_slot(status)], 1);
    return ret;
}

static enum MHD_Result lw_respond_error(lw_query_t *q, lw_req_t *req, struct MHD_Connection *conn,
                                        int status, const char *error, const char *detail)
{
    json_t *o = json_pack("{s:s, s:s}", "error", error, "detail", detail ? detail : "");
    char *body = o ? json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(o);
    if (!body)
        return lw_respond(q, req, conn, status, "application/json",
                          (char *)"{\"error\":\"internal\"}", false);
    return lw_respond(q, req, conn, status, "application/json", body, true);
}

static bool lw_has_body(struct MHD_Connection *conn)
{
    const char *cl =
        MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    const char *te =
        MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_TRANSFER_ENCODING);
    if (te)
        return true;
    if (!cl)
        return false;
    for (const char *c = cl; *c; c++)
        if (*c != '0' && *c != ' ')
            return true;
    return false;
}

/* Query parameters other than the known ones are a client mistake. */
static enum MHD_Result lw_count_unknown(void *cls, enum MHD_ValueKind kind, const char *key,
                                        const char *value)
{
    int *unknown = cls;
    if (strcmp(key, "since") != 0 && strcmp(key, "rule") != 0 && strcmp(key, "limit") != 0)
        (*unknown)++;
    return MHD_YES;
}

/* Adds up the bytes of the header lines as MHD parsed them. */
static enum MHD_Result lw_sum_header(void *cls, enum MHD_ValueKind kind, const char *key,
                                     size_t key_size, const char *value, size_t value_size)
{
    size_t *sum = cls;
    *sum += key_size + 2 + value_size + 2; /* "key: value\r\n" */
    return MHD_YES;
}

/*
 * False when the request's header section holds bytes its parsed lines do
 * not account for. This libmicrohttpd (0.9.75) ends a header value at a NUL
 * byte and drops the rest of the line, so "Authorization: Bearer <token>\0junk"
 * reached us as "Bearer <token>" while a proxy in front may have seen (and
 * judged) another value; nothing in its API shows the NUL. What it does give
 * is the exact size of the header section, which must then be at most the
 * request line plus "key: value\r\n" per header plus the closing CRLF. The
 * price: more than one space after a colon, or after the method or URI, is
 * refused too; HTTP clients send one.
 */
static bool lw_header_bytes_ok(struct MHD_Connection *conn, const lw_req_t *req, const char *method,
                               const char *version)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_REQUEST_HEADER_SIZE);
    size_t want = strlen(method) + 1 + req->uri_len + 1 + strlen(version) + 2 + 2;

    if (!ci)
        return true; /* cannot tell: the request line and headers are as parsed */
    MHD_get_connection_values_n(conn, MHD_HEADER_KIND, lw_sum_header, &want);
    return ci->header_size <= want;
}

/* Copies s for a log line: no query string, no control characters. */
static void lw_log_safe(char *out, size_t cap, const char *s)
{
    size_t j = 0;
    for (; s && *s && *s != '?' && j + 1 < cap; s++)
        out[j++] = (*s < 0x20 || *s == 0x7f || *s == '"') ? '?' : *s;
    out[j] = '\0';
}

/* A dashboard path (dashboard.c): the same authorisation as the API (a
 * bearer token, or the session cookie the token was exchanged for), the
 * same counting and access log. */
static enum MHD_Result lw_dash_answer(lw_query_t *q, lw_req_t *req, struct MHD_Connection *conn,
                                      const char *url, const char *method)
{
    bool bearer =
        q->no_auth ||
        lw_tokens_check(q->tokens, MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                                               MHD_HTTP_HEADER_AUTHORIZATION));
    bool authed = bearer || lw_dash_session_ok(q->dash, conn);
    lw_rcluster_t *rc = NULL;
    struct MHD_Response *resp;
    enum MHD_Result ret;
    char errstr[512];
    int status = 500;
    size_t bytes = 0;

    if (authed && lw_dash_needs_redis(url) && !(rc = lw_thread_redis(q, errstr, sizeof errstr)))
        lw_warn("redis: %s", errstr);
    resp = lw_dash_handle(q->dash, conn, url, method, authed, bearer, rc, &status, &bytes);
    if (!resp)
        return lw_respond_error(q, req, conn, 500, "internal", "out of memory");
    lw_dash_security_headers(resp);
    if (status == 401)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE,
                                "Bearer realm=\"loanwire\"");
    ret = MHD_queue_response(conn, (unsigned)status, resp);
    MHD_destroy_response(resp);
    req->answered = true;
    req->status = status;
    req->bytes = bytes;
    atomic_fetch_add(&q->counts[lw_query_status_slot(status)], 1);
    return ret;
}

/* The inquiry record's delivery report (inquiry.c's thread): notes it in
 * the request and keeps the request for the end of the batch of reports
 * (lw_inq_batch), which reads Redis and resumes the connection. */
static void lw_inq_done(void *opaque, lw_err_t err, const char *why)
{
    lw_req_t *req = opaque;
    lw_query_t *q = req->q;

    if (err != LW_OK)
        lw_warn("exposure look-up: inquiry not recorded: %s", why);
    req->inq_err = err;
    pthread_mutex_lock(&q->pend_mu);
    if (q->n_pend == q->cap_pend) {
        size_t cap = q->cap_pend ? 2 * q->cap_pend : 256;
        lw_req_t **a = realloc(q->pend, cap * sizeof *a), **b = NULL;
        if (a) {
            q->pend = a;
            if ((b = realloc(q->pend_spare, cap * sizeof *b)))
                q->pend_spare = b;
        }
        if (!a || !b) { /* out of memory: answered alone, unread */
            pthread_mutex_unlock(&q->pend_mu);
            req->prep_status = 503;
            req->prep_detail = "out of memory";
            req->inq = LW_INQ_DONE;
            atomic_fetch_sub(&q->inq_open, 1);
            MHD_resume_connection(req->conn);
            return;
        }
        q->cap_pend = cap;
    }
    q->pend[q->n_pend++] = req;
    pthread_mutex_unlock(&q->pend_mu);
}

/*
 * The end of a batch of reports (inquiry.c's delivery thread): the
 * borrowers of every confirmed look-up are read from Redis in one
 * lw_state_read_many (one round trip per master, whatever their number),
 * each answer is rendered and kept in its request, and the connections
 * are resumed; the server thread that picks one up only sends it.
 *
 * Why here and not in the server threads, after the resume: a report
 * confirms a whole batch of records at once (linger.ms), and the look-ups
 * it resumed then each read Redis in turn, two blocking round trips each on
 * 4 server threads, behind the others of the batch. Measured with 64
 * connections: p50 2.4 ms from report to resumed and 2.4 ms more to the
 * answer sent, p99 35-40 ms each on the busy 2-core machine.
 */
static void lw_inq_batch(void *opaque)
{
    lw_query_t *q = opaque;
    lw_req_t **reqs;
    size_t n, n_ok = 0;
    char errstr[512];
    const char *why = NULL;

    pthread_mutex_lock(&q->pend_mu);
    reqs = q->pend;
    n = q->n_pend;
    q->pend = q->pend_spare;
    q->pend_spare = reqs;
    q->n_pend = 0;
    pthread_mutex_unlock(&q->pend_mu);
    if (n == 0)
        return;

    const char **ids = malloc(n * sizeof *ids);
    lw_borrower_state_t *st = calloc(n, sizeof *st);
    bool *found = calloc(n, sizeof *found);
    size_t *which = malloc(n * sizeof *which);
    if (!ids || !st || !found || !which)
        why = "out of memory";
    for (size_t i = 0; !why && i < n; i++)
        if (reqs[i]->inq_err == LW_OK) {
            which[n_ok] = i;
            ids[n_ok++] = reqs[i]->bid;
        }
    if (!why && n_ok > 0) {
        if (!q->batch_rc &&
            (q->batch_rc = lw_query_redis_connect(&q->redis, errstr, sizeof errstr)) != NULL &&
            !(q->batch_reader = lw_state_reader_new(q->batch_rc, 0))) {
            lw_rcluster_destroy(q->batch_rc);
            q->batch_rc = NULL;
            snprintf(errstr, sizeof errstr, "out of memory");
        }
        if (!q->batch_rc) {
            lw_warn("redis: %s", errstr);
            why = "Redis is not reachable";
        } else if (lw_state_read_many(q->batch_reader, ids, n_ok, st, found, errstr,
                                      sizeof errstr) != LW_OK) {
            lw_warn("exposure look-ups (%zu): %s", n_ok, errstr);
            why = "Redis read failed";
        }
    }
    for (size_t k = 0; k < n_ok; k++) {
        lw_req_t *req = reqs[which[k]];
        req->prep_status = 503;
        req->prep_detail = why ? why : "Redis read failed";
        if (why) {
            lw_borrower_state_clear(&st[k]);
        } else if (!found[k]) {
            req->prep_status = 404;
            req->prep_detail = "unknown borrower";
            lw_borrower_state_clear(&st[k]);
        } else if (lw_query_exposure_render(q->batch_rc, req->bid, &st[k], &req->prep_body, errstr,
                                            sizeof errstr) == LW_OK) {
            req->prep_status = 200;
        } else {
            lw_warn("exposure %s: %s", req->bid, errstr);
        }
    }
    if (why && n_ok == 0) /* out of memory before the look-ups were even listed */
        for (size_t i = 0; i < n; i++) {
            reqs[i]->prep_status = 503;
            reqs[i]->prep_detail = why;
        }
    free(ids);
    free(st);
    free(found);
    free(which);
    for (size_t i = 0; i < n; i++) {
        reqs[i]->inq = LW_INQ_DONE;
        atomic_fetch_sub(&q->inq_open, 1);
        MHD_resume_connection(reqs[i]->conn); /* the request is MHD's again */
    }
}

/* GET /v1/borrowers/{id}/exposure?purpose=P: the look-up is recorded as an
 * inquiry of institution, and nothing is answered until Kafka confirmed the
 * record; an unknown borrower is looked up, and recorded, too. Called
 * twice: to send the record (the connection then waits suspended), and
 * once resumed by lw_inq_batch, which has read the answer: it is sent, or
 * 503 when the record was not confirmed (Redis was then not read). */
static enum MHD_Result lw_exposure_answer(lw_query_t *q, lw_req_t *req, struct MHD_Connection *conn,
                                          const char *bid, const char *institution)
{
    char errstr[512];

    if (req->inq == LW_INQ_NONE) {
        int purpose = lw_query_purpose_parse(
            MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "purpose"));
        if (purpose < 0)
            return lw_respond_error(q, req, conn, 400, "bad_request",
                                    "purpose= is required: LOAN_APPROVAL, CREDIT_CARD_APPROVAL, "
                                    "GUARANTEE_REVIEW, POST_LOAN_MANAGEMENT or BORROWER_REQUEST");
        /* counted before closing is read: lw_query_stop sets closing, then
         * waits for the count to reach 0, so a look-up either is waited for
         * or sees closing and is not suspended */
        atomic_fetch_add(&q->inq_open, 1);
        if (atomic_load(&q->inq_closing)) {
            atomic_fetch_sub(&q->inq_open, 1);
            return lw_respond_error(q, req, conn, 503, "unavailable", "the server is stopping");
        }
        snprintf(req->bid, sizeof req->bid, "%s", bid);
        /* suspended before the record goes: its report may come at once */
        req->conn = conn;
        req->q = q;
        req->inq = LW_INQ_WAITING;
        MHD_suspend_connection(conn);
        if (lw_inq_send(q->inq, bid, institution, (lw_inquiry_purpose_t)purpose, lw_inq_done, req,
                        errstr, sizeof errstr) != LW_OK) {
            lw_warn("exposure %s: %s", bid, errstr);
            req->inq_err = LW_ERR_TRANSIENT;
            req->inq = LW_INQ_DONE;
            atomic_fetch_sub(&q->inq_open, 1);
            MHD_resume_connection(conn);
        }
        return MHD_YES;
    }
    if (req->inq == LW_INQ_WAITING)
        return MHD_YES; /* cannot happen: the connection is suspended until the report */
    if (req->inq_err != LW_OK)
        return lw_respond_error(q, req, conn, 503, "unavailable",
                                "the inquiry could not be recorded (Kafka); nothing is answered "
                                "unrecorded");
    if (req->prep_status == 200 && req->prep_body) {
        char *body = req->prep_body;
        req->prep_body = NULL; /* lw_respond frees it */
        return lw_respond(q, req, conn, 200, "application/json", body, true);
    }
    if (req->prep_status == 404)
        return lw_respond_error(q, req, conn, 404, "not_found", req->prep_detail);
    return lw_respond_error(q, req, conn, 503, "unavailable",
                            req->prep_detail ? req->prep_detail : "Redis read failed");
}

static enum MHD_Result lw_handle(void *cls, struct MHD_Connection *conn, const char *url,
                                 const char *method, const char *version, const char *upload_data,
                                 size_t *upload_data_size, void **con_cls)
{
    lw_query_t *q = cls;
    lw_req_t *req = *con_cls;
    char bid[LW_BORROWER_ID_LEN + 1], errstr[512], *body = NULL;
    bool bad_id, authed;
    lw_route_t route;
    lw_rcluster_t *rc;
    lw_err_t err;

    if (!req) /* no URI callback ran: cannot happen, refuse rather than crash */
        return MHD_NO;
    if (req->answered) {
        *upload_data_size = 0; /* discard a body that still arrives */
        return MHD_YES;
    }
    lw_conn_deadline(q, conn, 0); /* the headers are complete */
    lw_log_safe(req->method, sizeof req->method, method);
    lw_log_safe(req->path, sizeof req->path, url);
    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 &&
        !(lw_dash_owns(url) && lw_dash_method_ok(url, method)))
        return lw_respond_error(q, req, conn, 405, "method_not_allowed", "only GET is served");
    if (lw_has_body(conn) || *upload_data_size > 0)
        return lw_respond_error(q, req, conn, 413, "payload_too_large",
                                "request bodies are not accepted");
    if (req->uri_len > LW_QUERY_MAX_URL)
        return lw_respond_error(q, req, conn, 414, "uri_too_long", "request URI too long");
    if (!lw_header_bytes_ok(conn, req, method, version))
        return lw_respond_error(q, req, conn, 400, "bad_request",
                                "malformed header line (a NUL byte, or more than one space "
                                "after a colon)");
    /* RFC 9112 3.2: a server MUST answer 400 to an HTTP/1.1 request without
     * Host; MHD (at its default strictness) lets it through. */
    if (strcmp(version, MHD_HTTP_VERSION_1_1) == 0 &&
        !MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_HOST))
        return lw_respond_error(q, req, conn, 400, "bad_request",
                                "an HTTP/1.1 request needs a Host header");

    if (lw_dash_owns(url))
        return lw_dash_answer(q, req, conn, url, method);
    /* An API request is answered on MHD's second call, the one after the
     * (empty) body, not on the first: this libmicrohttpd (0.9.75) takes a
     * response queued on the first call as an early answer to a request
     * whose body it has not read, and closes the connection after it
     * ("Connection: close" on every answer). Each look-up then cost a TCP
     * connection (accept, close, shutdown: 10 % of the CPU in perf), and
     * wrk's 64 reconnecting clients ran into MHD's per-IP limit, which
     * counts a closed connection until MHD has cleaned it up (thousands
     * of refused connections a second). Errors above are answered at once
     * and close, as they should. */
    if (!req->headers_seen) {
        req->headers_seen = true;
        return MHD_YES;
    }
    route = lw_query_route(url, bid, &bad_id);
    if (route == LW_ROUTE_NOT_FOUND)
        return lw_respond_error(q, req, conn, 404, "not_found", "no such path");
    /* the institution the look-up is recorded for: the token's owner; the
     * bureau's for --no-auth and the dashboard's sign-in cookie (its staff) */
    const char *institution = lw_tokens_institution(
        q->tokens,
        MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION));
    authed = q->no_auth || institution != NULL;
    authed = authed || lw_dash_session_ok(q->dash, conn); /* the dashboard's sign-in cookie */
    if (!institution)
        institution = LW_INSTITUTION_BUREAU;
    if ((route == LW_ROUTE_EXPOSURE || route == LW_ROUTE_ALERTS) && !authed)
        return lw_respond_error(q, req, conn, 401, "unauthorized",
                                "a valid bearer token is required");
    if (route == LW_ROUTE_EXPOSURE && bad_id)
        return lw_respond_error(q, req, conn, 400, "bad_request",
                                "borrower_id must be 22 base64url characters");
    if (route == LW_ROUTE_EXPOSURE)
        return lw_exposure_answer(q, req, conn, bid, institution);

    rc = lw_thread_redis(q, errstr, sizeof errstr);
    if (!rc) {
        lw_warn("redis: %s", errstr);
        if (route == LW_ROUTE_HEALTHZ) {
            /* Redis's address and error only for a caller with a token:
             * /healthz is open to anyone who can reach the port. */
            json_t *o = authed ? json_pack("{s:s, s:s}", "status", "down", "error", errstr)
                               : json_pack("{s:s}", "status", "down");
            body = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
            json_decref(o);
            return body ? lw_respond(q, req, conn, 503, "application/json", body, true) : MHD_NO;
        }
        return lw_respond_error(q, req, conn, 503, "unavailable", "Redis is not reachable");
    }

    switch (route) {
    case LW_ROUTE_HEALTHZ: {
        static const char *ping[] = {"PING"};
        static const size_t pingl[] = {4};
        lw_ping_t pg = {0, 0, ""};
        int64_t t0 = lw_mono_us();
        lw_rcluster_err_t ce =
            lw_rcluster_on_masters(rc, 1, ping, pingl, lw_ping_cb, &pg, errstr, sizeof errstr);
        bool ok = ce == LW_RCLUSTER_OK && pg.masters > 0 && pg.up == pg.masters;
        if (!ok && lw_rcluster_is_cluster(rc)) {
            /* This thread's map may predate a failover (a request that found
             * no dead master since never reloaded it): reload and ask again,
             * so a probe says down only for a master that is down now. */
            lw_rcluster_refresh(rc, NULL, 0);
            pg = (lw_ping_t){0, 0, ""};
            t0 = lw_mono_us();
            ce = lw_rcluster_on_masters(rc, 1, ping, pingl, lw_ping_cb, &pg, errstr, sizeof errstr);
            ok = ce == LW_RCLUSTER_OK && pg.masters > 0 && pg.up == pg.masters;
        }
        int64_t rtt = lw_mono_us() - t0;
        const char *why = pg.why[0] ? pg.why : ce ? errstr : "no master";
        json_t *o = !authed ? json_pack("{s:s}", "status", ok ? "up" : "down")
                    : ok ? json_pack("{s:s, s:I}", "status", "up", "redis_rtt_us", (json_int_t)rtt)
                         : json_pack("{s:s, s:s}", "status", "down", "error", why);
        if (!ok)
            lw_warn("healthz: redis: %s", why);
        body = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
        json_decref(o);
        return body ? lw_respond(q, req, conn, ok ? 200 : 503, "application/json", body, true)
                    : MHD_NO;
    }
    case LW_ROUTE_METRICS: {
        lw_query_counts_t counts;
        lw_query_counts_get(q, &counts);
        if (!(body = lw_query_metrics_render(&counts)))
            return lw_respond_error(q, req, conn, 500, "internal", "out of memory");
        return lw_respond(q, req, conn, 200, "text/plain; version=0.0.4; charset=utf-8", body,
                          true);
    }
    case LW_ROUTE_ALERTS: {
        lw_alerts_params_t p;
        int unknown = 0;
        MHD_get_connection_values(conn, MHD_GET_ARGUMENT_KIND, lw_count_unknown, &unknown);
        if (unknown)
            return lw_respond_error(q, req, conn, 400, "bad_request",
                                    "unknown query parameter (known: since, rule, limit)");
        err = lw_alerts_params_parse(
            MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "since"),
            MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "rule"),
            MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "limit"), &p, errstr,
            sizeof errstr);
        if (err != LW_OK)
            return lw_respond_error(q, req, conn, 400, "bad_request", errstr);
        err = lw_query_alerts_json(rc, &p, &body, errstr, sizeof errstr);
        if (err != LW_OK) {
            lw_warn("alerts: %s", errstr);
            return lw_respond_error(q, req, conn, 503, "unavailable", "Redis read failed");
        }
        return lw_respond(q, req, conn, 200, "application/json", body, true);
    }
    default:
        return lw_respond_error(q, req, conn, 404, "not_found", "no such path");
    }
}

/* Runs first for every request: starts its clock and notes the URI length
 * (MHD hands the access handler the path without the query string). */
static void *lw_uri_log(void *cls, const char *uri, struct MHD_Connection *conn)
{
    lw_req_t *req = calloc(1, sizeof *req);
    if (req) {
        req->started_us = lw_mono_us();
        req->uri_len = uri ? strlen(uri) : 0;
    }
    return req;
}

/* One line per request, at every log level (an access log is not a debug
 * aid). With --log-format json it is a JSON object like every other line, so
 * a log shipper reading JSON meets no line of another shape. */
static void lw_access_log(const char *addr, const char *meth, const char *path, int status,
                          size_t bytes, int64_t took_us, bool aborted)
{
    if (lw_log_get_format() != LW_LOG_JSON) {
        fprintf(stderr, "ACCESS %s \"%s %s\" %d %zu %" PRId64 "us%s\n", addr, meth, path, status,
                bytes, took_us, aborted ? " aborted" : "");
        return;
    }
    char st[16], by[24], us[24], line[1024];
    snprintf(st, sizeof st, "%d", status);
    snprintf(by, sizeof by, "%zu", bytes);
    snprintf(us, sizeof us, "%" PRId64, took_us);
    const char *kv[] = {"client",
                        addr,
                        "method",
                        meth,
                        "path",
                        path,
                        "status",
                        st,
                        "bytes",
                        by,
                        "took_us",
                        us,
                        aborted ? "aborted" : NULL,
                        "true",
                        NULL};
    size_t n = lw_log_format_line(LW_LOG_JSON, lw_now_ms(), LW_LOG_INFO, "loanwire-query", kv,
                                  "access", line, sizeof line);
    fwrite(line, 1, n, stderr);
}

static void lw_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    lw_query_t *q = cls;
    lw_req_t *req = *con_cls;
    const union MHD_ConnectionInfo *ci;
    char addr[INET6_ADDRSTRLEN + 8] = "-", path[256], meth[16];

    if (!req)
        return;
    ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    if (ci && ci->client_addr) {
        const struct sockaddr *sa = ci->client_addr;
        if (sa->sa_family == AF_INET)
            inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, addr, sizeof addr);
        else if (sa->sa_family == AF_INET6)
            inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, addr, sizeof addr);
    }
    lw_log_safe(path, sizeof path, req->path);
    lw_log_safe(meth, sizeof meth, req->method);
    int64_t took_us = lw_mono_us() - req->started_us;
    atomic_fetch_add(&q->lat[lw_query_lat_slot(took_us)], 1);
    atomic_fetch_add(&q->lat_sum_us, (uint64_t)(took_us > 0 ? took_us : 0));
    lw_access_log(addr, meth, path, req->answered ? req->status : 0, req->bytes, took_us,
                  toe != MHD_REQUEST_TERMINATED_COMPLETED_OK);
    free(req->prep_body); /* an answer rendered but never sent */
    free(req);
    *con_cls = NULL;
    /* A kept-alive connection has the same time for its next request. */
    lw_conn_deadline(q, conn, lw_mono_us() + q->header_timeout_us);
}

void lw_query_conf_init(lw_query_conf_t *conf)
{
    memset(conf, 0, sizeof *conf);
    snprintf(conf->host, sizeof conf->host, "%s", LW_QUERY_DEFAULT_HOST);
    conf->port = LW_QUERY_DEFAULT_PORT;
    conf->threads = LW_QUERY_DEFAULT_THREADS;
    conf->max_connections = LW_QUERY_DEFAULT_MAX_CONNECTIONS;
    conf->max_per_ip = LW_QUERY_DEFAULT_MAX_PER_IP;
    conf->header_timeout = LW_QUERY_DEFAULT_HEADER_TIMEOUT;
    conf->idle_timeout = LW_QUERY_DEFAULT_IDLE_TIMEOUT;
}

/* Each connection takes a descriptor: raises the soft RLIMIT_NOFILE toward
 * what max_connections needs (up to the hard limit) and returns how many
 * connections fit, leaving room for Redis connections, logs and MHD's own. */
static int lw_fit_connections(int want, int threads)
{
    struct rlimit rl;
    rlim_t need = (rlim_t)want + (rlim_t)threads + 64;

    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return want;
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < need) {
        rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > need ? need : rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < need) {
        long fit = (long)rl.rlim_cur - threads - 64;
        return fit < 1 ? 1 : (int)fit;
    }
    return want;
}

/* After lw_inq_destroy: the delivery thread's batch state. */
static void lw_batch_free(lw_query_t *q)
{
    lw_state_reader_destroy(q->batch_reader);
    lw_rcluster_destroy(q->batch_rc);
    free(q->pend);
    free(q->pend_spare);
    pthread_mutex_destroy(&q->pend_mu);
}

static void lw_watchdog_stop(lw_query_t *q)
{
    if (!q->watchdog_started)
        return;
    pthread_mutex_lock(&q->conn_mu);
    q->stopping = true;
    pthread_cond_signal(&q->stop_cv);
    pthread_mutex_unlock(&q->conn_mu);
    pthread_join(q->watchdog, NULL);
    q->watchdog_started = false;
}

lw_query_t *lw_query_start(const lw_query_conf_t *conf, char *errstr, size_t errstr_size)
{
    int max_conns;
    lw_query_t *q;
    struct sockaddr_storage ss;
    socklen_t sslen;
    /* Suspend/resume: the dashboard's alert streams wait suspended (sse.c). */
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO | MHD_USE_ERROR_LOG |
                     MHD_ALLOW_SUSPEND_RESUME;
    const union MHD_DaemonInfo *di;

    memset(&ss, 0, sizeof ss);
    if (inet_pton(AF_INET, conf->host, &((struct sockaddr_in *)&ss)->sin_addr) == 1) {
        ((struct sockaddr_in *)&ss)->sin_family = AF_INET;
        ((struct sockaddr_in *)&ss)->sin_port = htons((uint16_t)conf->port);
        sslen = sizeof(struct sockaddr_in);
    } else if (inet_pton(AF_INET6, conf->host, &((struct sockaddr_in6 *)&ss)->sin6_addr) == 1) {
        ((struct sockaddr_in6 *)&ss)->sin6_family = AF_INET6;
        ((struct sockaddr_in6 *)&ss)->sin6_port = htons((uint16_t)conf->port);
        sslen = sizeof(struct sockaddr_in6);
        flags |= MHD_USE_IPv6;
    } else {
        snprintf(errstr, errstr_size, "listen address %s is not a numeric IP address", conf->host);
        return NULL;
    }
    (void)sslen;
    if (conf->port < 0 || conf->port > 65535 || conf->threads < 1 || conf->threads > 256) {
        snprintf(errstr, errstr_size, "port must be 0..65535 and threads 1..256");
        return NULL;
    }
    if (conf->max_connections < 1 || conf->max_connections > 1000000 || conf->max_per_ip < 1 ||
        conf->max_per_ip > conf->max_connections || conf->header_timeout < 1 ||
        conf->header_timeout > 3600 || conf->idle_timeout < 1 || conf->idle_timeout > 3600) {
        snprintf(errstr, errstr_size,
                 "max connections must be 1..1000000, per IP 1..max connections, and the "
                 "header and idle timeouts 1..3600 s");
        return NULL;
    }
    if (!conf->no_auth && !conf->tokens_path) {
        snprintf(errstr, errstr_size,
                 "no --tokens FILE given (use --no-auth only for local development)");
        return NULL;
    }
    q = calloc(1, sizeof *q);
    if (!q) {
        snprintf(errstr, errstr_size, "out of memory");
        return NULL;
    }
    if (lw_redis_url_parse(conf->redis_url, &q->redis, errstr, errstr_size) != LW_OK) {
        free(q);
        return NULL;
    }
    if (!conf->no_auth && !(q->tokens = lw_tokens_load(conf->tokens_path, errstr, errstr_size))) {
        free(q);
        return NULL;
    }
    q->no_auth = conf->no_auth;
    pthread_mutex_init(&q->pend_mu, NULL);
    if (!(q->inq = lw_inq_new(conf->brokers ? conf->brokers : lw_conf_default_bootstrap(),
                              conf->inquiries_topic ? conf->inquiries_topic : LW_TOPIC_INQUIRIES,
                              lw_inq_batch, q, errstr, errstr_size))) {
        pthread_mutex_destroy(&q->pend_mu);
        lw_tokens_destroy(q->tokens);
        free(q);
        return NULL;
    }
    if (!(q->dash =
              lw_dash_new(conf->web_dir, conf->cookie_secure, &q->redis, errstr, errstr_size))) {
        lw_inq_destroy(q->inq);
        lw_batch_free(q);
        lw_tokens_destroy(q->tokens);
        free(q);
        return NULL;
    }
    q->header_timeout_us = (int64_t)conf->header_timeout * 1000000;
    q->conns.next = q->conns.prev = &q->conns;
    pthread_mutex_init(&q->conn_mu, NULL);
    {
        pthread_condattr_t ca;
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(&q->stop_cv, &ca);
        pthread_condattr_destroy(&ca);
    }
    if (pthread_key_create(&q->rc_key, lw_rc_free) != 0) {
        snprintf(errstr, errstr_size, "pthread_key_create failed");
        goto fail;
    }
    max_conns = lw_fit_connections(conf->max_connections, conf->threads);
    if (max_conns < conf->max_connections)
        lw_warn("at most %d connections: the descriptor limit (ulimit -n) leaves no room for %d",
                max_conns, conf->max_connections);
    if (pthread_create(&q->watchdog, NULL, lw_watchdog, q) != 0) {
        snprintf(errstr, errstr_size, "cannot start the header-deadline thread");
        pthread_key_delete(q->rc_key);
        goto fail;
    }
    q->watchdog_started = true;
    q->mhd = MHD_start_daemon(
        flags, (uint16_t)conf->port, NULL, NULL, lw_handle, q,
        /* first, or MHD prints what comes before it its own way */
        MHD_OPTION_EXTERNAL_LOGGER, lw_mhd_log, q, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
        MHD_OPTION_THREAD_POOL_SIZE, (unsigned)conf->threads, MHD_OPTION_URI_LOG_CALLBACK,
        lw_uri_log, q, MHD_OPTION_NOTIFY_COMPLETED, lw_completed, q, MHD_OPTION_NOTIFY_CONNECTION,
        lw_notify_connection, q, MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)32768,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)max_conns, MHD_OPTION_PER_IP_CONNECTION_LIMIT,
        (unsigned)conf->max_per_ip, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)conf->idle_timeout,
        MHD_OPTION_END);
    if (!q->mhd) {
        snprintf(errstr, errstr_size, "cannot listen on %s:%d (in use or not permitted?)",
                 conf->host, conf->port);
        pthread_key_delete(q->rc_key);
        goto fail;
    }
    di = MHD_get_daemon_info(q->mhd, MHD_DAEMON_INFO_BIND_PORT);
    q->port = di && di->port ? di->port : conf->port;
    return q;
fail:
    lw_dash_free(q->dash);
    lw_inq_destroy(q->inq);
    lw_batch_free(q);
    lw_watchdog_stop(q);
    pthread_cond_destroy(&q->stop_cv);
    pthread_mutex_destroy(&q->conn_mu);
    lw_tokens_destroy(q->tokens);
    free(q);
    return NULL;
}

int lw_query_port(const lw_query_t *q)
{
    return q ? q->port : -1;
}

void lw_query_counts_get(lw_query_t *q, lw_query_counts_t *out)
{
    for (int i = 0; i < LW_QUERY_STATUS_SLOTS; i++)
        out->by_status[i] = atomic_load(&q->counts[i]);
    for (int i = 0; i < LW_QUERY_LAT_BUCKETS; i++)
        out->lat_bucket[i] = atomic_load(&q->lat[i]);
    out->lat_sum_us = atomic_load(&q->lat_sum_us);
}

void lw_query_stop(lw_query_t *q)
{
    if (!q)
        return;
    /* Joins the pool threads; their Redis contexts are freed as they end.
     * The watchdog goes after them: it may shutdown() only sockets MHD has
     * not closed yet, and MHD tells it (CLOSED) before it closes one. */
    lw_dash_shutdown(q->dash); /* ends the suspended alert streams first */
    /* and the look-ups waiting for their inquiry records: no new one is
     * suspended, and every one suspended has its report (confirmed or timed
     * out) and its connection resumed, for MHD stops (aborts) on a suspended
     * connection. One flush was not enough: under load, look-ups suspended
     * while it ran, or after, were still waiting when MHD stopped. */
    atomic_store(&q->inq_closing, true);
    int64_t until = lw_mono_us() + (int64_t)(LW_INQ_TIMEOUT_MS + 1000) * 1000;
    do
        lw_inq_flush(q->inq, 100);
    while (atomic_load(&q->inq_open) > 0 && lw_mono_us() < until);
    MHD_stop_daemon(q->mhd);
    lw_dash_free(q->dash);
    lw_watchdog_stop(q);
    pthread_cond_destroy(&q->stop_cv);
    pthread_mutex_destroy(&q->conn_mu);
    pthread_key_delete(q->rc_key);
    lw_inq_destroy(q->inq); /* after MHD: no request waits on it any more */
    lw_batch_free(q);
    lw_tokens_destroy(q->tokens);
    free(q);
}
