/*
 * loanwire/redis.h - one way to open a Redis connection from a Redis URL.
 *
 * Every program that talks to Redis (loanwire-exposure, loanwire-alerts,
 * loanwire-query) connects the same way: TCP or unix socket, AUTH when the
 * URL has a password, SELECT when it names a database. The caller owns the
 * context and frees it with redisFree().
 */
#ifndef LOANWIRE_REDIS_H
#define LOANWIRE_REDIS_H

#include "loanwire/conf.h"
#include "loanwire/error.h"

#include <hiredis/hiredis.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * Connects with timeout_ms for the connect and for each command. NULL on
 * failure with errstr set and, when err is non-NULL, *err LW_ERR_TRANSIENT (no
 * server, no answer: worth retrying) or LW_ERR_REDIS (AUTH or SELECT refused).
 */
redisContext *lw_redis_connect(const lw_redis_url_t *url, int timeout_ms, lw_err_t *err,
                               char *errstr, size_t errstr_size);

#ifdef __cplusplus
}
#endif
#endif /* LOANWIRE_REDIS_H */
