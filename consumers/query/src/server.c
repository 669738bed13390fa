/*
 * server.c - the HTTP side of loanwire-query (libmicrohttpd).
 *
 * An internal thread pool serves connections; a worker thread makes its own
 * hiredis context on first use (thread-specific data, freed when the thread
 * ends) and drops it after an I/O error so the next request reconnects.
 * Requests are answered on the first call of the access handler: nothing
 * here reads a body, so any request announcing one gets 413 straight away.
 * One access line per request goes to stderr when MHD reports completion.
 */
#include "loanwire/log.h"
#include "loanwire/query.h"

#include <arpa/inet.h>
#include <inttypes.h>
#include <jansson.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct lw_query_s {
    struct MHD_Daemon *mhd;
    lw_redis_url_t redis;
    lw_tokens_t *tokens;
    bool no_auth;
    int port;
    pthread_key_t rc_key;
    _Atomic uint64_t counts[LW_QUERY_STATUS_SLOTS];
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
} lw_req_t;

static void lw_rc_free(void *p)
{
    redisFree(p);
}

/* This thread's Redis context, connecting when there is none. */
static redisContext *lw_thread_redis(lw_query_t *q, char *errstr, size_t errstr_size)
{
    redisContext *rc = pthread_getspecific(q->rc_key);
    if (rc)
        return rc;
    rc = lw_query_redis_connect(&q->redis, errstr, errstr_size);
    if (rc)
        pthread_setspecific(q->rc_key, rc);
    return rc;
}

/* Drops this thread's context after an I/O error; the next call reconnects. */
static void lw_thread_redis_check(lw_query_t *q, redisContext *rc)
{
    if (rc && rc->err) {
        pthread_setspecific(q->rc_key, NULL);
        redisFree(rc);
    }
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

/* Copies s for a log line: no query string, no control characters. */
static void lw_log_safe(char *out, size_t cap, const char *s)
{
    size_t j = 0;
    for (; s && *s && *s != '?' && j + 1 < cap; s++)
        out[j++] = (*s < 0x20 || *s == 0x7f || *s == '"') ? '?' : *s;
    out[j] = '\0';
}

static enum MHD_Result lw_handle(void *cls, struct MHD_Connection *conn, const char *url,
                                 const char *method, const char *version, const char *upload_data,
                                 size_t *upload_data_size, void **con_cls)
{
    lw_query_t *q = cls;
    lw_req_t *req = *con_cls;
    char bid[LW_BORROWER_ID_LEN + 1], errstr[512], *body = NULL;
    bool bad_id, found;
    lw_route_t route;
    redisContext *rc;
    lw_err_t err;

    if (!req) /* no URI callback ran: cannot happen, refuse rather than crash */
        return MHD_NO;
    if (req->answered) {
        *upload_data_size = 0; /* discard a body that still arrives */
        return MHD_YES;
    }
    lw_log_safe(req->method, sizeof req->method, method);
    lw_log_safe(req->path, sizeof req->path, url);
    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0)
        return lw_respond_error(q, req, conn, 405, "method_not_allowed", "only GET is served");
    if (lw_has_body(conn) || *upload_data_size > 0)
        return lw_respond_error(q, req, conn, 413, "payload_too_large",
                                "request bodies are not accepted");
    if (req->uri_len > LW_QUERY_MAX_URL)
        return lw_respond_error(q, req, conn, 414, "uri_too_long", "request URI too long");

    route = lw_query_route(url, bid, &bad_id);
    if (route == LW_ROUTE_NOT_FOUND)
        return lw_respond_error(q, req, conn, 404, "not_found", "no such path");
    if ((route == LW_ROUTE_EXPOSURE || route == LW_ROUTE_ALERTS) && !q->no_auth &&
        !lw_tokens_check(q->tokens, MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                                                MHD_HTTP_HEADER_AUTHORIZATION)))
        return lw_respond_error(q, req, conn, 401, "unauthorized",
                                "a valid bearer token is required");
    if (route == LW_ROUTE_EXPOSURE && bad_id)
        return lw_respond_error(q, req, conn, 400, "bad_request",
                                "borrower_id must be 22 base64url characters");

    rc = lw_thread_redis(q, errstr, sizeof errstr);
    if (!rc) {
        if (route == LW_ROUTE_HEALTHZ) {
            json_t *o = json_pack("{s:s, s:s}", "status", "unavailable", "error", errstr);
            body = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
            json_decref(o);
            return body ? lw_respond(q, req, conn, 503, "application/json", body, true) : MHD_NO;
        }
        lw_warn("redis: %s", errstr);
        return lw_respond_error(q, req, conn, 503, "unavailable", "Redis is not reachable");
    }

    switch (route) {
    case LW_ROUTE_HEALTHZ: {
        int64_t t0 = lw_mono_us();
        redisReply *r = redisCommand(rc, "PING");
        int64_t rtt = lw_mono_us() - t0;
        bool ok = r && r->type == REDIS_REPLY_STATUS && strcmp(r->str, "PONG") == 0;
        json_t *o =
            ok ? json_pack("{s:s, s:I}", "status", "ok", "redis_rtt_us", (json_int_t)rtt)
               : json_pack("{s:s, s:s}", "status", "unavailable", "error",
                           r ? (r->type == REDIS_REPLY_ERROR ? r->str : "bad reply") : rc->errstr);
        if (r)
            freeReplyObject(r);
        lw_thread_redis_check(q, rc);
        body = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
        json_decref(o);
        return body ? lw_respond(q, req, conn, ok ? 200 : 503, "application/json", body, true)
                    : MHD_NO;
    }
    case LW_ROUTE_METRICS: {
        lw_query_counts_t counts;
        lw_query_counts_get(q, &counts);
        err = lw_query_metrics_text(rc, &counts, &body, errstr, sizeof errstr);
        lw_thread_redis_check(q, rc);
        if (err != LW_OK) {
            lw_warn("metrics: %s", errstr);
            return lw_respond_error(q, req, conn, 503, "unavailable", "Redis read failed");
        }
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
        lw_thread_redis_check(q, rc);
        if (err != LW_OK) {
            lw_warn("alerts: %s", errstr);
            return lw_respond_error(q, req, conn, 503, "unavailable", "Redis read failed");
        }
        return lw_respond(q, req, conn, 200, "application/json", body, true);
    }
    case LW_ROUTE_EXPOSURE:
        err = lw_query_exposure_json(rc, bid, &body, &found, errstr, sizeof errstr);
        lw_thread_redis_check(q, rc);
        if (err != LW_OK) {
            lw_warn("exposure %s: %s", bid, errstr);
            return lw_respond_error(q, req, conn, 503, "unavailable", "Redis read failed");
        }
        if (!found)
            return lw_respond_error(q, req, conn, 404, "not_found", "unknown borrower");
        return lw_respond(q, req, conn, 200, "application/json", body, true);
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

static void lw_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
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
    fprintf(stderr, "ACCESS %s \"%s %s\" %d %zu %" PRId64 "us%s\n", addr, meth, path,
            req->answered ? req->status : 0, req->bytes, lw_mono_us() - req->started_us,
            toe == MHD_REQUEST_TERMINATED_COMPLETED_OK ? "" : " aborted");
    free(req);
    *con_cls = NULL;
}

void lw_query_conf_init(lw_query_conf_t *conf)
{
    memset(conf, 0, sizeof *conf);
    snprintf(conf->host, sizeof conf->host, "%s", LW_QUERY_DEFAULT_HOST);
    conf->port = LW_QUERY_DEFAULT_PORT;
    conf->threads = LW_QUERY_DEFAULT_THREADS;
}

lw_query_t *lw_query_start(const lw_query_conf_t *conf, char *errstr, size_t errstr_size)
{
    lw_query_t *q;
    struct sockaddr_storage ss;
    socklen_t sslen;
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO | MHD_USE_ERROR_LOG;
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
    if (pthread_key_create(&q->rc_key, lw_rc_free) != 0) {
        snprintf(errstr, errstr_size, "pthread_key_create failed");
        lw_tokens_destroy(q->tokens);
        free(q);
        return NULL;
    }
    q->mhd = MHD_start_daemon(
        flags, (uint16_t)conf->port, NULL, NULL, lw_handle, q, MHD_OPTION_SOCK_ADDR,
        (struct sockaddr *)&ss, MHD_OPTION_THREAD_POOL_SIZE, (unsigned)conf->threads,
        MHD_OPTION_URI_LOG_CALLBACK, lw_uri_log, q, MHD_OPTION_NOTIFY_COMPLETED, lw_completed, q,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)32768, MHD_OPTION_CONNECTION_LIMIT,
        (unsigned)1000, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)30, MHD_OPTION_END);
    if (!q->mhd) {
        snprintf(errstr, errstr_size, "cannot listen on %s:%d (in use or not permitted?)",
                 conf->host, conf->port);
        pthread_key_delete(q->rc_key);
        lw_tokens_destroy(q->tokens);
        free(q);
        return NULL;
    }
    di = MHD_get_daemon_info(q->mhd, MHD_DAEMON_INFO_BIND_PORT);
    q->port = di && di->port ? di->port : conf->port;
    return q;
}

int lw_query_port(const lw_query_t *q)
{
    return q ? q->port : -1;
}

void lw_query_counts_get(lw_query_t *q, lw_query_counts_t *out)
{
    for (int i = 0; i < LW_QUERY_STATUS_SLOTS; i++)
        out->by_status[i] = atomic_load(&q->counts[i]);
}

void lw_query_stop(lw_query_t *q)
{
    if (!q)
        return;
    /* Joins the pool threads; their Redis contexts are freed as they end. */
    MHD_stop_daemon(q->mhd);
    pthread_key_delete(q->rc_key);
    lw_tokens_destroy(q->tokens);
    free(q);
}
