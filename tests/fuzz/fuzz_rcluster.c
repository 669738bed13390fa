/*
 * fuzz_rcluster.c - libFuzzer target for what the Redis Cluster client reads
 * from the network and from callers (common/src/rcluster.c, crc16.c): any
 * bytes fed through hiredis' reader must classify as a reply or a well-formed
 * redirect, load as a slot map or be refused leaving the old map whole, and
 * any bytes offered as a pre-built command must be taken only when they are
 * exactly one RESP command. The hash slot is checked against a plain
 * reimplementation of Redis' keyHashSlot(). The same bytes through the
 * batch's arena reader functions (rcreply.c) must give the tree hiredis'
 * default functions give, value for value, and a heap clone of it too.
 */
#include "rcluster_int.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Redis' keyHashSlot(), written the obvious way, bit by bit. */
static int naive_slot(const uint8_t *k, size_t len)
{
    size_t s, e, from = 0, n = len;
    for (s = 0; s < len; s++)
        if (k[s] == '{')
            break;
    if (s < len) {
        for (e = s + 1; e < len; e++)
            if (k[e] == '}')
                break;
        if (e < len && e != s + 1) {
            from = s + 1;
            n = e - s - 1;
        }
    }
    uint16_t crc = 0;
    for (size_t i = from; i < from + n; i++) {
        crc ^= (uint16_t)(k[i] << 8);
        for (int b = 0; b < 8; b++)
            crc = (uint16_t)(crc & 0x8000 ? (crc << 1) ^ 0x1021 : crc << 1);
    }
    return crc & 0x3fff;
}

static void check_map(const lw_rcluster_t *c)
{
    int n = lw_rcluster_master_count(c);
    for (int s = 0; s < LW_RCLUSTER_SLOTS; s += 97) {
        int m = lw_rcluster_slot_master(c, s);
        if (m < -1 || m >= n)
            abort();
        const char *host = NULL;
        int port = 0;
        if (m >= 0 && (lw_rcluster_master(c, m, &host, &port) != LW_RCLUSTER_OK || !host ||
                       port <= 0 || port > 65535))
            abort();
    }
}

/* Same type, value and shape, recursively. */
static int same_reply(const redisReply *a, const redisReply *b)
{
    if (!a || !b)
        return a == b;
    if (a->type != b->type)
        return 0;
    switch (a->type) {
    case REDIS_REPLY_INTEGER:
        return a->integer == b->integer;
    case REDIS_REPLY_STRING:
    case REDIS_REPLY_STATUS:
    case REDIS_REPLY_ERROR:
        return a->len == b->len && !memcmp(a->str, b->str, a->len) && b->str[b->len] == '\0';
    case REDIS_REPLY_ARRAY:
        if (a->elements != b->elements)
            return 0;
        for (size_t i = 0; i < a->elements; i++)
            if (!same_reply(a->element[i], b->element[i]))
                return 0;
        return 1;
    default:
        return 1;
    }
}

/* Every reply of data: the arena reader (fed in two pieces) against the default one. */
static void check_arena(const uint8_t *data, size_t size)
{
    static lw_rc_arena_t arena;
    redisReader *def = redisReaderCreate();
    redisReader *ar = redisReaderCreateWithFunctions(&lw_rc_arena_fns);
    if (!def || !ar)
        abort();
    ar->privdata = &arena;
    size_t cut = size ? data[0] % (size + 1) : 0;
    redisReaderFeed(def, (const char *)data, size);
    redisReaderFeed(ar, (const char *)data, cut);
    void *want = NULL, *got = NULL;
    int rd = redisReaderGetReply(ar, &got);
    if (rd == REDIS_OK && !got) {
        redisReaderFeed(ar, (const char *)data + cut, size - cut);
        rd = redisReaderGetReply(ar, &got);
    } else if (rd == REDIS_OK) {
        redisReaderFeed(ar, (const char *)data + cut, size - cut);
    }
    for (int i = 0; i < 8; i++) {
        int rw = redisReaderGetReply(def, &want);
        if (rw != rd || (rw == REDIS_OK && !want != !got))
            abort();
        if (rw != REDIS_OK || !want)
            break;
        if (!same_reply(want, got))
            abort();
        redisReply *c = lw_rc_reply_clone(got);
        if (c && !same_reply(want, c))
            abort();
        freeReplyObject(c);
        freeReplyObject(want);
        want = got = NULL;
        rd = redisReaderGetReply(ar, &got);
    }
    freeReplyObject(want);
    redisReaderFree(def);
    redisReaderFree(ar);
    lw_rc_arena_reset(&arena);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (lw_rcluster_keyslot(data, size) != naive_slot(data, size))
        abort();

    static lw_rcluster_t *c;
    static lw_rcluster_batch_t *b;
    static unsigned runs;
    if (c && ++runs % 4096 == 0) { /* the node table only grows: start afresh now and then */
        lw_rcluster_batch_destroy(b);
        lw_rcluster_destroy(c);
        c = NULL;
    }
    if (!c) {
        lw_redis_url_t url;
        memset(&url, 0, sizeof url);
        strcpy(url.host, "127.0.0.1");
        url.port = 7000;
        c = lw_rcluster__new_offline(&url);
        b = lw_rcluster_batch_new(c);
        if (!c || !b)
            abort();
    }
    lw_rcluster_batch_reset(b);
    if (lw_rcluster_batch_group(b, (int)(size % LW_RCLUSTER_SLOTS)) != 0)
        abort();
    lw_rcluster_batch_append_resp(b, (const char *)data, size);
    if (lw_rcluster_group_size(b, 0) > 1)
        abort();

    /*
     * hiredis 0.14's reader allocates an array of whatever size "*N" declares
     * before reading it (1.x added a limit): a fault of the library reading a
     * hostile server, not of ours. Such inputs stop here.
     */
    for (size_t i = 0, digits = 0; i < size; i++) {
        digits = data[i] >= '0' && data[i] <= '9' ? digits + 1 : 0;
        if (digits > 6)
            return 0;
    }
    check_arena(data, size);
    redisReader *rd = redisReaderCreate();
    if (!rd)
        return 0;
    redisReaderFeed(rd, (const char *)data, size);
    void *r = NULL;
    char errstr[256];
    for (int i = 0; i < 8 && redisReaderGetReply(rd, &r) == REDIS_OK && r; i++) {
        lw_rc_redirect_t red;
        lw_rc_kind_t k = lw_rcluster__classify(r, &red);
        if ((k == LW_RC_MOVED || k == LW_RC_ASK) &&
            (red.slot < 0 || red.slot >= LW_RCLUSTER_SLOTS || red.port <= 0 || red.port > 65535))
            abort();
        int before = lw_rcluster_slot_master(c, 0);
        int before_n = lw_rcluster_master_count(c);
        lw_rcluster_err_t err = lw_rcluster__apply_slots(c, r, "10.0.0.1", errstr, sizeof errstr);
        if (err != LW_RCLUSTER_OK &&
            (lw_rcluster_slot_master(c, 0) != before || lw_rcluster_master_count(c) != before_n))
            abort(); /* a refused map leaves the old one */
        check_map(c);
        if (k == LW_RC_MOVED)
            lw_rcluster__apply_moved(c, red.slot, red.host[0] ? red.host : "10.0.0.1", red.port);
        check_map(c);
        freeReplyObject(r);
        r = NULL;
    }
    redisReaderFree(rd);
    return 0;
}
