/*
 * rcluster_int.h - the parts of rcluster.c that unit tests drive with
 * recorded replies: reply classification, redirect parsing, and slot-map
 * updates on a handle that never connects. Not a public API.
 */
#ifndef LW_RCLUSTER_INT_H
#define LW_RCLUSTER_INT_H

#include "loanwire/rcluster.h"

/* What a reply asks the client to do. */
typedef enum lw_rc_kind {
    LW_RC_REPLY,       /* a real answer (or an error of the command itself): keep it */
    LW_RC_MOVED,       /* the slot has a new owner: update the map, resend there */
    LW_RC_ASK,         /* the slot is moving: resend to target with ASKING, map unchanged */
    LW_RC_TRYAGAIN,    /* keys of a migrating slot are split: pause, resend */
    LW_RC_CLUSTERDOWN, /* CLUSTERDOWN / MASTERDOWN: pause, refresh, resend */
    LW_RC_LOADING,     /* LOADING / READONLY (demoted master): pause, refresh, resend */
} lw_rc_kind_t;

typedef struct lw_rc_redirect {
    lw_rc_kind_t kind;
    int slot;       /* MOVED/ASK: the slot named; else -1 */
    char host[256]; /* MOVED/ASK: target host ("" when Redis gave none) */
    int port;       /* MOVED/ASK: target port */
} lw_rc_redirect_t;

/* Classifies a reply (NULL: LW_RC_REPLY). A MOVED/ASK that cannot be parsed is LW_RC_REPLY. */
lw_rc_kind_t lw_rcluster__classify(const redisReply *r, lw_rc_redirect_t *out);

/* A cluster-mode handle with no node and no connection: map tests only. */
lw_rcluster_t *lw_rcluster__new_offline(const lw_redis_url_t *url);

/*
 * Replaces the slot map with a CLUSTER SLOTS reply. origin_host stands in for
 * an empty or "?" host (Redis' "this node's own address, unknown to it").
 * PROTOCOL when the reply is malformed; the map is then left as it was.
 */
lw_rcluster_err_t lw_rcluster__apply_slots(lw_rcluster_t *c, const redisReply *r,
                                           const char *origin_host, char *errstr,
                                           size_t errstr_size);

/* Records one MOVED: slot now belongs to host:port (a new node is added). */
lw_rcluster_err_t lw_rcluster__apply_moved(lw_rcluster_t *c, int slot, const char *host, int port);

/* ---- A batch's replies (rcreply.c) ---- */

/* Bump-allocated blocks; rewound, not freed, between batches (the public
 * lw_reply_arena_t of rcluster.h). */
struct lw_reply_arena {
    struct lw_rc_block *head, *cur;
};
typedef struct lw_reply_arena lw_rc_arena_t;

void lw_rc_arena_init(lw_rc_arena_t *a);
/* Forgets every object (memory kept for the next fill; blocks the last fill
 * did not reach are freed). */
void lw_rc_arena_reset(lw_rc_arena_t *a);
void lw_rc_arena_free(lw_rc_arena_t *a);
/* n bytes, aligned for any type; NULL when out of memory. */
void *lw_rc_arena_alloc(lw_rc_arena_t *a, size_t n);

/*
 * hiredis reply functions that build the usual redisReply tree in the arena
 * the reader's privdata points to (never freeReplyObject() such a tree).
 */
extern redisReplyObjectFunctions lw_rc_arena_fns;

/* A heap copy of a reply that freeReplyObject() frees; NULL when out of memory. */
redisReply *lw_rc_reply_clone(const redisReply *r);

#endif /* LW_RCLUSTER_INT_H */
