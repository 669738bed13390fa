/*
 * loanwire/rcluster.h - a slot-aware client for Redis Cluster that also
 * drives a single Redis, so callers never branch on the deployment.
 *
 * Debian 12 ships no hiredis-cluster, so this is Loanwire's own, shaped by
 * what hiredis-cluster and redis-py's cluster client do (MOVED: follow it at
 * once and refresh the map; ASK: ASKING + resend, map unchanged; TRYAGAIN,
 * CLUSTERDOWN, LOADING and lost connections: back off, refresh, resend) and by
 * what the bureau store needs, which neither offers: pipelined MULTI/EXEC
 * groups, one per hash slot, written to every master before any reply is
 * read.
 *
 * Model:
 *   - lw_rcluster_new() connects to ANY node (the seed URL) and asks
 *     `INFO cluster`. With cluster_enabled:1 it loads the slot map from
 *     CLUSTER SLOTS and keeps one hiredis connection per master, opened
 *     lazily, with the URL's password (db must be 0). Otherwise the seed is the
 *     only node and owns all 16384 slots: the same calls work unchanged.
 *   - A batch holds groups. A group is an ordered list of commands for one slot
 *     (for instance MULTI, SETs, XADD, EXEC: the atomic unit). send() appends
 *     every group to its master's connection and writes all of them before any
 *     reply is read; recv() reads every reply and redirects or retries, per
 *     group, until each is done or the retry budget (opts.retry_ms) is spent.
 *   - A group containing MULTI is resent whole: after a redirect inside it the
 *     queued commands answered -MOVED/-ASK and EXEC answered EXECABORT, so
 *     nothing of it ran. A group without MULTI resends only the commands that
 *     answered a redirect, an error worth retrying, or nothing (connection
 *     lost): commands that succeeded are not repeated. After an ASK one ASKING
 *     precedes each command outside MULTI and only MULTI inside one (ASKING
 *     lasts for the whole transaction).
 *   - Resends repeat writes whose first attempt may have run (a connection
 *     lost after the server applied them): callers must write idempotently,
 *     as Loanwire does by its sequence rule.
 *
 * Ownership: the caller owns the handle (lw_rcluster_destroy) and each batch
 * (lw_rcluster_batch_destroy); a batch must be destroyed before its handle.
 * Replies read through a batch are owned by the batch and valid until its next
 * send, reset or destroy; a reply from lw_rcluster_command*() belongs to the
 * caller (freeReplyObject). Every _destroy(NULL) is a no-op. Not thread-safe:
 * one handle and its batches per thread.
 *
 * One batch in flight per handle: between a batch's send and its recv the
 * replies wait on the handle's connections, so every other call on the handle
 * (commands, another send, refresh, WAIT, master_context) is refused with
 * INVALID_ARG. A second pipeline (the store's two flushes) takes a second
 * handle. A batch reset or destroyed in flight closes the handle's connections
 * (they reopen on demand) rather than leave its replies to the next caller.
 */
#ifndef LOANWIRE_RCLUSTER_H
#define LOANWIRE_RCLUSTER_H

#include "loanwire/conf.h"

#include <hiredis/hiredis.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define LW_RCLUSTER_SLOTS 16384

typedef enum lw_rcluster_err {
    LW_RCLUSTER_OK = 0,
    LW_RCLUSTER_ERR_INVALID_ARG,    /* fatal: bad argument or call order */
    LW_RCLUSTER_ERR_NOMEM,          /* fatal: allocation failed */
    LW_RCLUSTER_ERR_AUTH,           /* fatal: AUTH or SELECT refused */
    LW_RCLUSTER_ERR_PROTOCOL,       /* fatal: a reply that makes no sense (bad slot map) */
    LW_RCLUSTER_ERR_CONNECT,        /* retriable: no connection to a node */
    LW_RCLUSTER_ERR_IO,             /* retriable: a connection broke or timed out */
    LW_RCLUSTER_ERR_CLUSTERDOWN,    /* retriable: CLUSTERDOWN, MASTERDOWN, slot not served */
    LW_RCLUSTER_ERR_TRYAGAIN,       /* retriable: TRYAGAIN (a slot mid-migration) */
    LW_RCLUSTER_ERR_LOADING,        /* retriable: LOADING, or READONLY from a demoted master */
    LW_RCLUSTER_ERR_REDIRECTS,      /* retriable: more MOVED/ASK hops than opts.max_redirects */
    LW_RCLUSTER_ERR_NOT_REPLICATED, /* retriable: WAIT: a master's write is on too few replicas */
    LW_RCLUSTER_ERR__CNT
} lw_rcluster_err_t;

const char *lw_rcluster_err2str(lw_rcluster_err_t err);
bool lw_rcluster_err_is_retriable(lw_rcluster_err_t err);

typedef struct lw_rcluster_opts {
    int timeout_ms;     /* connect, and each read or write (default 2000) */
    int retry_ms;       /* total backoff budget of one recv or command (default 30000) */
    int backoff_min_ms; /* first pause after a retriable failure (default 20) */
    int backoff_max_ms; /* pauses double up to this (default 1000) */
    int max_redirects;  /* MOVED/ASK hops per group between two pauses (default 16) */
} lw_rcluster_opts_t;

/* Fills *o with the defaults above. */
void lw_rcluster_opts_init(lw_rcluster_opts_t *o);

/* Counters since the handle was made, for metrics and tests. */
typedef struct lw_rcluster_stats {
    uint64_t moved;     /* MOVED replies followed */
    uint64_t ask;       /* ASK replies followed */
    uint64_t backoffs;  /* pauses after a retriable failure */
    uint64_t refreshes; /* slot maps loaded */
    uint64_t connects;  /* connections opened */
    uint64_t conn_lost; /* connections that broke */
} lw_rcluster_stats_t;

typedef struct lw_rcluster lw_rcluster_t;
typedef struct lw_rcluster_batch lw_rcluster_batch_t;

/* ---- CRC16 and hash slots (crc16.c) -------------------------------------- */

/* CRC16-CCITT (XMODEM: poly 0x1021, init 0), Redis Cluster's key hash. */
uint16_t lw_rcluster_crc16(const void *buf, size_t len);

/*
 * The hash slot of a key, as Redis computes it: if the key has a '{' and a
 * later '}' with at least one byte between the first '{' and the first '}'
 * after it, only those bytes are hashed; otherwise the whole key.
 */
int lw_rcluster_keyslot(const void *key, size_t len);

/*
 * A hash tag for slot: the smallest decimal number whose string hashes to it,
 * written to buf (NUL-terminated, cap >= 11); its length, 0 for a bad slot or
 * a small buf.
 * A key "name:{TAG}" lives in that slot, so a per-slot key (an alert stream
 * beside the borrowers of the slot) can take part in their transactions.
 */
size_t lw_rcluster_slot_tag(int slot, char *buf, size_t cap);

/* ---- Replies in an arena (rcreply.c) -------------------------------------- */

/*
 * hiredis' usual redisReply trees, built by bump allocation in an arena
 * instead of a malloc per value, for a reader of many replies that drops them
 * together (a batch's MGETs; every batch below reads its replies so). A reply
 * read into an arena is valid until the arena's next reset or destroy and
 * must never reach freeReplyObject().
 */
typedef struct lw_reply_arena lw_reply_arena_t;

lw_reply_arena_t *lw_reply_arena_new(void);     /* NULL when out of memory */
void lw_reply_arena_reset(lw_reply_arena_t *a); /* forgets its replies, keeps the memory */
void lw_reply_arena_destroy(lw_reply_arena_t *a);
/*
 * redisGetReply() with the reply built in a. REDIS_ERR as from hiredis (the
 * connection is then to be dropped; a reply it cut short stays in the arena).
 */
int lw_reply_arena_get(lw_reply_arena_t *a, redisContext *c, redisReply **reply);

/* ---- The handle ----------------------------------------------------------- */

/*
 * Connects to the node of url (any node of a cluster, or a single Redis),
 * detects the mode and loads the slot map. opts NULL: defaults. On failure
 * *out is NULL, errstr says why; CONNECT/IO are retriable, AUTH is not.
 */
lw_rcluster_err_t lw_rcluster_new(const lw_redis_url_t *url, const lw_rcluster_opts_t *opts,
                                  lw_rcluster_t **out, char *errstr, size_t errstr_size);
void lw_rcluster_destroy(lw_rcluster_t *c);

/* True when the seed answered cluster_enabled:1. */
bool lw_rcluster_is_cluster(const lw_rcluster_t *c);

/* Reloads the slot map now (it is also reloaded on its own after MOVED and failures). */
lw_rcluster_err_t lw_rcluster_refresh(lw_rcluster_t *c, char *errstr, size_t errstr_size);

void lw_rcluster_stats(const lw_rcluster_t *c, lw_rcluster_stats_t *out);

/*
 * Masters of the current map, 0 .. count-1, in map order (one master in
 * single mode). Indexes are valid until the next call that may reload the map
 * (any command, recv, refresh). *host points into the handle.
 */
int lw_rcluster_master_count(const lw_rcluster_t *c);
lw_rcluster_err_t lw_rcluster_master(const lw_rcluster_t *c, int i, const char **host, int *port);
/* The master index serving slot, or -1 when no master serves it. */
int lw_rcluster_slot_master(const lw_rcluster_t *c, int slot);
/*
 * Master i's connection, opened if needed; borrowed (the handle frees it), for
 * tools that walk one node (SCAN, blocking XREAD). NULL with errstr on failure.
 */
redisContext *lw_rcluster_master_context(lw_rcluster_t *c, int i, char *errstr, size_t errstr_size);

/*
 * One command routed by slot (lw_rcluster_keyslot of its key), with the same
 * redirects and retries as a batch. On LW_RCLUSTER_OK *reply is the caller's
 * (it may be an error reply such as WRONGTYPE: the command ran and failed).
 */
lw_rcluster_err_t lw_rcluster_command_argv(lw_rcluster_t *c, int slot, int argc, const char **argv,
                                           const size_t *argvlen, redisReply **reply, char *errstr,
                                           size_t errstr_size);
/* As above with a hiredis format string ("GET %b", key, len). */
lw_rcluster_err_t lw_rcluster_command(lw_rcluster_t *c, int slot, redisReply **reply, char *errstr,
                                      size_t errstr_size, const char *fmt, ...);
lw_rcluster_err_t lw_rcluster_vcommand(lw_rcluster_t *c, int slot, redisReply **reply, char *errstr,
                                       size_t errstr_size, const char *fmt, va_list ap);

/*
 * Runs one command on every master, pipelined: all written, then all read.
 * cb sees each master's reply (borrowed: freed when cb returns), or NULL and
 * the error when that master could not be reached. Nothing is redirected or
 * retried (INFO, SCAN, DBSIZE, WAIT are node commands). Returns OK when every
 * master answered, else the first failure.
 */
typedef void (*lw_rcluster_master_cb)(void *opaque, int master, const char *host, int port,
                                      const redisReply *reply, lw_rcluster_err_t err);
lw_rcluster_err_t lw_rcluster_on_masters(lw_rcluster_t *c, int argc, const char **argv,
                                         const size_t *argvlen, lw_rcluster_master_cb cb,
                                         void *opaque, char *errstr, size_t errstr_size);

/* ---- Batches of per-slot groups -------------------------------------------- */

lw_rcluster_batch_t *lw_rcluster_batch_new(lw_rcluster_t *c);
void lw_rcluster_batch_destroy(lw_rcluster_batch_t *b);
/* Drops every group and reply, keeping the memory for the next batch. */
void lw_rcluster_batch_reset(lw_rcluster_batch_t *b);

/* Starts a group for slot (0..16383); returns its index, or -1 (bad slot, no memory). */
int lw_rcluster_batch_group(lw_rcluster_batch_t *b, int slot);
/* Appends a command to the latest group (copied). INVALID_ARG without a group. */
lw_rcluster_err_t lw_rcluster_batch_append_argv(lw_rcluster_batch_t *b, int argc, const char **argv,
                                                const size_t *argvlen);
lw_rcluster_err_t lw_rcluster_batch_appendf(lw_rcluster_batch_t *b, const char *fmt, ...);
/*
 * Appends one command already in RESP ("*N\r\n$len\r\narg\r\n..."), copied:
 * for callers that build their protocol themselves. INVALID_ARG unless the
 * buffer is exactly one complete command.
 */
lw_rcluster_err_t lw_rcluster_batch_append_resp(lw_rcluster_batch_t *b, const char *resp,
                                                size_t len);

/*
 * Writes every group to the master of its slot, all nodes before any reply
 * is read. A node that cannot be reached now is retried by recv.
 */
lw_rcluster_err_t lw_rcluster_batch_send(lw_rcluster_batch_t *b, char *errstr, size_t errstr_size);
/*
 * Reads every reply, redirecting and retrying per group. OK when every group
 * is done; else the first unfinished group's error (done groups keep their
 * replies, see lw_rcluster_group_err).
 */
lw_rcluster_err_t lw_rcluster_batch_recv(lw_rcluster_batch_t *b, char *errstr, size_t errstr_size);

size_t lw_rcluster_batch_groups(const lw_rcluster_batch_t *b);
/* OK when the group ran (its replies may still hold command errors). */
lw_rcluster_err_t lw_rcluster_group_err(const lw_rcluster_batch_t *b, size_t g);
size_t lw_rcluster_group_size(const lw_rcluster_batch_t *b, size_t g);
/* Reply i of group g (no ASKING replies among them), or NULL. Owned by the batch. */
const redisReply *lw_rcluster_group_reply(const lw_rcluster_batch_t *b, size_t g, size_t i);

/*
 * After recv: sends `WAIT numreplicas timeout_ms` to every master where a
 * group of the batch ran, on the connection that wrote it, and reads the
 * answers. OK when every such master has the writes on numreplicas replicas;
 * NOT_REPLICATED otherwise (also when that connection broke since, so WAIT
 * could no longer vouch for its writes: redeliver). Per node results:
 * lw_rcluster_batch_wait_node().
 */
lw_rcluster_err_t lw_rcluster_batch_wait(lw_rcluster_batch_t *b, int numreplicas, int timeout_ms,
                                         char *errstr, size_t errstr_size);
/* Nodes of the last wait; *replicas is WAIT's answer, or -1 when unknown. */
size_t lw_rcluster_batch_wait_nodes(const lw_rcluster_batch_t *b);
lw_rcluster_err_t lw_rcluster_batch_wait_node(const lw_rcluster_batch_t *b, size_t i,
                                              const char **host, int *port, long long *replicas);

#ifdef __cplusplus
}
#endif
#endif /* LOANWIRE_RCLUSTER_H */
