/*
 * loanwire/evict.h - refuse a Redis that may evict keys.
 *
 * Loanwire's borrower state lives in Redis only; a maxmemory-policy that
 * evicts (allkeys-* or volatile-*) would drop it silently. Every program that
 * talks to Redis calls lw_redis_eviction_check() once at start, before its
 * real work; --allow-eviction turns the refusal into a warning.
 */
#ifndef LOANWIRE_EVICT_H
#define LOANWIRE_EVICT_H

#include "loanwire/error.h"

#include <stdbool.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* True for every policy but "noeviction" (see evict.c for volatile-*). */
bool lw_redis_policy_evicts(const char *policy);

/*
 * Reads maxmemory-policy on the Redis of url, or on every master of a Redis
 * Cluster: CONFIG GET, or INFO memory when CONFIG is renamed or denied by ACL.
 * LW_OK when no master evicts (or allow and it only warns); LW_ERR_CONFIG
 * when one evicts or the policy cannot be read (errstr says which node and
 * how to fix it); LW_ERR_REDIS when Redis cannot be reached or refuses the
 * login (a program that starts without Redis may go on with a warning).
 */
lw_err_t lw_redis_eviction_check(const char *url, bool allow, char *errstr, size_t errstr_size);

#ifdef __cplusplus
}
#endif
#endif /* LOANWIRE_EVICT_H */
