/* redis.c - opening a Redis connection from a parsed redis:// or unix:// URL. */
#include "loanwire/redis.h"

#include <stdio.h>
#include <sys/time.h>

/* Runs one setup command; false with errstr and the error code set when it fails. */
static bool redis_setup(redisContext *rc, const char *what, redisReply *r, lw_err_t *err,
                        char *errstr, size_t errstr_size)
{
    bool ok = r && r->type != REDIS_REPLY_ERROR;
    if (!ok) {
        snprintf(errstr, errstr_size, "Redis %s: %s", what, r ? r->str : rc->errstr);
        *err = r ? LW_ERR_REDIS : LW_ERR_TRANSIENT;
    }
    freeReplyObject(r);
    return ok;
}

redisContext *lw_redis_connect(const lw_redis_url_t *url, int timeout_ms, lw_err_t *err,
                               char *errstr, size_t errstr_size)
{
    lw_err_t dummy;
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    redisContext *rc = url->path[0] ? redisConnectUnixWithTimeout(url->path, tv)
                                    : redisConnectWithTimeout(url->host, url->port, tv);
    if (!err)
        err = &dummy;
    if (!rc || rc->err) {
        snprintf(errstr, errstr_size, "Redis %s:%d: %s", url->path[0] ? url->path : url->host,
                 url->port, rc ? rc->errstr : "out of memory");
        redisFree(rc);
        *err = LW_ERR_TRANSIENT;
        return NULL;
    }
    redisSetTimeout(rc, tv);
    char what[32];
    /* AUTH with the URL's user when it names one (a Redis 6 ACL user), else
     * as the default user. The error is Redis's, which never repeats the
     * password; errstr names the user, not the secret. */
    if (url->user[0]) {
        char what_user[160];
        snprintf(what_user, sizeof what_user, "AUTH as user %s", url->user);
        if (!redis_setup(rc, what_user, redisCommand(rc, "AUTH %s %s", url->user, url->password),
                         err, errstr, errstr_size))
            goto fail;
    } else if (url->password[0] &&
               !redis_setup(rc, "AUTH", redisCommand(rc, "AUTH %s", url->password), err, errstr,
                            errstr_size)) {
        goto fail;
    }
    snprintf(what, sizeof what, "SELECT %d", url->db);
    if (url->db &&
        !redis_setup(rc, what, redisCommand(rc, "SELECT %d", url->db), err, errstr, errstr_size))
        goto fail;
    return rc;
fail:
    redisFree(rc);
    return NULL;
}
