/*
 * rcluster.c - slot routing for Redis Cluster (and a single Redis): the slot
 * map, one connection per node, and batches of per-slot command groups that
 * survive MOVED, ASK, TRYAGAIN, CLUSTERDOWN and failover.
 *
 * Design, and why:
 *   - The map is an array of 16384 node indexes (32 KB), so routing is one load
 *     per group. It is loaded from CLUSTER SLOTS (Redis 3+; CLUSTER SHARDS only
 *     exists from 7.0 and tells nothing more that routing needs). As
 *     hiredis-cluster (since its PR 164) and redis-py do, a MOVED is followed
 *     at once by pointing that one slot at the named node, and the whole map
 *     is reloaded before the next round, since a MOVED usually means many slots
 *     moved (a failover moves all of a master's). The reload asks the known
 *     masters first, then every other node ever seen (replicas included, so the
 *     kill of the seed node does not strand us), then the seed URL.
 *   - A batch is sent in rounds. Each round appends every pending group to the
 *     connection of the node it goes to, then writes every connection at once
 *     (write_all()), then reads every connection's replies in the order they
 *     were appended (Redis answers a connection in order, so a list of what
 *     was sent is enough to pair replies with commands). Writing before reading
 *     cannot deadlock: Redis keeps reading while our replies queue in its
 *     output buffer.
 *   - After the round each group is judged on its own: done; redirected
 *     (MOVED, ASK: resend at once, counting hops so a confused cluster cannot
 *     loop us forever); or retriable (TRYAGAIN, CLUSTERDOWN, MASTERDOWN,
 *     LOADING, READONLY, a connection refused or lost): the next round waits a
 *     capped exponential backoff first and reloads the map. recv gives up when
 *     the pauses would exceed opts.retry_ms; a failover (node timeout + the
 *     replica's election) fits in the default 30 s.
 *   - MULTI inside a group: Redis checks each queued command's slot as it is
 *     queued, answers a redirect for it and turns EXEC into EXECABORT, or
 *     redirects EXEC itself (checked again over all queued keys). Either way
 *     nothing of the transaction ran, so a group holding MULTI is resent whole,
 *     to the new owner, or after ASK to the importing node with one ASKING
 *     before MULTI: the ASKING flag survives until EXEC (Redis clears it after
 *     each command only outside MULTI), which is what the ASKING command's
 *     documentation prescribes. If the keys of the transaction are split
 *     between the two nodes mid-migration the importing node answers TRYAGAIN,
 *     and we pause and go back to the map's owner until the migration ends
 *     and a MOVED arrives: a transaction is never split across nodes.
 *   - WAIT counts replicas that acknowledged the client's own latest write on
 *     that connection. If the connection that wrote a group broke and was
 *     reopened, the new one has written nothing and WAIT would vouch for
 *     nothing: each node counts its connections (gen), and a node whose
 *     connection changed since a command of the batch ran there is reported as not
 *     replicated rather than asked.
 *   - A batch allocates per batch, not per command or reply: its commands'
 *     RESP goes end to end into one buffer, and its replies are hiredis'
 *     usual redisReply trees built in an arena (rcreply.c), rewound at the
 *     next send or reset. On a cluster flush these are ~20,000 values a batch;
 *     a malloc and a free each were the consumer's largest cost.
 *   - Money, ids and keys pass through untouched: this file never looks inside
 *     a command beyond its name (MULTI/EXEC), nor inside a reply beyond its
 *     error prefix.
 */
#include "rcluster_int.h"

#include "loanwire/redis.h"

#include <inttypes.h>
#include <pthread.h>
#include <errno.h>
#include <fcntl.h>
#include <hiredis/sds.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

/* ---- Types ------------------------------------------------------------------ */

typedef struct rc_node {
    char host[256];
    int port;
    redisContext *ctx; /* NULL until first needed, or after it broke */
    unsigned gen;      /* connections opened so far (see WAIT above) */
} rc_node_t;

struct lw_rcluster {
    lw_redis_url_t url; /* the seed: password for every node; path/db in single mode */
    lw_rcluster_opts_t opts;
    bool cluster;
    rc_node_t *nodes;
    int n_nodes, cap_nodes;
    int16_t slot[LW_RCLUSTER_SLOTS]; /* node index per slot, -1 when not served */
    int *masters;                    /* node indexes of masters, in map order */
    int n_masters, cap_masters;
    bool stale; /* reload the map before the next round */
    /*
     * A batch sent and not yet received: its replies are still on the
     * connections, so any other call would read them as its own.
     */
    const lw_rcluster_batch_t *busy;
    lw_rcluster_stats_t stats;
    lw_rcluster_batch_t *one; /* the batch behind lw_rcluster_command* */
};

typedef struct rc_cmd {
    size_t off, len;   /* its RESP in the batch's text */
    bool queued;       /* after MULTI, up to and with EXEC: no ASKING before it */
    redisReply *reply; /* final reply, in the batch's arena; NULL until answered */
    int node;          /* the node that answered it, and its connection generation: */
    unsigned gen;      /* a plain group's commands may have run on two nodes (ASK) */
} rc_cmd_t;

enum { G_PENDING, G_DONE, G_FAILED };

typedef struct rc_group {
    int slot;
    size_t first, n; /* its commands: b->cmds[first .. first+n) */
    bool multi;      /* holds MULTI: resent whole */
    int state;
    int node;      /* the node of the next attempt; -1: the map's owner */
    bool asking;   /* the next attempt follows an ASK */
    int hops;      /* MOVED/ASK followed since the last pause */
    bool in_round; /* sent in the current round */
    bool lost;     /* a reply of the round was lost with its connection */
    int landed;    /* the node of the current round; DONE: the last one */
    lw_rcluster_err_t err;
    char why[320]; /* the last retriable cause, for errstr */
} rc_group_t;

/* One reply expected from a node in this round: for command cmd of group g, or an ASKING. */
typedef struct rc_pend {
    int node;
    size_t g;
    size_t cmd;
    bool asking;
} rc_pend_t;

typedef struct rc_wait {
    int node;
    long long replicas; /* -1: unknown */
} rc_wait_t;

struct lw_rcluster_batch {
    lw_rcluster_t *c;
    rc_cmd_t *cmds;
    size_t n_cmds, cap_cmds;
    rc_group_t *groups;
    size_t n_groups, cap_groups;
    rc_pend_t *pend;
    size_t n_pend, cap_pend;
    bool sent;     /* send ran; recv reads */
    bool in_multi; /* appending inside MULTI */
    int *touched;  /* nodes written in the current round */
    size_t n_touched, cap_touched;
    rc_wait_t *waits;
    size_t n_waits, cap_waits;
    lw_rc_arena_t arena; /* every reply of the batch (rcreply.c): rewound, not freed */
    /* every command's RESP, end to end: one buffer kept across batches rather
     * than an allocation per command */
    char *text;
    size_t text_len, text_cap;
};

/* ---- Errors --------------------------------------------------------------------- */

const char *lw_rcluster_err2str(lw_rcluster_err_t err)
{
    switch (err) {
    case LW_RCLUSTER_OK:
        return "success";
    case LW_RCLUSTER_ERR_INVALID_ARG:
        return "invalid argument";
    case LW_RCLUSTER_ERR_NOMEM:
        return "out of memory";
    case LW_RCLUSTER_ERR_AUTH:
        return "authentication or database selection refused";
    case LW_RCLUSTER_ERR_PROTOCOL:
        return "unexpected reply";
    case LW_RCLUSTER_ERR_CONNECT:
        return "cannot connect";
    case LW_RCLUSTER_ERR_IO:
        return "connection lost";
    case LW_RCLUSTER_ERR_CLUSTERDOWN:
        return "cluster down";
    case LW_RCLUSTER_ERR_TRYAGAIN:
        return "slot migrating, try again";
    case LW_RCLUSTER_ERR_LOADING:
        return "node loading or read-only";
    case LW_RCLUSTER_ERR_REDIRECTS:
        return "too many redirects";
    case LW_RCLUSTER_ERR_NOT_REPLICATED:
        return "not acknowledged by enough replicas";
    case LW_RCLUSTER_ERR__CNT:
        break;
    }
    return "unknown error";
}

bool lw_rcluster_err_is_retriable(lw_rcluster_err_t err)
{
    return err >= LW_RCLUSTER_ERR_CONNECT && err < LW_RCLUSTER_ERR__CNT;
}

static void seterr(char *errstr, size_t size, const char *fmt, ...)
{
    if (!errstr || !size)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(errstr, size, fmt, ap);
    va_end(ap);
}

void lw_rcluster_opts_init(lw_rcluster_opts_t *o)
{
    o->timeout_ms = 2000;
    o->retry_ms = 30000;
    o->backoff_min_ms = 20;
    o->backoff_max_ms = 1000;
    o->max_redirects = 16;
}

/* ---- Reply classification --------------------------------------------------------- */

static bool has_prefix(const char *s, size_t len, const char *p)
{
    size_t n = strlen(p);
    return len >= n && memcmp(s, p, n) == 0 && (len == n || s[n] == ' ');
}

/* "MOVED 3999 127.0.0.1:6381": slot, then host:port split at the last ':' (IPv6 hosts have colons).
 */
static bool parse_target(const char *s, size_t len, lw_rc_redirect_t *out)
{
    char buf[320];
    if (len >= sizeof buf)
        return false;
    memcpy(buf, s, len);
    buf[len] = '\0';
    char *sp = strchr(buf, ' ');
    if (!sp)
        return false;
    char *end;
    errno = 0;
    long slot = strtol(sp + 1, &end, 10);
    if (errno || end == sp + 1 || *end != ' ' || slot < 0 || slot >= LW_RCLUSTER_SLOTS)
        return false;
    char *addr = end + 1;
    char *colon = strrchr(addr, ':');
    if (!colon || (size_t)(colon - addr) >= sizeof out->host)
        return false;
    long port = strtol(colon + 1, &end, 10);
    if (end == colon + 1 || *end != '\0' || port <= 0 || port > 65535)
        return false;
    memcpy(out->host, addr, (size_t)(colon - addr));
    out->host[colon - addr] = '\0';
    out->slot = (int)slot;
    out->port = (int)port;
    return true;
}

lw_rc_kind_t lw_rcluster__classify(const redisReply *r, lw_rc_redirect_t *out)
{
    lw_rc_redirect_t dummy;
    if (!out)
        out = &dummy;
    out->kind = LW_RC_REPLY;
    out->slot = -1;
    out->host[0] = '\0';
    out->port = 0;
    if (!r || r->type != REDIS_REPLY_ERROR || !r->str)
        return LW_RC_REPLY;
    const char *s = r->str;
    size_t len = r->len;
    if (has_prefix(s, len, "MOVED") || has_prefix(s, len, "ASK")) {
        if (!parse_target(s, len, out))
            return out->kind = LW_RC_REPLY;
        return out->kind = s[0] == 'M' ? LW_RC_MOVED : LW_RC_ASK;
    }
    if (has_prefix(s, len, "TRYAGAIN"))
        return out->kind = LW_RC_TRYAGAIN;
    if (has_prefix(s, len, "CLUSTERDOWN") || has_prefix(s, len, "MASTERDOWN"))
        return out->kind = LW_RC_CLUSTERDOWN;
    if (has_prefix(s, len, "LOADING") || has_prefix(s, len, "READONLY"))
        return out->kind = LW_RC_LOADING;
    return LW_RC_REPLY;
}

static lw_rcluster_err_t kind_err(lw_rc_kind_t k)
{
    switch (k) {
    case LW_RC_TRYAGAIN:
        return LW_RCLUSTER_ERR_TRYAGAIN;
    case LW_RC_CLUSTERDOWN:
        return LW_RCLUSTER_ERR_CLUSTERDOWN;
    case LW_RC_LOADING:
        return LW_RCLUSTER_ERR_LOADING;
    case LW_RC_MOVED:
    case LW_RC_ASK:
        return LW_RCLUSTER_ERR_REDIRECTS;
    case LW_RC_REPLY:
        break;
    }
    return LW_RCLUSTER_OK;
}

/* ---- Nodes and connections ------------------------------------------------------------ */

static int node_find(const lw_rcluster_t *c, const char *host, int port)
{
    for (int i = 0; i < c->n_nodes; i++)
        if (c->nodes[i].port == port && strcmp(c->nodes[i].host, host) == 0)
            return i;
    return -1;
}

/* The index of host:port, added when new; -1 without memory or with a bad address. */
static int node_get(lw_rcluster_t *c, const char *host, int port)
{
    int i = node_find(c, host, port);
    if (i >= 0)
        return i;
    if (strlen(host) >= sizeof c->nodes[0].host || port <= 0 || port > 65535 ||
        c->n_nodes >= INT16_MAX)
        return -1;
    if (c->n_nodes == c->cap_nodes) {
        int cap = c->cap_nodes ? c->cap_nodes * 2 : 8;
        rc_node_t *n = realloc(c->nodes, (size_t)cap * sizeof *n);
        if (!n)
            return -1;
        c->nodes = n;
        c->cap_nodes = cap;
    }
    rc_node_t *n = &c->nodes[c->n_nodes];
    memset(n, 0, sizeof *n);
    snprintf(n->host, sizeof n->host, "%s", host);
    n->port = port;
    return c->n_nodes++;
}

static void node_close(lw_rcluster_t *c, int i, bool broke)
{
    if (c->nodes[i].ctx) {
        redisFree(c->nodes[i].ctx);
        c->nodes[i].ctx = NULL;
        if (broke)
            c->stats.conn_lost++;
    }
}

/* Node i's connection, opened if needed (AUTH as lw_redis_connect); NULL with errstr. */
static redisContext *node_ctx(lw_rcluster_t *c, int i, lw_rcluster_err_t *err, char *errstr,
                              size_t errstr_size)
{
    rc_node_t *n = &c->nodes[i];
    if (n->ctx)
        return n->ctx;
    lw_redis_url_t u = c->url;
    if (c->cluster && !(i == 0 && c->url.path[0])) {
        /* Cluster nodes are TCP addresses from the map; Redis Cluster has only db 0. */
        snprintf(u.host, sizeof u.host, "%s", n->host);
        u.port = n->port;
        u.path[0] = '\0';
        u.db = 0;
    }
    lw_err_t e = LW_OK;
    char why[256];
    n->ctx = lw_redis_connect(&u, c->opts.timeout_ms, &e, why, sizeof why);
    if (!n->ctx) {
        *err = e == LW_ERR_REDIS ? LW_RCLUSTER_ERR_AUTH : LW_RCLUSTER_ERR_CONNECT;
        seterr(errstr, errstr_size, "%s", why);
        return NULL;
    }
    n->gen++;
    c->stats.connects++;
    return n->ctx;
}

/* ---- The slot map ------------------------------------------------------------------ */

static bool reply_int(const redisReply *r, long long lo, long long hi, long long *out)
{
    if (!r || r->type != REDIS_REPLY_INTEGER || r->integer < lo || r->integer > hi)
        return false;
    *out = r->integer;
    return true;
}

/* [host, port, id?, ...] of CLUSTER SLOTS; an empty or "?" host is the origin's. */
static bool reply_addr(const redisReply *r, const char *origin, char *host, size_t host_size,
                       int *port)
{
    long long p;
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements < 2 || !r->element[0] ||
        r->element[0]->type != REDIS_REPLY_STRING || !reply_int(r->element[1], 1, 65535, &p))
        return false;
    const char *h = r->element[0]->str;
    if (r->element[0]->len == 0 || strcmp(h, "?") == 0)
        h = origin ? origin : "";
    else if (strlen(h) != r->element[0]->len) /* a NUL inside: no address */
        return false;
    if (!h[0] || strlen(h) >= host_size)
        return false;
    snprintf(host, host_size, "%s", h);
    *port = (int)p;
    return true;
}

static bool master_add(lw_rcluster_t *c, int node)
{
    for (int i = 0; i < c->n_masters; i++)
        if (c->masters[i] == node)
            return true;
    if (c->n_masters == c->cap_masters) {
        int cap = c->cap_masters ? c->cap_masters * 2 : 8;
        int *m = realloc(c->masters, (size_t)cap * sizeof *m);
        if (!m)
            return false;
        c->masters = m;
        c->cap_masters = cap;
    }
    c->masters[c->n_masters++] = node;
    return true;
}

lw_rcluster_err_t lw_rcluster__apply_slots(lw_rcluster_t *c, const redisReply *r,
                                           const char *origin_host, char *errstr,
                                           size_t errstr_size)
{
    if (!c || !r || r->type != REDIS_REPLY_ARRAY) {
        seterr(errstr, errstr_size, "CLUSTER SLOTS: not an array");
        return LW_RCLUSTER_ERR_PROTOCOL;
    }
    /* A node that has not joined (or has forgotten) the cluster serves nothing: keep our map. */
    if (r->elements == 0) {
        seterr(errstr, errstr_size, "CLUSTER SLOTS: no slot served");
        return LW_RCLUSTER_ERR_CLUSTERDOWN;
    }
    /* Checked in full before anything changes, so a bad reply leaves the old map. */
    for (size_t i = 0; i < r->elements; i++) {
        const redisReply *e = r->element[i];
        long long lo, hi;
        char host[256];
        int port;
        if (!e || e->type != REDIS_REPLY_ARRAY || e->elements < 3 ||
            !reply_int(e->element[0], 0, LW_RCLUSTER_SLOTS - 1, &lo) ||
            !reply_int(e->element[1], lo, LW_RCLUSTER_SLOTS - 1, &hi)) {
            seterr(errstr, errstr_size, "CLUSTER SLOTS: entry %zu is not [start, end, master...]",
                   i);
            return LW_RCLUSTER_ERR_PROTOCOL;
        }
        for (size_t k = 2; k < e->elements; k++)
            if (!reply_addr(e->element[k], origin_host, host, sizeof host, &port)) {
                seterr(errstr, errstr_size, "CLUSTER SLOTS: entry %zu: bad node address", i);
                return LW_RCLUSTER_ERR_PROTOCOL;
            }
    }
    /* Built aside and swapped in at the end: out of memory midway keeps the old map too. */
    int16_t slot[LW_RCLUSTER_SLOTS];
    for (int s = 0; s < LW_RCLUSTER_SLOTS; s++)
        slot[s] = -1;
    int *masters = malloc((r->elements + 1) * sizeof *masters);
    int n_masters = 0;
    if (!masters) {
        seterr(errstr, errstr_size, "CLUSTER SLOTS: out of memory");
        return LW_RCLUSTER_ERR_NOMEM;
    }
    for (size_t i = 0; i < r->elements; i++) {
        const redisReply *e = r->element[i];
        char host[256];
        int port;
        /* Replicas are remembered as nodes, so a reload can ask them when masters die. */
        for (size_t k = 2; k < e->elements; k++) {
            reply_addr(e->element[k], origin_host, host, sizeof host, &port);
            int n = node_get(c, host, port);
            if (n < 0) {
                free(masters);
                seterr(errstr, errstr_size, "CLUSTER SLOTS: out of memory");
                return LW_RCLUSTER_ERR_NOMEM;
            }
            if (k == 2) {
                int j = 0;
                while (j < n_masters && masters[j] != n)
                    j++;
                if (j == n_masters)
                    masters[n_masters++] = n;
                for (long long s = e->element[0]->integer; s <= e->element[1]->integer; s++)
                    slot[s] = (int16_t)n;
            }
        }
    }
    free(c->masters);
    c->masters = masters;
    c->n_masters = n_masters;
    c->cap_masters = (int)r->elements + 1;
    memcpy(c->slot, slot, sizeof slot);
    c->stale = false;
    c->stats.refreshes++;
    return LW_RCLUSTER_OK;
}

lw_rcluster_err_t lw_rcluster__apply_moved(lw_rcluster_t *c, int slot, const char *host, int port)
{
    if (!c || slot < 0 || slot >= LW_RCLUSTER_SLOTS || !host)
        return LW_RCLUSTER_ERR_INVALID_ARG;
    int n = node_get(c, host, port);
    if (n < 0 || !master_add(c, n))
        return LW_RCLUSTER_ERR_NOMEM;
    c->slot[slot] = (int16_t)n;
    c->stale = true;
    return LW_RCLUSTER_OK;
}

/* Asks node i for CLUSTER SLOTS and applies it. */
static lw_rcluster_err_t refresh_from(lw_rcluster_t *c, int i, char *errstr, size_t errstr_size)
{
    lw_rcluster_err_t err = LW_RCLUSTER_OK;
    redisContext *ctx = node_ctx(c, i, &err, errstr, errstr_size);
    if (!ctx)
        return err;
    redisReply *r = redisCommand(ctx, "CLUSTER SLOTS");
    if (!r) {
        seterr(errstr, errstr_size, "CLUSTER SLOTS on %s:%d: %s", c->nodes[i].host,
               c->nodes[i].port, ctx->errstr);
        node_close(c, i, true);
        return LW_RCLUSTER_ERR_IO;
    }
    if (r->type == REDIS_REPLY_ERROR) {
        lw_rc_kind_t k = lw_rcluster__classify(r, NULL);
        seterr(errstr, errstr_size, "CLUSTER SLOTS on %s:%d: %s", c->nodes[i].host,
               c->nodes[i].port, r->str);
        freeReplyObject(r);
        return k == LW_RC_REPLY ? LW_RCLUSTER_ERR_PROTOCOL : kind_err(k);
    }
    char origin[256];
    snprintf(origin, sizeof origin, "%s", c->nodes[i].host);
    err = lw_rcluster__apply_slots(c, r, origin, errstr, errstr_size);
    freeReplyObject(r);
    return err;
}

static lw_rcluster_err_t refresh_map(lw_rcluster_t *c, char *errstr, size_t errstr_size);

static bool busy(const lw_rcluster_t *c, char *errstr, size_t errstr_size)
{
    if (c->busy)
        seterr(errstr, errstr_size,
               "a batch is in flight on this handle (recv it first, or use "
               "a second handle for a second pipeline)");
    return c->busy != NULL;
}

lw_rcluster_err_t lw_rcluster_refresh(lw_rcluster_t *c, char *errstr, size_t errstr_size)
{
    if (!c)
        return LW_RCLUSTER_ERR_INVALID_ARG;
    if (busy(c, errstr, errstr_size))
        return LW_RCLUSTER_ERR_INVALID_ARG;
    return refresh_map(c, errstr, errstr_size);
}

/* The reload itself, also used inside a batch's rounds (when the batch owns the handle). */
static lw_rcluster_err_t refresh_map(lw_rcluster_t *c, char *errstr, size_t errstr_size)
{
    if (!c->cluster) {
        c->stale = false;
        return LW_RCLUSTER_OK;
    }
    /* Masters first (they know the newest map), then every node ever seen. */
    lw_rcluster_err_t err = LW_RCLUSTER_ERR_CONNECT;
    int n = c->n_nodes;
    char *tried = calloc((size_t)n + 1, 1);
    if (!tried)
        return LW_RCLUSTER_ERR_NOMEM;
    int order_masters = c->n_masters;
    int *m = malloc(((size_t)order_masters + 1) * sizeof *m);
    if (!m) {
        free(tried);
        return LW_RCLUSTER_ERR_NOMEM;
    }
    if (order_masters)
        memcpy(m, c->masters, (size_t)order_masters * sizeof *m);
    for (int k = 0; k < order_masters + n; k++) {
        int i = k < order_masters ? m[k] : k - order_masters;
        if (i >= n || tried[i])
            continue;
        tried[i] = 1;
        err = refresh_from(c, i, errstr, errstr_size);
        if (err == LW_RCLUSTER_OK || err == LW_RCLUSTER_ERR_NOMEM || err == LW_RCLUSTER_ERR_AUTH)
            break;
    }
    free(m);
    free(tried);
    return err;
}

/* ---- The handle ------------------------------------------------------------------ */

static lw_rcluster_t *rc_alloc(const lw_redis_url_t *url, const lw_rcluster_opts_t *opts)
{
    lw_rcluster_t *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->url = *url;
    if (opts)
        c->opts = *opts;
    else
        lw_rcluster_opts_init(&c->opts);
    if (c->opts.timeout_ms <= 0)
        c->opts.timeout_ms = 2000;
    if (c->opts.backoff_min_ms <= 0)
        c->opts.backoff_min_ms = 1;
    if (c->opts.backoff_max_ms < c->opts.backoff_min_ms)
        c->opts.backoff_max_ms = c->opts.backoff_min_ms;
    if (c->opts.retry_ms < 0)
        c->opts.retry_ms = 0;
    if (c->opts.max_redirects <= 0)
        c->opts.max_redirects = 1;
    for (int s = 0; s < LW_RCLUSTER_SLOTS; s++)
        c->slot[s] = -1;
    return c;
}

lw_rcluster_t *lw_rcluster__new_offline(const lw_redis_url_t *url)
{
    lw_rcluster_t *c = url ? rc_alloc(url, NULL) : NULL;
    if (c)
        c->cluster = true;
    return c;
}

lw_rcluster_err_t lw_rcluster_new(const lw_redis_url_t *url, const lw_rcluster_opts_t *opts,
                                  lw_rcluster_t **out, char *errstr, size_t errstr_size)
{
    if (!out)
        return LW_RCLUSTER_ERR_INVALID_ARG;
    *out = NULL;
    if (!url) {
        seterr(errstr, errstr_size, "no Redis URL");
        return LW_RCLUSTER_ERR_INVALID_ARG;
    }
    lw_rcluster_t *c = rc_alloc(url, opts);
    if (!c) {
        seterr(errstr, errstr_size, "out of memory");
        return LW_RCLUSTER_ERR_NOMEM;
    }
    /* The seed is node 0 under its own address (a unix path in single mode). */
    int seed = node_get(c, url->path[0] ? url->path : url->host, url->path[0] ? 1 : url->port);
    lw_rcluster_err_t err = LW_RCLUSTER_OK;
    redisContext *ctx = seed < 0 ? NULL : node_ctx(c, seed, &err, errstr, errstr_size);
    if (!ctx) {
        if (seed < 0) {
            seterr(errstr, errstr_size, "bad Redis address");
            err = LW_RCLUSTER_ERR_INVALID_ARG;
        }
        lw_rcluster_destroy(c);
        return err;
    }
    redisReply *r = redisCommand(ctx, "INFO cluster");
    if (!r || r->type != REDIS_REPLY_STRING) {
        seterr(errstr, errstr_size, "INFO cluster on %s:%d: %s", c->nodes[seed].host,
               c->nodes[seed].port, r ? (r->str ? r->str : "unexpected reply") : ctx->errstr);
        err = r ? LW_RCLUSTER_ERR_PROTOCOL : LW_RCLUSTER_ERR_IO;
        freeReplyObject(r);
        lw_rcluster_destroy(c);
        return err;
    }
    c->cluster = strstr(r->str, "cluster_enabled:1") != NULL;
    freeReplyObject(r);
    if (!c->cluster) {
        for (int s = 0; s < LW_RCLUSTER_SLOTS; s++)
            c->slot[s] = (int16_t)seed;
        if (!master_add(c, seed)) {
            lw_rcluster_destroy(c);
            seterr(errstr, errstr_size, "out of memory");
            return LW_RCLUSTER_ERR_NOMEM;
        }
    } else if (url->path[0]) {
        /* The map names TCP addresses; keep the socket only as a way to ask for it. */
        err = refresh_from(c, seed, errstr, errstr_size);
    } else {
        err = refresh_map(c, errstr, errstr_size);
    }
    if (err) {
        lw_rcluster_destroy(c);
        return err;
    }
    *out = c;
    return LW_RCLUSTER_OK;
}

void lw_rcluster_destroy(lw_rcluster_t *c)
{
    if (!c)
        return;
    lw_rcluster_batch_destroy(c->one);
    for (int i = 0; i < c->n_nodes; i++)
        node_close(c, i, false);
    free(c->nodes);
    free(c->masters);
    free(c);
}

bool lw_rcluster_is_cluster(const lw_rcluster_t *c)
{
    return c && c->cluster;
}

void lw_rcluster_stats(const lw_rcluster_t *c, lw_rcluster_stats_t *out)
{
    if (!out)
        return;
    if (c)
        *out = c->stats;
    else
        memset(out, 0, sizeof *out);
}

int lw_rcluster_master_count(const lw_rcluster_t *c)
{
    return c ? c->n_masters : 0;
}

lw_rcluster_err_t lw_rcluster_master(const lw_rcluster_t *c, int i, const char **host, int *port)
{
    if (!c || i < 0 || i >= c->n_masters)
        return LW_RCLUSTER_ERR_INVALID_ARG;
    if (host)
        *host = c->nodes[c->masters[i]].host;
    if (port)
        *port = c->nodes[c->masters[i]].port;
    return LW_RCLUSTER_OK;
}

int lw_rcluster_slot_master(const lw_rcluster_t *c, int slot)
{
    if (!c || slot < 0 || slot >= LW_RCLUSTER_SLOTS || c->slot[slot] < 0)
        return -1;
    for (int i = 0; i < c->n_masters; i++)
        if (c->masters[i] == c->slot[slot])
            return i;
    return -1;
}

redisContext *lw_rcluster_master_context(lw_rcluster_t *c, int i, char *errstr, size_t errstr_size)
{
    if (!c || i < 0 || i >= c->n_masters) {
        seterr(errstr, errstr_size, "no master %d", i);
        return NULL;
    }
    if (busy(c, errstr, errstr_size))
        return NULL;
    lw_rcluster_err_t err;
    return node_ctx(c, c->masters[i], &err, errstr, errstr_size);
}

/* ---- Batches: building ---------------------------------------------------------------- */

lw_rcluster_batch_t *lw_rcluster_batch_new(lw_rcluster_t *c)
{
    if (!c)
        return NULL;
    lw_rcluster_batch_t *b = calloc(1, sizeof *b);
    if (b)
        b->c = c;
    return b;
}

void lw_rcluster_batch_reset(lw_rcluster_batch_t *b)
{
    if (!b)
        return;
    if (b->sent && b->c->busy == b) {
        /* Dropped in flight: its replies would be read by the next call; reconnect instead. */
        for (int i = 0; i < b->c->n_nodes; i++)
            node_close(b->c, i, false);
        b->c->busy = NULL;
    }
    b->text_len = 0;
    lw_rc_arena_reset(&b->arena);
    b->n_cmds = b->n_groups = b->n_pend = b->n_waits = 0;
    b->sent = false;
    b->in_multi = false;
}

void lw_rcluster_batch_destroy(lw_rcluster_batch_t *b)
{
    if (!b)
        return;
    lw_rcluster_batch_reset(b);
    free(b->cmds);
    free(b->groups);
    free(b->pend);
    free(b->waits);
    free(b->touched);
    free(b->text);
    lw_rc_arena_free(&b->arena);
    free(b);
}

/* Grows *arr to hold n+1 elements of size sz. */
static bool grow(void **arr, size_t *cap, size_t n, size_t sz)
{
    if (n < *cap)
        return true;
    size_t nc = *cap ? *cap * 2 : 16;
    void *p = realloc(*arr, nc * sz);
    if (!p)
        return false;
    *arr = p;
    *cap = nc;
    return true;
}

int lw_rcluster_batch_group(lw_rcluster_batch_t *b, int slot)
{
    if (!b || slot < 0 || slot >= LW_RCLUSTER_SLOTS || b->sent ||
        !grow((void **)&b->groups, &b->cap_groups, b->n_groups, sizeof *b->groups))
        return -1;
    rc_group_t *g = &b->groups[b->n_groups];
    memset(g, 0, sizeof *g);
    g->slot = slot;
    g->first = b->n_cmds;
    g->node = -1;
    g->landed = -1;
    b->in_multi = false;
    return (int)b->n_groups++;
}

/* Which of MULTI, EXEC or DISCARD formatted RESP ("*N\r\n$len\r\nNAME\r\n...")
 * is, if any: a batch's transactions are marked by them. Read without strtol
 * or a search, as every command of a batch passes here (the three calls of
 * strtol and memchr this replaced were 3 % of a cluster consumer's CPU). */
typedef enum { NAME_OTHER = 0, NAME_MULTI, NAME_EXEC, NAME_DISCARD } resp_name_t;

static resp_name_t resp_name(const char *buf, size_t len)
{
    size_t i = 1;
    while (i < len && buf[i] >= '0' && buf[i] <= '9')
        i++;
    /* "\r\n$" then a one-digit length, "\r\n", the name */
    if (len - i < 6 || buf[i] != '\r' || buf[i + 1] != '\n' || buf[i + 2] != '$' ||
        buf[i + 4] != '\r' || buf[i + 5] != '\n')
        return NAME_OTHER;
    size_t n = (size_t)(buf[i + 3] - '0');
    const char *name = buf + i + 6;
    if (len - i - 6 < n)
        return NAME_OTHER;
    if (n == 5 && !strncasecmp(name, "MULTI", 5))
        return NAME_MULTI;
    if (n == 4 && !strncasecmp(name, "EXEC", 4))
        return NAME_EXEC;
    if (n == 7 && !strncasecmp(name, "DISCARD", 7))
        return NAME_DISCARD;
    return NAME_OTHER;
}

/* Appends one command's RESP (copied) to the latest group. */
static lw_rcluster_err_t add_command(lw_rcluster_batch_t *b, const char *buf, size_t len)
{
    if (!grow((void **)&b->cmds, &b->cap_cmds, b->n_cmds, sizeof *b->cmds))
        return LW_RCLUSTER_ERR_NOMEM;
    if (len > b->text_cap - b->text_len) {
        size_t nc = b->text_cap ? b->text_cap : 4096;
        while (nc - b->text_len < len)
            if ((nc *= 2) > SIZE_MAX / 4)
                return LW_RCLUSTER_ERR_NOMEM;
        char *t = realloc(b->text, nc);
        if (!t)
            return LW_RCLUSTER_ERR_NOMEM;
        b->text = t;
        b->text_cap = nc;
    }
    memcpy(b->text + b->text_len, buf, len);
    rc_group_t *g = &b->groups[b->n_groups - 1];
    rc_cmd_t *cmd = &b->cmds[b->n_cmds++];
    cmd->off = b->text_len;
    cmd->len = len;
    b->text_len += len;
    cmd->reply = NULL;
    cmd->node = -1;
    cmd->gen = 0;
    resp_name_t name = resp_name(buf, len);
    if (name == NAME_MULTI) {
        g->multi = true;
        b->in_multi = true;
        cmd->queued = false;
    } else {
        cmd->queued = b->in_multi;
        if (name == NAME_EXEC || name == NAME_DISCARD)
            b->in_multi = false;
    }
    g->n++;
    return LW_RCLUSTER_OK;
}

/* A command formatted by hiredis: copied in, then freed. */
static lw_rcluster_err_t add_formatted(lw_rcluster_batch_t *b, char *buf, int len)
{
    if (len < 0 || !buf) {
        redisFreeCommand(buf);
        return len == -2 ? LW_RCLUSTER_ERR_INVALID_ARG : LW_RCLUSTER_ERR_NOMEM;
    }
    lw_rcluster_err_t err = add_command(b, buf, (size_t)len);
    redisFreeCommand(buf);
    return err;
}

lw_rcluster_err_t lw_rcluster_batch_append_argv(lw_rcluster_batch_t *b, int argc, const char **argv,
                                                const size_t *argvlen)
{
    if (!b || !b->n_groups || b->sent || argc <= 0 || !argv)
        return LW_RCLUSTER_ERR_INVALID_ARG;
    char *buf = NULL;
    int len = redisFormatCommandArgv(&buf, argc, argv, argvlen);
    return add_formatted(b, buf, len);
}

static lw_rcluster_err_t batch_vappendf(lw_rcluster_batch_t *b, const char *fmt, va_list ap)
{
    if (!b || !b->n_groups || b->sent || !fmt)
        return LW_RCLUSTER_ERR_INVALID_ARG;
    char *buf = NULL;
    int len = redisvFormatCommand(&buf, fmt, ap);
    return add_formatted(b, buf, len);
}

/*
 * True when buf is exactly one command in RESP: "*N\r\n" then N bulk strings
 * "$len\r\n<len bytes>\r\n", nothing after. Replies are paired with commands
 * by count, so a buffer holding two commands (or half of one) would shift
 * every later reply onto the wrong command: refused instead.
 */
static bool resp_one_command(const char *buf, size_t len)
{
    size_t i = 0;
    long long n = -1;
    for (long long part = -1; part < 0 || part < n; part++) {
        if (i >= len || buf[i] != (part < 0 ? '*' : '$'))
            return false;
        long long v = 0;
        size_t j = i + 1;
        for (; j < len && buf[j] >= '0' && buf[j] <= '9' && v < (1LL << 40); j++)
            v = v * 10 + (buf[j] - '0');
        if (j == i + 1 || j + 1 >= len || buf[j] != '\r' || buf[j + 1] != '\n')
            return false;
        i = j + 2;
        if (part < 0) {
            if (v < 1 || v > INT32_MAX)
                return false;
            n = v;
            continue;
        }
        if ((unsigned long long)v > len - i || len - i - (size_t)v < 2 || buf[i + v] != '\r' ||
            buf[i + v + 1] != '\n')
            return false;
        i += (size_t)v + 2;
    }
    return i == len;
}

lw_rcluster_err_t lw_rcluster_batch_append_resp(lw_rcluster_batch_t *b, const char *resp,
                                                size_t len)
{
    if (!b || !b->n_groups || b->sent || !resp || len > INT32_MAX || !resp_one_command(resp, len))
        return LW_RCLUSTER_ERR_INVALID_ARG;
    return add_command(b, resp, len);
}

lw_rcluster_err_t lw_rcluster_batch_appendf(lw_rcluster_batch_t *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    lw_rcluster_err_t err = batch_vappendf(b, fmt, ap);
    va_end(ap);
    return err;
}

size_t lw_rcluster_batch_groups(const lw_rcluster_batch_t *b)
{
    return b ? b->n_groups : 0;
}

lw_rcluster_err_t lw_rcluster_group_err(const lw_rcluster_batch_t *b, size_t g)
{
    if (!b || g >= b->n_groups)
        return LW_RCLUSTER_ERR_INVALID_ARG;
    const rc_group_t *gr = &b->groups[g];
    if (gr->state == G_DONE)
        return LW_RCLUSTER_OK;
    return gr->err ? gr->err : LW_RCLUSTER_ERR_INVALID_ARG;
}

size_t lw_rcluster_group_size(const lw_rcluster_batch_t *b, size_t g)
{
    return b && g < b->n_groups ? b->groups[g].n : 0;
}

const redisReply *lw_rcluster_group_reply(const lw_rcluster_batch_t *b, size_t g, size_t i)
{
    if (!b || g >= b->n_groups || i >= b->groups[g].n)
        return NULL;
    return b->cmds[b->groups[g].first + i].reply;
}

/* ---- Batches: rounds ----------------------------------------------------------------- */

static void group_retry(rc_group_t *g, lw_rcluster_err_t err, const char *fmt, ...)
{
    g->err = err;
    g->node = -1;
    g->asking = false;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g->why, sizeof g->why, fmt, ap);
    va_end(ap);
}

static bool pend_add(lw_rcluster_batch_t *b, int node, size_t g, size_t cmd, bool asking)
{
    if (!grow((void **)&b->pend, &b->cap_pend, b->n_pend, sizeof *b->pend))
        return false;
    b->pend[b->n_pend++] = (rc_pend_t){node, g, cmd, asking};
    return true;
}

static const char ASKING_CMD[] = "*1\r\n$6\r\nASKING\r\n";

/*
 * Appends every pending group to its node and writes every node. A group whose
 * node cannot be reached gets a retriable error and waits for the next round.
 * NOMEM is the only failure.
 */
/*
 * Writes the output of every touched node at once. A cluster batch's writes
 * are megabytes a node, and a blocking write returns only once its node has
 * read what the kernel cannot hold, so the nodes after it sat idle meanwhile.
 * Here the sockets are non-blocking for the write and poll() feeds whichever
 * node takes more. The bytes go from hiredis's output buffer by offset, and
 * the buffer is emptied at the end: redisBufferWrite() moves the unwritten
 * rest to the front after each partial write. A node that fails, or takes
 * nothing for the connection's timeout, is closed: its replies read as lost.
 */
static void write_all(lw_rcluster_t *c, const int *touched, size_t n)
{
    struct pollfd *pf = calloc(n ? n : 1, sizeof *pf);
    size_t *off = calloc(n ? n : 1, sizeof *off), *at = calloc(n ? n : 1, sizeof *at);
    int *flags = calloc(n ? n : 1, sizeof *flags);
    if (!pf || !off || !at || !flags) { /* one node after the other, blocking */
        for (size_t k = 0; k < n; k++) {
            redisContext *ctx = c->nodes[touched[k]].ctx;
            int done = 0;
            while (ctx && !done)
                if (redisBufferWrite(ctx, &done) != REDIS_OK) {
                    node_close(c, touched[k], true);
                    break;
                }
        }
        goto done;
    }
    for (size_t k = 0; k < n; k++) {
        redisContext *ctx = c->nodes[touched[k]].ctx;
        flags[k] = ctx ? fcntl(ctx->fd, F_GETFL) : -1;
        if (flags[k] != -1 && fcntl(ctx->fd, F_SETFL, flags[k] | O_NONBLOCK) == -1)
            flags[k] = -1; /* stays blocking: written whole below */
    }
    for (;;) {
        nfds_t np = 0;
        for (size_t k = 0; k < n; k++) {
            redisContext *ctx = c->nodes[touched[k]].ctx;
            size_t len = ctx ? sdslen(ctx->obuf) : 0;
            if (!ctx || off[k] >= len)
                continue;
            ssize_t w = write(ctx->fd, ctx->obuf + off[k], len - off[k]);
            if (w > 0)
                off[k] += (size_t)w;
            else if (w == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
                node_close(c, touched[k], true);
                continue;
            }
            if (off[k] < len) {
                pf[np].fd = ctx->fd;
                pf[np].events = POLLOUT;
                pf[np].revents = 0;
                at[np++] = k;
            }
        }
        if (np == 0)
            break;
        int r = poll(pf, np, c->opts.timeout_ms);
        if (r == 0 || (r < 0 && errno != EINTR)) {
            for (nfds_t i = 0; i < np; i++)
                node_close(c, touched[at[i]], true);
            break;
        }
    }
    for (size_t k = 0; k < n; k++) {
        redisContext *ctx = c->nodes[touched[k]].ctx;
        if (!ctx)
            continue;
        sdsclear(ctx->obuf);
        if (flags[k] != -1 && fcntl(ctx->fd, F_SETFL, flags[k]) == -1)
            node_close(c, touched[k], true); /* a blocking read would spin on EAGAIN */
    }
done:
    free(pf);
    free(off);
    free(at);
    free(flags);
}

static lw_rcluster_err_t round_send(lw_rcluster_batch_t *b)
{
    lw_rcluster_t *c = b->c;
    b->n_pend = 0;
    b->n_touched = 0;
    for (size_t gi = 0; gi < b->n_groups; gi++) {
        rc_group_t *g = &b->groups[gi];
        g->in_round = false;
        g->lost = false;
        if (g->state != G_PENDING)
            continue;
        if (g->n == 0) { /* an empty group has nothing to run */
            g->state = G_DONE;
            g->err = LW_RCLUSTER_OK;
            continue;
        }
        int node = g->node >= 0 ? g->node : c->slot[g->slot];
        if (node < 0) {
            group_retry(g, LW_RCLUSTER_ERR_CLUSTERDOWN, "slot %d is served by no master", g->slot);
            continue;
        }
        lw_rcluster_err_t err = LW_RCLUSTER_OK;
        char why[256];
        redisContext *ctx = node_ctx(c, node, &err, why, sizeof why);
        if (!ctx) {
            group_retry(g, err, "%s", why);
            if (!lw_rcluster_err_is_retriable(err))
                g->state = G_FAILED; /* AUTH refused: retrying cannot mend it */
            continue;
        }
        size_t k;
        for (k = 0; k < b->n_touched && b->touched[k] != node; k++)
            ;
        if (k == b->n_touched) {
            if (!grow((void **)&b->touched, &b->cap_touched, b->n_touched, sizeof *b->touched))
                return LW_RCLUSTER_ERR_NOMEM;
            b->touched[b->n_touched++] = node;
        }
        g->in_round = true;
        g->landed = node;
        for (size_t i = g->first; i < g->first + g->n; i++) {
            rc_cmd_t *cmd = &b->cmds[i];
            if (cmd->reply) /* answered in an earlier round (groups without MULTI) */
                continue;
            if (g->asking && !cmd->queued) {
                if (redisAppendFormattedCommand(ctx, ASKING_CMD, sizeof ASKING_CMD - 1) !=
                        REDIS_OK ||
                    !pend_add(b, node, gi, 0, true))
                    return LW_RCLUSTER_ERR_NOMEM;
            }
            if (redisAppendFormattedCommand(ctx, b->text + cmd->off, cmd->len) != REDIS_OK ||
                !pend_add(b, node, gi, i, false))
                return LW_RCLUSTER_ERR_NOMEM;
        }
    }
    write_all(c, b->touched, b->n_touched);
    return LW_RCLUSTER_OK;
}

/* Reads every reply of the round, in the order appended (each node answers in order). */
static void round_read(lw_rcluster_batch_t *b)
{
    lw_rcluster_t *c = b->c;
    for (size_t k = 0; k < b->n_pend; k++) {
        rc_pend_t *p = &b->pend[k];
        redisContext *ctx = c->nodes[p->node].ctx;
        redisReply *r = NULL;
        /* built in the batch's arena; a partial reply of an error is left there */
        if (ctx && lw_reply_arena_get(&b->arena, ctx, &r) != REDIS_OK) {
            r = NULL;
            node_close(c, p->node, true);
        }
        if (p->asking)
            continue; /* its reply stays in the arena until the batch is rewound */
        rc_cmd_t *cmd = &b->cmds[p->cmd];
        cmd->reply = r;
        cmd->node = p->node;
        cmd->gen = c->nodes[p->node].gen;
        if (!r)
            b->groups[p->g].lost = true;
    }
    b->n_pend = 0;
}

/*
 * Decides each group of the round: done; redirected (MOVED, ASK: resent in
 * the next round at once); or retriable, which sets *pause. Replies that must
 * be sent again are freed.
 */
static lw_rcluster_err_t judge(lw_rcluster_batch_t *b, bool *pause)
{
    lw_rcluster_t *c = b->c;
    *pause = false;
    for (size_t gi = 0; gi < b->n_groups; gi++) {
        rc_group_t *g = &b->groups[gi];
        if (g->state != G_PENDING || !g->in_round)
            continue;
        g->in_round = false;
        int node = g->landed;
        g->landed = -1;
        lw_rc_redirect_t red, first = {.kind = LW_RC_REPLY};
        bool resend = g->lost;
        for (size_t i = g->first; i < g->first + g->n; i++) {
            rc_cmd_t *cmd = &b->cmds[i];
            lw_rc_kind_t kd = lw_rcluster__classify(cmd->reply, &red);
            /* MOVED outranks the rest: it says where the slot is now. */
            if (kd != LW_RC_REPLY &&
                (first.kind == LW_RC_REPLY || (kd == LW_RC_MOVED && first.kind != LW_RC_MOVED)))
                first = red;
            if (kd != LW_RC_REPLY)
                cmd->reply = NULL;
            if (!cmd->reply)
                resend = true;
        }
        if (!resend) {
            g->state = G_DONE;
            g->err = LW_RCLUSTER_OK;
            g->landed = node;
            continue;
        }
        if (g->multi) /* nothing of a transaction ran: send it all again */
            for (size_t i = g->first; i < g->first + g->n; i++)
                b->cmds[i].reply = NULL;
        /* Copied: following a redirect may add a node and move c->nodes. */
        char nh[256];
        snprintf(nh, sizeof nh, "%s", c->nodes[node].host);
        int np = c->nodes[node].port;
        if (first.kind == LW_RC_MOVED || first.kind == LW_RC_ASK) {
            if (++g->hops > c->opts.max_redirects) {
                group_retry(g, LW_RCLUSTER_ERR_REDIRECTS, "slot %d: more than %d redirects",
                            g->slot, c->opts.max_redirects);
                *pause = true;
                continue;
            }
            /* An empty host means "the node you asked" (Redis without a known address). */
            const char *th = first.host[0] ? first.host : nh;
            if (first.kind == LW_RC_MOVED) {
                c->stats.moved++;
                lw_rcluster_err_t err = lw_rcluster__apply_moved(c, first.slot, th, first.port);
                if (err)
                    return err;
                g->node = -1;
                g->asking = false;
            } else {
                c->stats.ask++;
                int n = node_get(c, th, first.port);
                if (n < 0)
                    return LW_RCLUSTER_ERR_NOMEM;
                g->node = n;
                g->asking = true;
            }
            g->err = LW_RCLUSTER_ERR_REDIRECTS;
            snprintf(g->why, sizeof g->why, "%s %d %s:%d",
                     first.kind == LW_RC_MOVED ? "MOVED" : "ASK", first.slot, th, first.port);
            continue;
        }
        *pause = true;
        c->stale = true;
        if (first.kind != LW_RC_REPLY)
            group_retry(g, kind_err(first.kind), "%s:%d answered %s", nh, np,
                        first.kind == LW_RC_TRYAGAIN      ? "TRYAGAIN"
                        : first.kind == LW_RC_CLUSTERDOWN ? "CLUSTERDOWN"
                                                          : "LOADING/READONLY");
        else
            group_retry(g, LW_RCLUSTER_ERR_IO, "connection to %s:%d lost", nh, np);
    }
    return LW_RCLUSTER_OK;
}

lw_rcluster_err_t lw_rcluster_batch_send(lw_rcluster_batch_t *b, char *errstr, size_t errstr_size)
{
    if (!b || b->sent) {
        seterr(errstr, errstr_size, "batch already sent (recv or reset it first)");
        return LW_RCLUSTER_ERR_INVALID_ARG;
    }
    if (busy(b->c, errstr, errstr_size))
        return LW_RCLUSTER_ERR_INVALID_ARG;
    b->c->busy = b;
    b->sent = true;
    b->n_waits = 0;
    for (size_t i = 0; i < b->n_groups; i++) {
        rc_group_t *g = &b->groups[i];
        g->state = G_PENDING;
        g->node = -1;
        g->asking = false;
        g->hops = 0;
        g->landed = -1;
        g->err = LW_RCLUSTER_OK;
        g->why[0] = '\0';
    }
    for (size_t i = 0; i < b->n_cmds; i++)
        b->cmds[i].reply = NULL;
    lw_rc_arena_reset(&b->arena);
    lw_rcluster_err_t err = LW_RCLUSTER_OK;
    if (b->c->stale)
        refresh_map(b->c, NULL, 0); /* a failure shows in the round */
    err = round_send(b);
    if (err) {
        /* Replies of what was written stay unread: start afresh on new connections. */
        for (int i = 0; i < b->c->n_nodes; i++)
            node_close(b->c, i, false);
        b->sent = false;
        b->c->busy = NULL;
        seterr(errstr, errstr_size, "%s", lw_rcluster_err2str(err));
    }
    return err;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

lw_rcluster_err_t lw_rcluster_batch_recv(lw_rcluster_batch_t *b, char *errstr, size_t errstr_size)
{
    if (!b || !b->sent) {
        seterr(errstr, errstr_size, "recv without send");
        return LW_RCLUSTER_ERR_INVALID_ARG;
    }
    lw_rcluster_t *c = b->c;
    int64_t start = now_ms();
    int delay = c->opts.backoff_min_ms;
    lw_rcluster_err_t err = LW_RCLUSTER_OK;
    for (;;) {
        round_read(b);
        bool pause = false;
        err = judge(b, &pause);
        if (err)
            break;
        /* Groups that found no node in round_send are pending without a pending entry. */
        bool pending = false;
        for (size_t i = 0; i < b->n_groups; i++)
            if (b->groups[i].state == G_PENDING) {
                pending = true;
                if (b->groups[i].err && b->groups[i].err != LW_RCLUSTER_ERR_REDIRECTS)
                    pause = true;
            }
        if (!pending)
            break;
        if (b->n_touched == 0) /* nothing could be sent: never spin without a pause */
            pause = true;
        if (pause) {
            if (now_ms() - start + delay > c->opts.retry_ms)
                break;
            c->stats.backoffs++;
            sleep_ms(delay);
            delay = delay * 2 > c->opts.backoff_max_ms ? c->opts.backoff_max_ms : delay * 2;
            for (size_t i = 0; i < b->n_groups; i++)
                b->groups[i].hops = 0;
            c->stale = true;
        }
        if (c->stale)
            refresh_map(c, NULL, 0); /* a failure shows in the next round */
        err = round_send(b);
        if (err)
            break;
    }
    if (err) /* NOMEM mid-round: replies may be left unread on the connections */
        for (int i = 0; i < c->n_nodes; i++)
            node_close(c, i, false);
    b->sent = false;
    b->n_pend = 0;
    c->busy = NULL;
    if (err) {
        seterr(errstr, errstr_size, "%s", lw_rcluster_err2str(err));
        return err;
    }
    for (size_t i = 0; i < b->n_groups; i++) {
        rc_group_t *g = &b->groups[i];
        if (g->state == G_PENDING) {
            g->state = G_FAILED;
            if (!g->err)
                g->err = LW_RCLUSTER_ERR_IO;
        }
    }
    for (size_t i = 0; i < b->n_groups; i++) {
        rc_group_t *g = &b->groups[i];
        if (g->state == G_FAILED) {
            seterr(errstr, errstr_size, "group %zu (slot %d): gave up after %lld ms: %s", i,
                   g->slot, (long long)(now_ms() - start), g->why[0] ? g->why : "no reply");
            return g->err;
        }
    }
    return LW_RCLUSTER_OK;
}

/* ---- WAIT ---------------------------------------------------------------------------- */

lw_rcluster_err_t lw_rcluster_batch_wait(lw_rcluster_batch_t *b, int numreplicas, int timeout_ms,
                                         char *errstr, size_t errstr_size)
{
    if (!b || b->sent || numreplicas < 0 || timeout_ms < 0) {
        seterr(errstr, errstr_size, "wait: bad arguments or recv not done");
        return LW_RCLUSTER_ERR_INVALID_ARG;
    }
    if (busy(b->c, errstr, errstr_size))
        return LW_RCLUSTER_ERR_INVALID_ARG;
    lw_rcluster_t *c = b->c;
    b->n_waits = 0;
    /*
     * One entry per node where a command of a finished group ran (a plain group
     * can have run partly on an ASK target); a connection reopened since
     * cannot vouch for it.
     */
    for (size_t i = 0; i < b->n_groups; i++) {
        rc_group_t *g = &b->groups[i];
        if (g->state != G_DONE)
            continue;
        for (size_t ci = g->first; ci < g->first + g->n; ci++) {
            const rc_cmd_t *cmd = &b->cmds[ci];
            if (cmd->node < 0 || cmd->node >= c->n_nodes)
                continue;
            size_t k;
            for (k = 0; k < b->n_waits; k++)
                if (b->waits[k].node == cmd->node)
                    break;
            bool same = c->nodes[cmd->node].ctx && c->nodes[cmd->node].gen == cmd->gen;
            if (k == b->n_waits) {
                if (!grow((void **)&b->waits, &b->cap_waits, b->n_waits, sizeof *b->waits))
                    return LW_RCLUSTER_ERR_NOMEM;
                b->waits[b->n_waits++] = (rc_wait_t){cmd->node, same ? 0 : -1};
            } else if (!same) {
                b->waits[k].replicas = -1;
            }
        }
    }
    char cmd[64];
    int len = snprintf(cmd, sizeof cmd, "*3\r\n$4\r\nWAIT\r\n$%d\r\n%d\r\n$%d\r\n%d\r\n",
                       snprintf(NULL, 0, "%d", numreplicas), numreplicas,
                       snprintf(NULL, 0, "%d", timeout_ms), timeout_ms);
    /* All asked first, so the nodes' replicas are waited for at the same time. */
    for (size_t k = 0; k < b->n_waits; k++) {
        rc_wait_t *w = &b->waits[k];
        redisContext *ctx = c->nodes[w->node].ctx;
        if (w->replicas < 0 || !ctx)
            continue;
        struct timeval tv = {(timeout_ms + c->opts.timeout_ms) / 1000,
                             ((timeout_ms + c->opts.timeout_ms) % 1000) * 1000};
        redisSetTimeout(ctx, tv);
        int done = 0;
        if (redisAppendFormattedCommand(ctx, cmd, (size_t)len) != REDIS_OK)
            return LW_RCLUSTER_ERR_NOMEM;
        while (!done)
            if (redisBufferWrite(ctx, &done) != REDIS_OK) {
                node_close(c, w->node, true);
                w->replicas = -1;
                break;
            }
    }
    lw_rcluster_err_t err = LW_RCLUSTER_OK;
    for (size_t k = 0; k < b->n_waits; k++) {
        rc_wait_t *w = &b->waits[k];
        rc_node_t *n = &c->nodes[w->node];
        if (w->replicas >= 0 && n->ctx) {
            redisReply *r = NULL;
            if (redisGetReply(n->ctx, (void **)&r) != REDIS_OK) {
                node_close(c, w->node, true);
                w->replicas = -1;
            } else {
                w->replicas = r && r->type == REDIS_REPLY_INTEGER ? r->integer : -1;
                struct timeval tv = {c->opts.timeout_ms / 1000, (c->opts.timeout_ms % 1000) * 1000};
                redisSetTimeout(n->ctx, tv);
            }
            freeReplyObject(r);
        }
        if (w->replicas < numreplicas && !err) {
            err = LW_RCLUSTER_ERR_NOT_REPLICATED;
            if (w->replicas < 0)
                seterr(errstr, errstr_size, "WAIT on %s:%d: its connection broke after the writes",
                       n->host, n->port);
            else
                seterr(errstr, errstr_size, "WAIT on %s:%d: %lld of %d replicas in %d ms", n->host,
                       n->port, w->replicas, numreplicas, timeout_ms);
        }
    }
    return err;
}

size_t lw_rcluster_batch_wait_nodes(const lw_rcluster_batch_t *b)
{
    return b ? b->n_waits : 0;
}

lw_rcluster_err_t lw_rcluster_batch_wait_node(const lw_rcluster_batch_t *b, size_t i,
                                              const char **host, int *port, long long *replicas)
{
    if (!b || i >= b->n_waits)
        return LW_RCLUSTER_ERR_INVALID_ARG;
    const rc_node_t *n = &b->c->nodes[b->waits[i].node];
    if (host)
        *host = n->host;
    if (port)
        *port = n->port;
    if (replicas)
        *replicas = b->waits[i].replicas;
    return LW_RCLUSTER_OK;
}

/* ---- One command, and every master ----------------------------------------------------- */

static lw_rcluster_err_t one_run(lw_rcluster_t *c, redisReply **reply, char *errstr,
                                 size_t errstr_size)
{
    lw_rcluster_batch_t *b = c->one;
    lw_rcluster_err_t err = lw_rcluster_batch_send(b, errstr, errstr_size);
    if (!err)
        err = lw_rcluster_batch_recv(b, errstr, errstr_size);
    /* the caller's to free: a heap copy of the batch's arena object */
    if (!err && !(*reply = lw_rc_reply_clone(b->cmds[0].reply)) && b->cmds[0].reply) {
        seterr(errstr, errstr_size, "out of memory");
        err = LW_RCLUSTER_ERR_NOMEM;
    }
    lw_rcluster_batch_reset(b);
    return err;
}

static lw_rcluster_err_t one_prepare(lw_rcluster_t *c, int slot, redisReply **reply)
{
    if (!c || !reply || slot < 0 || slot >= LW_RCLUSTER_SLOTS || c->busy)
        return LW_RCLUSTER_ERR_INVALID_ARG;
    *reply = NULL;
    if (!c->one && !(c->one = lw_rcluster_batch_new(c)))
        return LW_RCLUSTER_ERR_NOMEM;
    lw_rcluster_batch_reset(c->one);
    return lw_rcluster_batch_group(c->one, slot) < 0 ? LW_RCLUSTER_ERR_NOMEM : LW_RCLUSTER_OK;
}

lw_rcluster_err_t lw_rcluster_command_argv(lw_rcluster_t *c, int slot, int argc, const char **argv,
                                           const size_t *argvlen, redisReply **reply, char *errstr,
                                           size_t errstr_size)
{
    lw_rcluster_err_t err = one_prepare(c, slot, reply);
    if (!err)
        err = lw_rcluster_batch_append_argv(c->one, argc, argv, argvlen);
    if (err) {
        seterr(errstr, errstr_size, "%s", lw_rcluster_err2str(err));
        return err;
    }
    return one_run(c, reply, errstr, errstr_size);
}

lw_rcluster_err_t lw_rcluster_vcommand(lw_rcluster_t *c, int slot, redisReply **reply, char *errstr,
                                       size_t errstr_size, const char *fmt, va_list ap)
{
    lw_rcluster_err_t err = one_prepare(c, slot, reply);
    if (!err)
        err = batch_vappendf(c->one, fmt, ap);
    if (err) {
        seterr(errstr, errstr_size, "%s", lw_rcluster_err2str(err));
        return err;
    }
    return one_run(c, reply, errstr, errstr_size);
}

lw_rcluster_err_t lw_rcluster_command(lw_rcluster_t *c, int slot, redisReply **reply, char *errstr,
                                      size_t errstr_size, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    lw_rcluster_err_t err = lw_rcluster_vcommand(c, slot, reply, errstr, errstr_size, fmt, ap);
    va_end(ap);
    return err;
}

lw_rcluster_err_t lw_rcluster_on_masters(lw_rcluster_t *c, int argc, const char **argv,
                                         const size_t *argvlen, lw_rcluster_master_cb cb,
                                         void *opaque, char *errstr, size_t errstr_size)
{
    if (!c || argc <= 0 || !argv)
        return LW_RCLUSTER_ERR_INVALID_ARG;
    if (busy(c, errstr, errstr_size))
        return LW_RCLUSTER_ERR_INVALID_ARG;
    if (c->stale)
        refresh_map(c, NULL, 0);
    char *buf = NULL;
    int len = redisFormatCommandArgv(&buf, argc, argv, argvlen);
    if (len < 0)
        return LW_RCLUSTER_ERR_NOMEM;
    int nm = c->n_masters;
    lw_rcluster_err_t *errs = calloc((size_t)nm + 1, sizeof *errs);
    int *nodes = malloc(((size_t)nm + 1) * sizeof *nodes);
    if (!errs || !nodes) {
        free(errs);
        free(nodes);
        redisFreeCommand(buf);
        return LW_RCLUSTER_ERR_NOMEM;
    }
    if (nm)
        memcpy(nodes, c->masters, (size_t)nm * sizeof *nodes);
    lw_rcluster_err_t first = LW_RCLUSTER_OK;
    char why[320] = "";
    for (int i = 0; i < nm; i++) {
        redisContext *ctx = node_ctx(c, nodes[i], &errs[i], why, sizeof why);
        if (!ctx || redisAppendFormattedCommand(ctx, buf, (size_t)len) != REDIS_OK) {
            if (!errs[i])
                errs[i] = LW_RCLUSTER_ERR_NOMEM;
            continue;
        }
        int done = 0;
        while (!done)
            if (redisBufferWrite(ctx, &done) != REDIS_OK) {
                snprintf(why, sizeof why, "%.255s:%d: %.40s", c->nodes[nodes[i]].host,
                         c->nodes[nodes[i]].port, ctx->errstr);
                node_close(c, nodes[i], true);
                errs[i] = LW_RCLUSTER_ERR_IO;
                break;
            }
    }
    for (int i = 0; i < nm; i++) {
        rc_node_t *n = &c->nodes[nodes[i]];
        redisReply *r = NULL;
        if (!errs[i] && n->ctx && redisGetReply(n->ctx, (void **)&r) != REDIS_OK) {
            snprintf(why, sizeof why, "%.255s:%d: %.40s", n->host, n->port, n->ctx->errstr);
            node_close(c, nodes[i], true);
            errs[i] = LW_RCLUSTER_ERR_IO;
            r = NULL;
        }
        if (errs[i] && !first) {
            first = errs[i];
            seterr(errstr, errstr_size, "%s", why);
        }
        if (cb)
            cb(opaque, i, n->host, n->port, r, errs[i]);
        freeReplyObject(r);
    }
    free(errs);
    free(nodes);
    redisFreeCommand(buf);
    return first;
}

/* ---- Slot tags --------------------------------------------------------------- */

/* The smallest decimal number whose string hashes to each slot: found once,
 * by counting up (every slot is hit before 200,000). */
static uint32_t slot_tags[LW_RCLUSTER_SLOTS];
static pthread_once_t slot_tags_once = PTHREAD_ONCE_INIT;

/* Decimal digits of n into d (no NUL); their count. */
static int put_decimal(char *d, uint32_t n)
{
    char t[10];
    int k = 0, len = 0;
    do {
        t[k++] = (char)('0' + n % 10);
        n /= 10;
    } while (n);
    while (k)
        d[len++] = t[--k];
    return len;
}

static void slot_tags_fill(void)
{
    size_t left = LW_RCLUSTER_SLOTS;
    bool seen[LW_RCLUSTER_SLOTS] = {false};
    for (uint32_t n = 0; left > 0; n++) {
        char d[10];
        int len = put_decimal(d, n);
        int slot = lw_rcluster_crc16(d, (size_t)len) & (LW_RCLUSTER_SLOTS - 1);
        if (!seen[slot]) {
            seen[slot] = true;
            slot_tags[slot] = n;
            left--;
        }
    }
}

size_t lw_rcluster_slot_tag(int slot, char *buf, size_t cap)
{
    if (slot < 0 || slot >= LW_RCLUSTER_SLOTS || cap < 11)
        return 0;
    pthread_once(&slot_tags_once, slot_tags_fill);
    int n = put_decimal(buf, slot_tags[slot]);
    buf[n] = '\0';
    return (size_t)n;
}
