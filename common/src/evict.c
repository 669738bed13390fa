/*
 * evict.c - the start-up check that Redis will not evict loanwire's keys.
 *
 * Borrower state, epochs and stamps live in Redis only: an evicted borrower
 * would come back as "never seen", and its next event would be applied to an
 * empty state, silently. So a program that talks to Redis refuses to start
 * unless maxmemory-policy is "noeviction" on the node (or on every master of
 * a cluster: each holds its own slots and its own policy).
 *
 * volatile-* is refused too. Today only the human-readable "who is running"
 * hashes (lw:metrics:<consumer>) carry a TTL, so volatile-* would evict only
 * them; but once nothing volatile is left it answers OOM exactly like
 * noeviction, so it gains nothing, and any TTL key added later (a session, a
 * marker) would become silently evictable. One rule, "noeviction or
 * --allow-eviction", is easier to audit.
 *
 * The policy is read with CONFIG GET; a managed Redis often renames CONFIG or
 * an ACL denies it, so INFO memory (maxmemory_policy:) is the fallback. When
 * both are denied the check fails with both answers and the way out (grant
 * +config|get or +info, or pass --allow-eviction), rather than guessing.
 */
#include "loanwire/evict.h"

#include "loanwire/conf.h"
#include "loanwire/log.h"
#include "loanwire/rcluster.h"

#include <hiredis/hiredis.h>
#include <stdio.h>
#include <string.h>

bool lw_redis_policy_evicts(const char *policy)
{
    return !policy || strcmp(policy, "noeviction") != 0;
}

/* The policy of one node into pol, or false with why in errstr. */
static bool node_policy(redisContext *rc, char *pol, size_t cap, char *errstr, size_t errstr_size)
{
    char cfg_err[256] = "", info_err[256] = "";
    redisReply *r = redisCommand(rc, "CONFIG GET maxmemory-policy");
    if (!r) {
        snprintf(errstr, errstr_size, "CONFIG GET: %s", rc->errstr);
        return false;
    }
    if (r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
        r->element[1]->type == REDIS_REPLY_STRING) {
        snprintf(pol, cap, "%s", r->element[1]->str);
        freeReplyObject(r);
        return true;
    }
    snprintf(cfg_err, sizeof cfg_err, "%s",
             r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
    freeReplyObject(r);

    r = redisCommand(rc, "INFO memory");
    if (!r) {
        snprintf(errstr, errstr_size, "INFO memory: %s", rc->errstr);
        return false;
    }
    if (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS) {
        const char *p = strstr(r->str, "maxmemory_policy:");
        if (p) {
            p += strlen("maxmemory_policy:");
            size_t n = strcspn(p, "\r\n");
            snprintf(pol, cap, "%.*s", (int)n, p);
            freeReplyObject(r);
            return true;
        }
        snprintf(info_err, sizeof info_err, "no maxmemory_policy field");
    } else {
        snprintf(info_err, sizeof info_err, "%s",
                 r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
    }
    freeReplyObject(r);
    snprintf(errstr, errstr_size,
             "cannot read maxmemory-policy (CONFIG GET: %s; INFO memory: %s): grant the user "
             "+config|get or +info, or pass --allow-eviction",
             cfg_err, info_err);
    return false;
}

lw_err_t lw_redis_eviction_check(const char *url, bool allow, char *errstr, size_t errstr_size)
{
    lw_redis_url_t u;
    lw_rcluster_t *c = NULL;
    lw_err_t ret = LW_OK;

    if (lw_redis_url_parse(url, &u, errstr, errstr_size) != LW_OK)
        return LW_ERR_CONFIG;
    lw_rcluster_err_t ce = lw_rcluster_new(&u, NULL, &c, errstr, errstr_size);
    if (ce != LW_RCLUSTER_OK)
        return LW_ERR_REDIS; /* unreachable or login refused: the caller's own connect says more */
    int n = lw_rcluster_master_count(c);
    for (int i = 0; i < n && ret == LW_OK; i++) {
        const char *host = "?";
        int port = 0;
        char pol[64], why[512];
        lw_rcluster_master(c, i, &host, &port);
        char where[300];
        if (u.path[0] && !lw_rcluster_is_cluster(c))
            snprintf(where, sizeof where, "%s", u.path);
        else
            snprintf(where, sizeof where, "%s:%d", host, port);
        redisContext *rc = lw_rcluster_master_context(c, i, why, sizeof why);
        if (!rc) {
            snprintf(errstr, errstr_size, "Redis %s: %s", where, why);
            ret = LW_ERR_REDIS;
            break;
        }
        if (!node_policy(rc, pol, sizeof pol, why, sizeof why)) {
            if (allow) {
                lw_warn("Redis %s: %s; going on (--allow-eviction)", where, why);
                continue;
            }
            snprintf(errstr, errstr_size, "Redis %s: %s", where, why);
            ret = LW_ERR_CONFIG;
        } else if (lw_redis_policy_evicts(pol)) {
            if (allow) {
                lw_warn("Redis %s: maxmemory-policy is %s: it may evict borrower state "
                        "(--allow-eviction given)",
                        where, pol);
                continue;
            }
            snprintf(errstr, errstr_size,
                     "Redis %s: maxmemory-policy is %s, which may evict borrower state "
                     "silently; set it to noeviction (CONFIG SET maxmemory-policy noeviction, "
                     "and in redis.conf) or pass --allow-eviction",
                     where, pol);
            ret = LW_ERR_CONFIG;
        }
    }
    lw_rcluster_destroy(c);
    return ret;
}
