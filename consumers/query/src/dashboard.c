/*
 * dashboard.c - the risk dashboard loanwire-query serves at "/".
 *
 * A static page (consumers/query/web/: index.html, app.js, app.css, and the
 * charting library uPlot from npm, vendored by deploy/install-deps.sh) read
 * into memory at start and served from there; nothing the page loads comes
 * from another origin, so it works on an air-gapped network, and the
 * Content-Security-Policy forbids it anyway.
 *
 * The page signs in by POSTing /session with the bearer token in the
 * Authorization header (never in a URL, never in a body a proxy might log)
 * and gets an HttpOnly, SameSite=Strict cookie; from then on its data calls
 * are the API's own endpoints, which take that cookie as they take a token
 * (server.c), plus three of its own: the alert stream (/v1/alerts/stream,
 * Server-Sent Events, sse.c), the chart data (/v1/dashboard/stats) and a
 * borrower's alert history (/v1/dashboard/borrowers/{id}/alerts).
 */
#include "dash_int.h"

#include "loanwire/id.h"
#include "loanwire/log.h"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define LW_ASSET_MAX (4 * 1024 * 1024)
#define LW_DASH_HIST "/v1/dashboard/borrowers/"

typedef struct lw_asset {
    const char *path; /* URL path */
    const char *file; /* under the web directory */
    const char *type;
    char *body;
    size_t len;
} lw_asset_t;

struct lw_dash_s {
    char dir[PATH_MAX];
    bool assets_ok;
    bool cookie_secure; /* behind an HTTPS proxy: the browser sends it on HTTPS only */
    lw_asset_t assets[7];
    lw_sessions_t *sessions;
    lw_feed_t *feed;
};

static const lw_asset_t lw_asset_table[7] = {
    {"/", "index.html", "text/html; charset=utf-8", NULL, 0},
    {"/assets/app.js", "app.js", "text/javascript; charset=utf-8", NULL, 0},
    {"/assets/app.css", "app.css", "text/css; charset=utf-8", NULL, 0},
    {"/assets/favicon.svg", "favicon.svg", "image/svg+xml", NULL, 0},
    {"/assets/uPlot.iife.min.js", "vendor/uPlot.iife.min.js", "text/javascript; charset=utf-8",
     NULL, 0},
    {"/assets/uPlot.min.css", "vendor/uPlot.min.css", "text/css; charset=utf-8", NULL, 0},
    {"/assets/uPlot.LICENSE", "vendor/LICENSE", "text/plain; charset=utf-8", NULL, 0},
};

static char *lw_read_file(const char *path, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    char *buf = NULL;
    long n;

    if (!fp)
        return NULL;
    if (fseek(fp, 0, SEEK_END) == 0 && (n = ftell(fp)) >= 0 && n <= LW_ASSET_MAX &&
        fseek(fp, 0, SEEK_SET) == 0 && (buf = malloc((size_t)n + 1)) != NULL) {
        if (fread(buf, 1, (size_t)n, fp) != (size_t)n) {
            free(buf);
            buf = NULL;
        } else {
            buf[n] = '\0';
            *len = (size_t)n;
        }
    }
    fclose(fp);
    return buf;
}

/* <directory of this executable>/../share/loanwire/web: build/bin/ finds
 * build/share/loanwire/web (CMake copies it there), PREFIX/bin/ finds what
 * cmake --install put under PREFIX/share. */
static void lw_default_web_dir(char *out, size_t cap)
{
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    char *slash;

    if (n <= 0) {
        snprintf(out, cap, "share/loanwire/web");
        return;
    }
    exe[n] = '\0';
    slash = strrchr(exe, '/');
    if (slash)
        *slash = '\0';
    if ((size_t)snprintf(out, cap, "%s/../share/loanwire/web", exe) >= cap)
        snprintf(out, cap, "share/loanwire/web"); /* a path too long to use */
}

lw_dash_t *lw_dash_new(const char *web_dir, bool cookie_secure, const lw_redis_url_t *redis,
                       char *errstr, size_t errstr_size)
{
    lw_dash_t *d = calloc(1, sizeof *d);

    if (!d || !(d->sessions = lw_sessions_new())) {
        free(d);
        snprintf(errstr, errstr_size, "out of memory");
        return NULL;
    }
    if (web_dir)
        snprintf(d->dir, sizeof d->dir, "%s", web_dir);
    else
        lw_default_web_dir(d->dir, sizeof d->dir);
    d->cookie_secure = cookie_secure;
    memcpy(d->assets, lw_asset_table, sizeof d->assets);
    d->assets_ok = true;
    for (size_t i = 0; i < sizeof d->assets / sizeof d->assets[0]; i++) {
        char path[PATH_MAX + 64];
        snprintf(path, sizeof path, "%s/%s", d->dir, d->assets[i].file);
        if (!(d->assets[i].body = lw_read_file(path, &d->assets[i].len))) {
            lw_warn("dashboard: cannot read %s (%s): the page at / answers 503 "
                    "(cmake --build installs it beside the binary; --web-dir DIR elsewhere)",
                    path, strerror(errno ? errno : ENOENT));
            d->assets_ok = false;
        }
    }
    if (!(d->feed = lw_feed_start(redis, errstr, errstr_size))) {
        lw_dash_free(d);
        return NULL;
    }
    return d;
}

void lw_dash_shutdown(lw_dash_t *d)
{
    if (d)
        lw_feed_shutdown(d->feed);
}

void lw_dash_free(lw_dash_t *d)
{
    if (!d)
        return;
    lw_feed_free(d->feed);
    for (size_t i = 0; i < sizeof d->assets / sizeof d->assets[0]; i++)
        free(d->assets[i].body);
    lw_sessions_free(d->sessions);
    free(d);
}

bool lw_dash_owns(const char *path)
{
    if (!path)
        return false;
    return strcmp(path, "/") == 0 || strcmp(path, "/index.html") == 0 ||
           strncmp(path, "/assets/", 8) == 0 || strcmp(path, "/session") == 0 ||
           strcmp(path, "/session/end") == 0 || strcmp(path, "/v1/alerts/stream") == 0 ||
           strcmp(path, "/v1/dashboard/stats") == 0 ||
           strncmp(path, LW_DASH_HIST, strlen(LW_DASH_HIST)) == 0;
}

bool lw_dash_method_ok(const char *path, const char *method)
{
    if (strcmp(method, MHD_HTTP_METHOD_GET) == 0)
        return strcmp(path, "/session/end") != 0;
    if (strcmp(method, MHD_HTTP_METHOD_POST) == 0)
        return strcmp(path, "/session") == 0 || strcmp(path, "/session/end") == 0;
    return false;
}

bool lw_dash_session_ok(lw_dash_t *d, struct MHD_Connection *conn)
{
    return d && lw_sessions_check(d->sessions, MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                                                           MHD_HTTP_HEADER_COOKIE));
}

void lw_dash_security_headers(struct MHD_Response *resp)
{
    MHD_add_response_header(resp, "Content-Security-Policy",
                            "default-src 'self'; script-src 'self'; style-src 'self'; "
                            "img-src 'self'; connect-src 'self'; object-src 'none'; "
                            "base-uri 'none'; form-action 'self'; frame-ancestors 'none'");
    MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(resp, "Referrer-Policy", "no-referrer");
    MHD_add_response_header(resp, "X-Frame-Options", "DENY");
    MHD_add_response_header(resp, "Cross-Origin-Opener-Policy", "same-origin");
    MHD_add_response_header(resp, "Cross-Origin-Resource-Policy", "same-origin");
}

/* A JSON (or other) body the response owns. */
static struct MHD_Response *lw_dash_body(int status, int *out_status, size_t *bytes,
                                         const char *ctype, char *body)
{
    struct MHD_Response *resp;
    size_t len = strlen(body);

    resp = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(body);
        return NULL;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    *out_status = status;
    *bytes = len;
    return resp;
}

static struct MHD_Response *lw_dash_json(int status, int *out_status, size_t *bytes,
                                         const char *error, const char *detail)
{
    json_t *o = error ? json_pack("{s:s, s:s}", "error", error, "detail", detail)
                      : json_pack("{s:b}", "signed_in", 1);
    char *body = o ? json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;

    json_decref(o);
    if (!body)
        return NULL;
    return lw_dash_body(status, out_status, bytes, "application/json", body);
}

/* The borrower's alert hash a:{id}: open alerts under their rule id, the
 * last cleared one of each rule under ~rule (consumers/README.md). One key,
 * one slot: the same call on a Redis Cluster node that owns it. */
static struct MHD_Response *lw_dash_history(lw_rcluster_t *cl, const char *id, int *status,
                                            size_t *bytes)
{
    json_t *out = json_array();
    redisReply *r = NULL;
    char *body, key[LW_STATE_KEY_MAX], why[256];

    if (!cl || !out) {
        json_decref(out);
        return lw_dash_json(503, status, bytes, "unavailable", "Redis is not reachable");
    }
    lw_alerts_key(id, key, sizeof key);
    if (lw_rcluster_command(cl, lw_rcluster_keyslot(key, strlen(key)), &r, why, sizeof why,
                            "HGETALL %s", key) != LW_RCLUSTER_OK)
        r = NULL;
    if (!r || r->type != REDIS_REPLY_ARRAY) {
        if (r)
            freeReplyObject(r);
        json_decref(out);
        return lw_dash_json(503, status, bytes, "unavailable", "Redis read failed");
    }
    for (size_t i = 0; i + 1 < r->elements; i += 2) {
        const redisReply *k = r->element[i], *v = r->element[i + 1];
        bool cleared;
        json_t *al;

        if (k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING)
            continue;
        cleared = k->str[0] == '~';
        if (!(al = json_loads(v->str, 0, NULL)) || !json_is_object(al)) {
            json_decref(al);
            continue;
        }
        json_array_append_new(out, json_pack("{s:s, s:s, s:o}", "rule_id", k->str + cleared,
                                             "state", cleared ? "cleared" : "open", "alert", al));
    }
    freeReplyObject(r);
    body = json_dumps(out, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(out);
    if (!body)
        return NULL;
    return lw_dash_body(200, status, bytes, "application/json", body);
}

bool lw_dash_needs_redis(const char *path)
{
    return path && strncmp(path, LW_DASH_HIST, strlen(LW_DASH_HIST)) == 0;
}

struct MHD_Response *lw_dash_handle(lw_dash_t *d, struct MHD_Connection *conn, const char *path,
                                    const char *method, bool authed, bool bearer, lw_rcluster_t *rc,
                                    int *status, size_t *bytes)
{
    bool post = strcmp(method, MHD_HTTP_METHOD_POST) == 0;
    const char *cookie = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_COOKIE);

    *bytes = 0;
    if (strcmp(path, "/session") == 0 && post) {
        char id[65], set[160];
        struct MHD_Response *resp;

        if (!bearer)
            return lw_dash_json(401, status, bytes, "unauthorized", "token refused");
        if (!lw_sessions_create(d->sessions, id))
            return lw_dash_json(503, status, bytes, "unavailable", "no random bytes");
        if (!(resp = lw_dash_json(200, status, bytes, NULL, NULL)))
            return NULL;
        snprintf(set, sizeof set, "%s=%s; Path=/; Max-Age=%d; HttpOnly; SameSite=Strict%s",
                 LW_DASH_COOKIE, id, LW_DASH_SESSION_TTL_S, d->cookie_secure ? "; Secure" : "");
        MHD_add_response_header(resp, MHD_HTTP_HEADER_SET_COOKIE, set);
        return resp;
    }
    if (strcmp(path, "/session/end") == 0) {
        struct MHD_Response *resp;
        lw_sessions_end(d->sessions, cookie);
        if (!(resp = lw_dash_json(200, status, bytes, "signed_out", "session ended")))
            return NULL;
        MHD_add_response_header(resp, MHD_HTTP_HEADER_SET_COOKIE,
                                LW_DASH_COOKIE "=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict");
        return resp;
    }
    if (strcmp(path, "/session") == 0) {
        /* 200 either way: the page asks before it knows, and a 401 would
         * be a console error in every browser that opens it signed out. */
        char *body = strdup(authed ? "{\"signed_in\":true}" : "{\"signed_in\":false}");
        return body ? lw_dash_body(200, status, bytes, "application/json", body) : NULL;
    }
    if (strcmp(path, "/index.html") == 0)
        path = "/";
    for (size_t i = 0; i < sizeof d->assets / sizeof d->assets[0]; i++) {
        struct MHD_Response *resp;
        if (strcmp(path, d->assets[i].path) != 0)
            continue;
        if (!d->assets_ok)
            return lw_dash_json(503, status, bytes, "unavailable",
                                "dashboard files are not installed (see the server's log)");
        resp = MHD_create_response_from_buffer(d->assets[i].len, d->assets[i].body,
                                               MHD_RESPMEM_PERSISTENT);
        if (!resp)
            return NULL;
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, d->assets[i].type);
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
        *status = 200;
        *bytes = d->assets[i].len;
        return resp;
    }
    if (strncmp(path, "/assets/", 8) == 0)
        return lw_dash_json(404, status, bytes, "not_found", "no such path");
    if (!authed)
        return lw_dash_json(401, status, bytes, "unauthorized",
                            "a valid bearer token or session is required");
    if (strcmp(path, "/v1/alerts/stream") == 0) {
        struct MHD_Response *resp = lw_feed_response(d->feed, conn);
        *status = 200;
        return resp;
    }
    if (strcmp(path, "/v1/dashboard/stats") == 0) {
        char *body = lw_feed_stats_json(d->feed);
        return body ? lw_dash_body(200, status, bytes, "application/json", body) : NULL;
    }
    {
        /* /v1/dashboard/borrowers/{id}/alerts */
        const char *id = path + strlen(LW_DASH_HIST), *slash = strchr(id, '/');
        char bid[LW_BORROWER_ID_LEN + 1];
        if (!slash || strcmp(slash, "/alerts") != 0)
            return lw_dash_json(404, status, bytes, "not_found", "no such path");
        if ((size_t)(slash - id) != LW_BORROWER_ID_LEN)
            return lw_dash_json(400, status, bytes, "bad_request",
                                "borrower_id must be 22 base64url characters");
        memcpy(bid, id, LW_BORROWER_ID_LEN);
        bid[LW_BORROWER_ID_LEN] = '\0';
        if (!lw_borrower_id_is_valid(bid))
            return lw_dash_json(400, status, bytes, "bad_request",
                                "borrower_id must be 22 base64url characters");
        return lw_dash_history(rc, bid, status, bytes);
    }
}
