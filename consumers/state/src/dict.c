/*
 * dict.c - small integer ids for platform and lender names.
 *
 * Platforms and lenders are a vocabulary of hundreds shared by millions of
 * borrowers, so a borrower's state stores each as a varint id (one byte for
 * the first 127 names) instead of the name. The ids live in one Redis hash,
 * LW_DICT_KEY, in both directions; a name gets its id from one atomic script,
 * so every consumer agrees. Each process keeps what it learnt in a local
 * table: a lookup is a hash probe, and Redis is asked only about new names.
 *
 * The hash is outside any borrower's hash slot, which is fine on Redis
 * Cluster: it is only ever read or written on its own, never inside a
 * borrower's script. The writer interns on the connection of the hash's
 * master (the store picks it); readers resolve through lw_rcluster, which
 * routes the HMGET to the slot of LW_DICT_KEY and rides out MOVED and
 * failovers, on a cluster and on a single Redis alike.
 */
#include "state_int.h"

#include "loanwire/hash.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* KEYS[1] the hash, ARGV[1] the name: its id, given a new one if needed. */
static const char intern_lua[] =
    "local id = redis.call('HGET', KEYS[1], 'n:' .. ARGV[1])\n"
    "if id then return tonumber(id) end\n"
    "id = redis.call('HINCRBY', KEYS[1], '#', 1)\n"
    "redis.call('HSET', KEYS[1], 'n:' .. ARGV[1], id, 'i:' .. id, ARGV[1])\n"
    "return id\n";

typedef struct dict_ent {
    char *name; /* NULL: free slot */
    uint32_t id;
} dict_ent_t;

struct lw_dict_s {
    dict_ent_t *by_name; /* open addressing, power-of-two size */
    size_t cap, n;
    char **by_id; /* id -> name (borrowed from by_name) */
    size_t id_cap;
};

lw_dict_t *lw_dict_new(void)
{
    lw_dict_t *d = calloc(1, sizeof *d);
    if (!d)
        return NULL;
    d->cap = 256;
    d->by_name = calloc(d->cap, sizeof *d->by_name);
    if (!d->by_name) {
        free(d);
        return NULL;
    }
    return d;
}

void lw_dict_clear(lw_dict_t *d)
{
    for (size_t i = 0; i < d->cap; i++) {
        free(d->by_name[i].name);
        d->by_name[i].name = NULL;
    }
    if (d->by_id)
        memset(d->by_id, 0, d->id_cap * sizeof *d->by_id);
    d->n = 0;
}

void lw_dict_destroy(lw_dict_t *d)
{
    if (!d)
        return;
    lw_dict_clear(d);
    free(d->by_name);
    free(d->by_id);
    free(d);
}

uint32_t lw_dict_id(const lw_dict_t *d, const char *name)
{
    for (size_t i = lw_hash_str(name) & (d->cap - 1); d->by_name[i].name;
         i = (i + 1) & (d->cap - 1))
        if (!strcmp(d->by_name[i].name, name))
            return d->by_name[i].id;
    return 0;
}

const char *lw_dict_name(const lw_dict_t *d, uint32_t id)
{
    return id < d->id_cap ? d->by_id[id] : NULL;
}

static bool put(lw_dict_t *d, const char *name, size_t len, uint32_t id)
{
    if (2 * (d->n + 1) > d->cap) {
        size_t nc = d->cap * 2;
        dict_ent_t *ne = calloc(nc, sizeof *ne);
        if (!ne)
            return false;
        for (size_t i = 0; i < d->cap; i++) {
            if (!d->by_name[i].name)
                continue;
            size_t j = lw_hash_str(d->by_name[i].name) & (nc - 1);
            while (ne[j].name)
                j = (j + 1) & (nc - 1);
            ne[j] = d->by_name[i];
        }
        free(d->by_name);
        d->by_name = ne;
        d->cap = nc;
    }
    if (id >= d->id_cap) {
        size_t nc = d->id_cap ? d->id_cap : 256;
        while (nc <= id)
            nc *= 2;
        char **ni = realloc(d->by_id, nc * sizeof *ni);
        if (!ni)
            return false;
        memset(ni + d->id_cap, 0, (nc - d->id_cap) * sizeof *ni);
        d->by_id = ni;
        d->id_cap = nc;
    }
    char *copy = malloc(len + 1);
    if (!copy)
        return false;
    memcpy(copy, name, len);
    copy[len] = '\0';
    size_t i = lw_hash_str(copy) & (d->cap - 1);
    while (d->by_name[i].name && strcmp(d->by_name[i].name, copy))
        i = (i + 1) & (d->cap - 1);
    if (d->by_name[i].name) { /* known already */
        free(copy);
        return true;
    }
    d->by_name[i].name = copy;
    d->by_name[i].id = id;
    d->by_id[id] = copy;
    d->n++;
    return true;
}

static lw_err_t conn_failed(redisContext *rc, const char *what, char *errstr, size_t errstr_size)
{
    snprintf(errstr, errstr_size, "Redis %s: %s", what, rc->errstr[0] ? rc->errstr : "no reply");
    return LW_ERR_TRANSIENT;
}

lw_err_t lw_dict_intern(lw_dict_t *d, redisContext *rc, const char *const *names, size_t n,
                        FILE *tap, char *errstr, size_t errstr_size)
{
    /* the names not known here, each once, in order */
    const char **ask = malloc((n ? n : 1) * sizeof *ask);
    if (!ask) {
        snprintf(errstr, errstr_size, "out of memory");
        return LW_ERR_NOMEM;
    }
    size_t na = 0;
    for (size_t i = 0; i < n; i++) {
        bool dup = lw_dict_id(d, names[i]) != 0;
        for (size_t j = 0; j < na && !dup; j++)
            dup = !strcmp(ask[j], names[i]);
        if (!dup)
            ask[na++] = names[i];
    }
    lw_err_t err = LW_OK;
    for (size_t i = 0; i < na; i++) {
        const char *argv[] = {"EVAL", intern_lua, "1", LW_DICT_KEY, ask[i]};
        size_t argl[] = {4, sizeof intern_lua - 1, 1, strlen(LW_DICT_KEY), strlen(ask[i])};
        if (tap) {
            char *cmd = NULL;
            long long len = redisFormatCommandArgv(&cmd, 5, argv, argl);
            if (len > 0)
                fwrite(cmd, 1, (size_t)len, tap);
            redisFreeCommand(cmd);
        }
        if (redisAppendCommandArgv(rc, 5, argv, argl) != REDIS_OK) {
            free(ask);
            return conn_failed(rc, "EVAL (string ids)", errstr, errstr_size);
        }
    }
    /* every reply is read, even after an error, so the connection stays in step */
    for (size_t i = 0; i < na; i++) {
        redisReply *r = NULL;
        if (redisGetReply(rc, (void **)&r) != REDIS_OK || !r) {
            free(ask);
            return conn_failed(rc, "EVAL (string ids)", errstr, errstr_size);
        }
        if (r->type != REDIS_REPLY_INTEGER || r->integer <= 0 || r->integer > UINT32_MAX) {
            if (err == LW_OK)
                snprintf(errstr, errstr_size, "string id of '%s': %s", ask[i],
                         r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
            err = LW_ERR_REDIS;
        } else if (err == LW_OK && !put(d, ask[i], strlen(ask[i]), (uint32_t)r->integer)) {
            snprintf(errstr, errstr_size, "out of memory");
            err = LW_ERR_NOMEM;
        }
        freeReplyObject(r);
    }
    free(ask);
    return err;
}

lw_err_t lw_dict_resolve(lw_dict_t *d, lw_rcluster_t *cl, const uint32_t *ids, size_t n,
                         char *errstr, size_t errstr_size)
{
    size_t argc = 2;
    const char **argv = malloc((n + 2) * sizeof *argv);
    size_t *argl = malloc((n + 2) * sizeof *argl);
    char(*f)[16] = malloc((n ? n : 1) * sizeof *f);
    uint32_t *want = malloc((n ? n : 1) * sizeof *want);
    redisReply *r = NULL;
    lw_err_t err = LW_OK;
    if (!argv || !argl || !f || !want) {
        err = LW_ERR_NOMEM;
        goto done;
    }
    argv[0] = "HMGET";
    argl[0] = 5;
    argv[1] = LW_DICT_KEY;
    argl[1] = strlen(LW_DICT_KEY);
    size_t nw = 0;
    for (size_t i = 0; i < n; i++) {
        bool dup = lw_dict_name(d, ids[i]) != NULL;
        for (size_t j = 0; j < nw && !dup; j++)
            dup = want[j] == ids[i];
        if (dup)
            continue;
        want[nw] = ids[i];
        argl[argc] = (size_t)snprintf(f[nw], sizeof f[nw], "i:%" PRIu32, ids[i]);
        argv[argc++] = f[nw++];
    }
    if (nw == 0)
        goto done;
    /* routed to the table's own slot, never the borrower's */
    char why[256];
    lw_rcluster_err_t ce =
        lw_rcluster_command_argv(cl, lw_rcluster_keyslot(LW_DICT_KEY, strlen(LW_DICT_KEY)),
                                 (int)argc, argv, argl, &r, why, sizeof why);
    if (ce != LW_RCLUSTER_OK) {
        snprintf(errstr, errstr_size, "Redis HMGET " LW_DICT_KEY ": %s", why);
        err = ce == LW_RCLUSTER_ERR_NOMEM        ? LW_ERR_NOMEM
              : lw_rcluster_err_is_retriable(ce) ? LW_ERR_TRANSIENT
                                                 : LW_ERR_REDIS;
        goto done;
    }
    if (r->type != REDIS_REPLY_ARRAY || r->elements != nw) {
        snprintf(errstr, errstr_size, "HMGET " LW_DICT_KEY ": %s",
                 r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
        err = LW_ERR_REDIS;
    } else {
        for (size_t i = 0; i < nw && err == LW_OK; i++) {
            redisReply *e = r->element[i];
            if (e->type != REDIS_REPLY_STRING || e->len == 0 || e->len > LW_ID_MAX) {
                snprintf(errstr, errstr_size, LW_DICT_KEY " has no name for id %" PRIu32, want[i]);
                err = LW_ERR_REDIS;
            } else if (!put(d, e->str, e->len, want[i])) {
                err = LW_ERR_NOMEM;
            }
        }
    }
done:
    freeReplyObject(r);
    if (err == LW_ERR_NOMEM)
        snprintf(errstr, errstr_size, "out of memory");
    free(argv);
    free(argl);
    free(f);
    free(want);
    return err;
}
