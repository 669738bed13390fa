/*
 * metrics_http.c - loanwire-exposure's /metrics, /healthz and /readyz.
 *
 * One job: answer three GETs from the figures of obs.c, on the address of
 * --metrics-listen (off by default; bind it to loopback or a management
 * network: it has no authentication, like any Prometheus exporter). It uses
 * libmicrohttpd as loanwire-query does, but none of the query library: one
 * internal thread, a handful of connections, answers built per request.
 */
#include "obs_int.h"

#include "loanwire/listen.h"
#include "loanwire/prom.h"

#include <microhttpd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct lw_mhttp {
    struct MHD_Daemon *d;
    lw_obs_t *obs;
    int port;
};

static enum MHD_Result answer(struct MHD_Connection *conn, unsigned status, const char *type,
                              char *body, size_t len)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", type);
    MHD_add_response_header(r, "Cache-Control", "no-store");
    enum MHD_Result ret = MHD_queue_response(conn, status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result answer_text(struct MHD_Connection *conn, unsigned status, const char *text)
{
    size_t n = strlen(text);
    char *body = malloc(n + 2);
    if (!body)
        return MHD_NO;
    memcpy(body, text, n);
    body[n] = '\n';
    body[n + 1] = '\0';
    return answer(conn, status, "text/plain; charset=utf-8", body, n + 1);
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *conn, const char *url,
                              const char *method, const char *version, const char *upload,
                              size_t *upload_size, void **req_cls)
{
    lw_mhttp_t *h = cls;
    char why[200];
    (void)version, (void)upload, (void)upload_size, (void)req_cls;
    if (strcmp(method, "GET") && strcmp(method, "HEAD"))
        return answer_text(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "GET only");
    if (!strcmp(url, "/metrics")) {
        lw_sbuf_t b = {0};
        if (!lw_obs_render(h->obs, &b)) {
            lw_sbuf_free(&b);
            return answer_text(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory");
        }
        return answer(conn, MHD_HTTP_OK, LW_PROM_CONTENT_TYPE, b.p, b.len);
    }
    if (!strcmp(url, "/healthz")) {
        bool ok = lw_obs_healthy(h->obs, why, sizeof why);
        return answer_text(conn, ok ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE, why);
    }
    if (!strcmp(url, "/readyz")) {
        bool ok = lw_obs_ready(h->obs, why, sizeof why);
        return answer_text(conn, ok ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE, why);
    }
    return answer_text(conn, MHD_HTTP_NOT_FOUND, "not found: /metrics, /healthz, /readyz");
}

lw_mhttp_t *lw_mhttp_start(const char *listen, lw_obs_t *o, char *errstr, size_t errstr_size)
{
    struct sockaddr_storage ss;
    socklen_t len;
    if (lw_listen_parse(listen, &ss, &len, errstr, errstr_size) != LW_OK)
        return NULL;
    lw_mhttp_t *h = calloc(1, sizeof *h);
    if (!h) {
        snprintf(errstr, errstr_size, "out of memory");
        return NULL;
    }
    h->obs = o;
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO | MHD_USE_ERROR_LOG;
    if (ss.ss_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    h->d = MHD_start_daemon(flags, 0, NULL, NULL, handle, h, MHD_OPTION_SOCK_ADDR, &ss,
                            MHD_OPTION_CONNECTION_LIMIT, (unsigned)32,
                            MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)10, MHD_OPTION_END);
    if (!h->d) {
        snprintf(errstr, errstr_size, "--metrics-listen %s: cannot listen (in use?)", listen);
        free(h);
        return NULL;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_BIND_PORT);
    h->port = di ? (int)di->port : 0;
    return h;
}

int lw_mhttp_port(const lw_mhttp_t *h)
{
    return h ? h->port : 0;
}

void lw_mhttp_stop(lw_mhttp_t *h)
{
    if (!h)
        return;
    MHD_stop_daemon(h->d);
    free(h);
}
