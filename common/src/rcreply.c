/*
 * rcreply.c - the replies of an lw_rcluster batch, built by hiredis' own
 * reader into a per-batch arena instead of one malloc per value.
 *
 * Why: a cluster flush reads each hash slot's borrowers with one MGET and
 * writes them with one EVALSHA, so its replies are ~20,000 small values a
 * batch. hiredis' default reply functions give every value two allocations
 * (the redisReply and its string, an array a third for its element vector)
 * and freeReplyObject() gives them back one by one: malloc and free were the
 * largest item of loanwire-exposure's profile on a cluster (14-18 %; 2 % after).
 *
 * How: the reader keeps parsing (RESP framing, lengths, nesting: hiredis'
 * code, not ours), only the objects come from here. Each value is one bump
 * allocation from the arena named by the reader's privdata: the redisReply
 * with its string right behind it, an array's element vector the same way.
 * The objects are ordinary redisReply trees, so every caller reads them as
 * before; they must just never reach freeReplyObject(). rcluster.c installs
 * these functions only around its own redisGetReply() of a batch round,
 * rewinds the arena where it used to free the batch's replies (next send,
 * reset) and hands a caller a heap copy (lw_rc_reply_clone()) where a reply
 * leaves the batch.
 *
 * The arena keeps its blocks across rewinds, so a steady consumer allocates
 * nothing after its first batches; blocks the last fill did not reach are
 * freed at the rewind, so one huge batch does not pin its memory forever.
 */
#include "rcluster_int.h"

#include <stdalign.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define BLOCK_MIN (64 * 1024)

struct lw_rc_block {
    struct lw_rc_block *next;
    size_t cap, used;
    alignas(max_align_t) unsigned char data[];
};

void lw_rc_arena_init(lw_rc_arena_t *a)
{
    a->head = a->cur = NULL;
}

void lw_rc_arena_free(lw_rc_arena_t *a)
{
    struct lw_rc_block *b = a->head;
    while (b) {
        struct lw_rc_block *n = b->next;
        free(b);
        b = n;
    }
    a->head = a->cur = NULL;
}

void lw_rc_arena_reset(lw_rc_arena_t *a)
{
    if (!a->head)
        return;
    /* blocks past the last one used are dropped; the rest are kept for the next fill */
    struct lw_rc_block *last = a->cur ? a->cur : a->head;
    struct lw_rc_block *b = last->next;
    last->next = NULL;
    while (b) {
        struct lw_rc_block *n = b->next;
        free(b);
        b = n;
    }
    for (b = a->head; b; b = b->next)
        b->used = 0;
    a->cur = a->head;
}

void *lw_rc_arena_alloc(lw_rc_arena_t *a, size_t n)
{
    const size_t al = alignof(max_align_t);
    if (n > SIZE_MAX / 2)
        return NULL;
    n = (n + al - 1) & ~(al - 1);
    struct lw_rc_block *b = a->cur;
    if (b && b->cap - b->used >= n) {
        void *p = b->data + b->used;
        b->used += n;
        return p;
    }
    /* the next kept block if it is big enough, else a new one after the current */
    if (b && b->next && b->next->cap >= n) {
        b = a->cur = b->next;
        b->used = n;
        return b->data;
    }
    size_t cap = n > BLOCK_MIN ? n : BLOCK_MIN;
    struct lw_rc_block *nb = malloc(sizeof *nb + cap);
    if (!nb)
        return NULL;
    nb->cap = cap;
    nb->used = n;
    if (b) {
        nb->next = b->next;
        b->next = nb;
    } else {
        nb->next = a->head;
        a->head = nb;
    }
    a->cur = nb;
    return nb->data;
}

/* ---- hiredis reply functions (reader->privdata is the arena) --------------------- */

static redisReply *new_obj(const redisReadTask *task, int type, size_t extra)
{
    lw_rc_arena_t *a = task->privdata;
    if (!a || extra > SIZE_MAX - sizeof(redisReply))
        return NULL;
    redisReply *r = lw_rc_arena_alloc(a, sizeof *r + extra);
    if (!r)
        return NULL;
    memset(r, 0, sizeof *r);
    r->type = type;
    if (task->parent) {
        redisReply *parent = task->parent->obj;
        /* the reader only nests values in arrays, each index once */
        if (!parent || parent->type != REDIS_REPLY_ARRAY || task->idx < 0 ||
            (size_t)task->idx >= parent->elements)
            return NULL;
        parent->element[task->idx] = r;
    }
    return r;
}

static void *create_string(const redisReadTask *task, char *str, size_t len)
{
    if (task->type != REDIS_REPLY_STRING && task->type != REDIS_REPLY_STATUS &&
        task->type != REDIS_REPLY_ERROR)
        return NULL;
    if (len == SIZE_MAX)
        return NULL;
    redisReply *r = new_obj(task, task->type, len + 1);
    if (!r)
        return NULL;
    r->str = (char *)(r + 1);
    memcpy(r->str, str, len);
    r->str[len] = '\0';
    r->len = len;
    return r;
}

static void *create_array(const redisReadTask *task, int elements)
{
    size_t n = elements > 0 ? (size_t)elements : 0;
    if (n > (SIZE_MAX - sizeof(redisReply)) / sizeof(redisReply *))
        return NULL;
    redisReply *r = new_obj(task, REDIS_REPLY_ARRAY, n * sizeof(redisReply *));
    if (!r)
        return NULL;
    if (n) {
        r->element = (redisReply **)(r + 1);
        memset(r->element, 0, n * sizeof(redisReply *));
    }
    r->elements = n;
    return r;
}

static void *create_integer(const redisReadTask *task, long long value)
{
    redisReply *r = new_obj(task, REDIS_REPLY_INTEGER, 0);
    if (r)
        r->integer = value;
    return r;
}

static void *create_nil(const redisReadTask *task)
{
    return new_obj(task, REDIS_REPLY_NIL, 0);
}

static void free_object(void *obj)
{
    (void)obj; /* the arena's: rewound, never freed one by one */
}

redisReplyObjectFunctions lw_rc_arena_fns = {create_string, create_array, create_integer,
                                             create_nil, free_object};

/* ---- The public face --------------------------------------------------------- */

lw_reply_arena_t *lw_reply_arena_new(void)
{
    return calloc(1, sizeof(lw_reply_arena_t));
}

void lw_reply_arena_reset(lw_reply_arena_t *a)
{
    if (a)
        lw_rc_arena_reset(a);
}

void lw_reply_arena_destroy(lw_reply_arena_t *a)
{
    if (a) {
        lw_rc_arena_free(a);
        free(a);
    }
}

int lw_reply_arena_get(lw_reply_arena_t *a, redisContext *c, redisReply **reply)
{
    /* the arena's functions for this one call: no other reply of the
     * connection is ever an arena object */
    redisReader *rd = c->reader;
    redisReplyObjectFunctions *fn = rd->fn;
    void *priv = rd->privdata;
    rd->fn = &lw_rc_arena_fns;
    rd->privdata = a;
    int rc = redisGetReply(c, (void **)reply);
    if (rc != REDIS_OK)
        rd->reply = NULL; /* a partial tree is the arena's, not the reader's to free */
    rd->fn = fn;
    rd->privdata = priv;
    return rc;
}

/* ---- Leaving the batch ---------------------------------------------------------- */

redisReply *lw_rc_reply_clone(const redisReply *r)
{
    if (!r)
        return NULL;
    /* the same layout as hiredis' own objects, so freeReplyObject() frees it */
    redisReply *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->type = r->type;
    c->integer = r->integer;
    if (r->str) {
        if (!(c->str = malloc(r->len + 1))) {
            free(c);
            return NULL;
        }
        memcpy(c->str, r->str, r->len);
        c->str[r->len] = '\0';
        c->len = r->len;
    }
    if (r->type == REDIS_REPLY_ARRAY && r->elements) {
        if (!(c->element = calloc(r->elements, sizeof *c->element))) {
            freeReplyObject(c);
            return NULL;
        }
        c->elements = r->elements;
        for (size_t i = 0; i < r->elements; i++)
            if (r->element[i] && !(c->element[i] = lw_rc_reply_clone(r->element[i]))) {
                freeReplyObject(c);
                return NULL;
            }
    }
    return c;
}
