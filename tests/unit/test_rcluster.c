/*
 * test_rcluster.c - the Redis Cluster client without a server
 * (common/src/crc16.c, common/src/rcluster.c): CRC16 and hash-tag slots
 * against values Redis 7 itself gave (`redis-cli cluster keyslot`), reply
 * classification and MOVED/ASK parsing from raw RESP bytes fed through
 * hiredis' reader, and slot-map loads and updates from a CLUSTER SLOTS reply
 * recorded from a real 3-master cluster (stack.sh up --redis-cluster 3).
 * The behaviour against live nodes is tests/integration/test_rcluster_live.c.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "rcluster_int.h"
#include "lw_test_resp.h"

#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static void test_crc16_and_slots(void **state)
{
    assert_int_equal(lw_rcluster_crc16("123456789", 9), 0x31C3);
    assert_int_equal(lw_rcluster_crc16("", 0), 0);
    /* Values from redis-cli cluster keyslot on Redis 7.0. */
    static const struct {
        const char *key;
        int slot;
    } v[] = {
        {"foo", 12182},          {"bar", 5061},
        {"user1000", 3443},      {"{user1000}.following", 3443}, /* the tag alone is hashed */
        {"foo{}{bar}", 8363},    /* empty first tag: the whole key */
        {"foo{{bar}}zap", 4015}, /* tag is "{bar": first '{', first '}' after it */
        {"{bar", 4015},          /* no '}': the whole key */
        {"foo{bar}{zap}", 5061}, /* only the first tag counts */
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++)
        assert_int_equal(lw_rcluster_keyslot(v[i].key, strlen(v[i].key)), v[i].slot);
    /* Borrower keys of one borrower share a slot; binary bytes and NULL are safe. */
    assert_int_equal(lw_rcluster_keyslot("b:{0a1b2c}", 10), lw_rcluster_keyslot("a:{0a1b2c}", 10));
    assert_int_equal(lw_rcluster_keyslot("x{\0\xff}y", 6), lw_rcluster_crc16("\0\xff", 2) & 0x3fff);
    assert_int_equal(lw_rcluster_keyslot(NULL, 5), 0);
    assert_int_equal(lw_rcluster_keyslot("{", 1), lw_rcluster_crc16("{", 1) & 0x3fff);
    assert_int_equal(lw_rcluster_keyslot("}{", 2), lw_rcluster_crc16("}{", 2) & 0x3fff);
}

static void check_redirect(const char *bytes, size_t len, lw_rc_kind_t kind, int slot,
                           const char *host, int port)
{
    redisReply *r = lw_test_resp(bytes, len);
    lw_rc_redirect_t red;
    assert_int_equal(lw_rcluster__classify(r, &red), kind);
    assert_int_equal(red.kind, kind);
    assert_int_equal(red.slot, slot);
    assert_string_equal(red.host, host);
    assert_int_equal(red.port, port);
    freeReplyObject(r);
}
#define REDIRECT(lit, k, s, h, p) check_redirect(lit, sizeof(lit) - 1, k, s, h, p)

static void test_classify_replies(void **state)
{
    REDIRECT("-MOVED 3999 127.0.0.1:6381\r\n", LW_RC_MOVED, 3999, "127.0.0.1", 6381);
    REDIRECT("-ASK 3999 127.0.0.1:6381\r\n", LW_RC_ASK, 3999, "127.0.0.1", 6381);
    REDIRECT("-MOVED 0 :7001\r\n", LW_RC_MOVED, 0, "", 7001);           /* unknown endpoint */
    REDIRECT("-ASK 16383 ::1:7002\r\n", LW_RC_ASK, 16383, "::1", 7002); /* IPv6 */
    REDIRECT("-MOVED 5 redis-3.internal:6379\r\n", LW_RC_MOVED, 5, "redis-3.internal", 6379);
    REDIRECT("-TRYAGAIN Multiple keys request during rehashing of slot\r\n", LW_RC_TRYAGAIN, -1, "",
             0);
    REDIRECT("-CLUSTERDOWN The cluster is down\r\n", LW_RC_CLUSTERDOWN, -1, "", 0);
    REDIRECT("-CLUSTERDOWN Hash slot not served\r\n", LW_RC_CLUSTERDOWN, -1, "", 0);
    REDIRECT(
        "-MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.\r\n",
        LW_RC_CLUSTERDOWN, -1, "", 0);
    REDIRECT("-LOADING Redis is loading the dataset in memory\r\n", LW_RC_LOADING, -1, "", 0);
    REDIRECT("-READONLY You can't write against a read only replica.\r\n", LW_RC_LOADING, -1, "",
             0);
    /* The command's own errors are the caller's, not the router's. */
    REDIRECT("-EXECABORT Transaction discarded because of previous errors.\r\n", LW_RC_REPLY, -1,
             "", 0);
    REDIRECT("-WRONGTYPE Operation against a key holding the wrong kind of value\r\n", LW_RC_REPLY,
             -1, "", 0);
    REDIRECT("-ERR unknown command 'FOO'\r\n", LW_RC_REPLY, -1, "", 0);
    REDIRECT("-CROSSSLOT Keys in request don't hash to the same slot\r\n", LW_RC_REPLY, -1, "", 0);
    REDIRECT("+OK\r\n", LW_RC_REPLY, -1, "", 0);
    REDIRECT("$5\r\nMOVED\r\n", LW_RC_REPLY, -1, "", 0); /* a value, not an error */
    REDIRECT(":1\r\n", LW_RC_REPLY, -1, "", 0);
    /* Malformed redirects are not followed anywhere. */
    REDIRECT("-MOVED\r\n", LW_RC_REPLY, -1, "", 0);
    REDIRECT("-MOVED 3999\r\n", LW_RC_REPLY, -1, "", 0);
    REDIRECT("-MOVED 16384 h:1\r\n", LW_RC_REPLY, -1, "", 0);
    REDIRECT("-MOVED -1 h:1\r\n", LW_RC_REPLY, -1, "", 0);
    REDIRECT("-MOVED x h:1\r\n", LW_RC_REPLY, -1, "", 0);
    REDIRECT("-ASK 1 h:0\r\n", LW_RC_REPLY, -1, "", 0);
    REDIRECT("-ASK 1 h:65536\r\n", LW_RC_REPLY, -1, "", 0);
    REDIRECT("-ASK 1 h:7000x\r\n", LW_RC_REPLY, -1, "", 0);
    REDIRECT("-ASK 1 h7000\r\n", LW_RC_REPLY, -1, "", 0);
    REDIRECT("-MOVEDX 1 h:1\r\n", LW_RC_REPLY, -1, "", 0);
    REDIRECT("-TRYAGAINX\r\n", LW_RC_REPLY, -1, "", 0);
    assert_int_equal(lw_rcluster__classify(NULL, NULL), LW_RC_REPLY);
    /* A host too long for the table is refused, not truncated. */
    char big[600];
    int n = snprintf(big, sizeof big, "-MOVED 1 %0300d:7000\r\n", 0);
    redisReply *r = lw_test_resp(big, (size_t)n);
    assert_int_equal(lw_rcluster__classify(r, NULL), LW_RC_REPLY);
    freeReplyObject(r);
}

/* CLUSTER SLOTS of stack.sh's cluster (Redis 7.0.15): 3 masters on 27001-27003, replicas
 * 27004-27006. */
static const char SLOTS[] =
    "*3\r\n*4\r\n:0\r\n:5460\r\n*4\r\n$9\r\n127.0.0.1\r\n:27001\r\n$"
    "40\r\neb71f2380012b8967028553ae6"
    "0c98d3c3e5ffa7\r\n*0\r\n*4\r\n$9\r\n127.0.0.1\r\n:27006\r\n$40\r\n425bb157aeb5bf7204344f50b984"
    "0680fe15361e\r\n*0\r\n*4\r\n:5461\r\n:10922\r\n*4\r\n$9\r\n127.0.0.1\r\n:27002\r\n$"
    "40\r\n9402359"
    "679231835c9f9137ff4b4deaf225f42a2\r\n*0\r\n*4\r\n$9\r\n127.0.0.1\r\n:27004\r\n$"
    "40\r\n40bae9ff7d8"
    "8eb0c6abb587d0c174c948af52508\r\n*0\r\n*4\r\n:10923\r\n:16383\r\n*4\r\n$9\r\n127.0.0.1\r\n:270"
    "03\r\n$40\r\n942740eb081e091d8de2a82051071529867af63e\r\n*0\r\n*4\r\n$9\r\n127.0.0.1\r\n:27005"
    "\r\n$40\r\nab67f1f94801e2fe5e854d331f8fb1bd62900a30\r\n*0\r\n";

static int port_of_slot(const lw_rcluster_t *c, int slot)
{
    int m = lw_rcluster_slot_master(c, slot);
    if (m < 0)
        return -1;
    int port = 0;
    assert_int_equal(lw_rcluster_master(c, m, NULL, &port), LW_RCLUSTER_OK);
    return port;
}

static lw_rcluster_t *offline(void)
{
    lw_redis_url_t url;
    char errstr[256];
    assert_int_equal(lw_redis_url_parse("redis://127.0.0.1:27001", &url, errstr, sizeof errstr),
                     LW_OK);
    lw_rcluster_t *c = lw_rcluster__new_offline(&url);
    assert_non_null(c);
    return c;
}

static void test_slot_map(void **state)
{
    char errstr[256];
    lw_rcluster_t *c = offline();
    assert_true(lw_rcluster_is_cluster(c));
    assert_int_equal(lw_rcluster_slot_master(c, 0), -1); /* nothing loaded: nothing served */

    redisReply *r = RESP(SLOTS);
    assert_int_equal(lw_rcluster__apply_slots(c, r, "127.0.0.1", errstr, sizeof errstr),
                     LW_RCLUSTER_OK);
    freeReplyObject(r);
    assert_int_equal(lw_rcluster_master_count(c), 3);
    const char *host;
    int port;
    assert_int_equal(lw_rcluster_master(c, 1, &host, &port), LW_RCLUSTER_OK);
    assert_string_equal(host, "127.0.0.1");
    assert_int_equal(port, 27002);
    assert_int_equal(lw_rcluster_master(c, 3, &host, &port), LW_RCLUSTER_ERR_INVALID_ARG);
    assert_int_equal(port_of_slot(c, 0), 27001);
    assert_int_equal(port_of_slot(c, 5460), 27001);
    assert_int_equal(port_of_slot(c, 5461), 27002);
    assert_int_equal(port_of_slot(c, 10922), 27002);
    assert_int_equal(port_of_slot(c, 10923), 27003);
    assert_int_equal(port_of_slot(c, 16383), 27003);
    assert_int_equal(port_of_slot(c, lw_rcluster_keyslot("foo", 3)), 27003); /* 12182 */
    assert_int_equal(lw_rcluster_slot_master(c, 16384), -1);
    assert_int_equal(lw_rcluster_slot_master(c, -1), -1);

    /* MOVED: one slot follows at once, to a node never seen before. */
    assert_int_equal(lw_rcluster__apply_moved(c, 12182, "127.0.0.1", 27009), LW_RCLUSTER_OK);
    assert_int_equal(port_of_slot(c, 12182), 27009);
    assert_int_equal(port_of_slot(c, 12181), 27003);
    assert_int_equal(port_of_slot(c, 12183), 27003);
    assert_int_equal(lw_rcluster_master_count(c), 4);
    assert_int_equal(lw_rcluster__apply_moved(c, 16384, "h", 1), LW_RCLUSTER_ERR_INVALID_ARG);

    /* After a failover of 27003 to 27005 and a gap (slots 100-199 not served). */
    static const char after[] =
        "*3\r\n"
        "*3\r\n:0\r\n:99\r\n*3\r\n$9\r\n127.0.0.1\r\n:27001\r\n$1\r\na\r\n"
        "*3\r\n:200\r\n:10922\r\n*2\r\n$0\r\n\r\n:27002\r\n" /* empty host: the asked node's */
        "*3\r\n:10923\r\n:16383\r\n*3\r\n$1\r\n?\r\n:27005\r\n$1\r\nb\r\n";
    r = RESP(after);
    assert_int_equal(lw_rcluster__apply_slots(c, r, "10.0.0.7", errstr, sizeof errstr),
                     LW_RCLUSTER_OK);
    freeReplyObject(r);
    assert_int_equal(lw_rcluster_master_count(c), 3);
    assert_int_equal(port_of_slot(c, 12182), 27005);
    assert_int_equal(port_of_slot(c, 150), -1);
    assert_int_equal(lw_rcluster_master(c, lw_rcluster_slot_master(c, 300), &host, &port),
                     LW_RCLUSTER_OK);
    assert_string_equal(host, "10.0.0.7");
    assert_int_equal(lw_rcluster_master(c, lw_rcluster_slot_master(c, 16000), &host, &port),
                     LW_RCLUSTER_OK);
    assert_string_equal(host, "10.0.0.7");
    assert_int_equal(port, 27005);

    lw_rcluster_stats_t st;
    lw_rcluster_stats(c, &st);
    assert_int_equal(st.refreshes, 2);
    lw_rcluster_destroy(c);
}

static void test_bad_slot_maps(void **state)
{
    char errstr[256];
    lw_rcluster_t *c = offline();
    redisReply *r = RESP(SLOTS);
    assert_int_equal(lw_rcluster__apply_slots(c, r, NULL, errstr, sizeof errstr), LW_RCLUSTER_OK);
    freeReplyObject(r);
#define B(lit) lit, sizeof(lit) - 1
    static const struct {
        const char *bytes;
        size_t len;
        lw_rcluster_err_t err;
    } bad[] = {
        {B("+OK\r\n"), LW_RCLUSTER_ERR_PROTOCOL},
        {B("*0\r\n"), LW_RCLUSTER_ERR_CLUSTERDOWN}, /* a node outside any cluster */
        {B("*1\r\n:1\r\n"), LW_RCLUSTER_ERR_PROTOCOL},
        {B("*1\r\n*2\r\n:0\r\n:5\r\n"), LW_RCLUSTER_ERR_PROTOCOL}, /* no master */
        {B("*1\r\n*3\r\n:9\r\n:5\r\n*2\r\n$1\r\nh\r\n:1\r\n"),
         LW_RCLUSTER_ERR_PROTOCOL}, /* end < start */
        {B("*1\r\n*3\r\n:0\r\n:16384\r\n*2\r\n$1\r\nh\r\n:1\r\n"),
         LW_RCLUSTER_ERR_PROTOCOL}, /* past the last */
        {B("*1\r\n*3\r\n:-1\r\n:5\r\n*2\r\n$1\r\nh\r\n:1\r\n"), LW_RCLUSTER_ERR_PROTOCOL},
        {B("*1\r\n*3\r\n:0\r\n:5\r\n*2\r\n$1\r\nh\r\n:0\r\n"),
         LW_RCLUSTER_ERR_PROTOCOL}, /* port 0 */
        {B("*1\r\n*3\r\n:0\r\n:5\r\n*2\r\n:1\r\n:1\r\n"),
         LW_RCLUSTER_ERR_PROTOCOL}, /* host not a string */
        {B("*1\r\n*3\r\n:0\r\n:5\r\n*1\r\n$1\r\nh\r\n"), LW_RCLUSTER_ERR_PROTOCOL}, /* no port */
        {B("*1\r\n*3\r\n$1\r\n0\r\n:5\r\n*2\r\n$1\r\nh\r\n:1\r\n"), LW_RCLUSTER_ERR_PROTOCOL},
        {B("*1\r\n*3\r\n:0\r\n:5\r\n*2\r\n$0\r\n\r\n:1\r\n"),
         LW_RCLUSTER_ERR_PROTOCOL}, /* "" without origin */
        {B("*1\r\n*3\r\n:0\r\n:5\r\n*2\r\n$3\r\nh\0h\r\n:1\r\n"),
         LW_RCLUSTER_ERR_PROTOCOL}, /* NUL in host */
        {B("*2\r\n*3\r\n:0\r\n:5\r\n*2\r\n$1\r\nh\r\n:1\r\n*3\r\n:6\r\n:9\r\n*2\r\n$1\r\nh\r\n:"
           "99999\r\n"),
         LW_RCLUSTER_ERR_PROTOCOL}, /* the second entry is bad: nothing of the first applies */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        r = lw_test_resp(bad[i].bytes, bad[i].len);
        errstr[0] = '\0';
        assert_int_equal(lw_rcluster__apply_slots(c, r, NULL, errstr, sizeof errstr), bad[i].err);
        assert_true(errstr[0] != '\0');
        freeReplyObject(r);
        /* The old map stands. */
        assert_int_equal(port_of_slot(c, 0), 27001);
        assert_int_equal(port_of_slot(c, 16383), 27003);
        assert_int_equal(lw_rcluster_master_count(c), 3);
    }
    assert_int_equal(lw_rcluster__apply_slots(c, NULL, NULL, errstr, sizeof errstr),
                     LW_RCLUSTER_ERR_PROTOCOL);
    lw_rcluster_destroy(c);
}

static void test_batch_building_and_errors(void **state)
{
    char errstr[128];
    lw_rcluster_t *c = offline();
    lw_rcluster_batch_t *b = lw_rcluster_batch_new(c);
    assert_non_null(b);
    assert_int_equal(lw_rcluster_batch_appendf(b, "PING"),
                     LW_RCLUSTER_ERR_INVALID_ARG); /* no group */
    assert_int_equal(lw_rcluster_batch_group(b, -1), -1);
    assert_int_equal(lw_rcluster_batch_group(b, LW_RCLUSTER_SLOTS), -1);
    assert_int_equal(lw_rcluster_batch_group(b, 42), 0);
    assert_int_equal(lw_rcluster_batch_appendf(b, "MULTI"), LW_RCLUSTER_OK);
    const char *argv[] = {"SET", "k{x}", "v"};
    assert_int_equal(lw_rcluster_batch_append_argv(b, 3, argv, NULL), LW_RCLUSTER_OK);
    assert_int_equal(lw_rcluster_batch_append_argv(b, 0, argv, NULL), LW_RCLUSTER_ERR_INVALID_ARG);
    assert_int_equal(lw_rcluster_batch_appendf(b, "EXEC"), LW_RCLUSTER_OK);
    /* Pre-built RESP: exactly one complete command, or refused. */
    static const char one[] = "*3\r\n$3\r\nSET\r\n$4\r\nk{x}\r\n$2\r\nv\n\r\n";
    assert_int_equal(lw_rcluster_batch_append_resp(b, one, sizeof one - 1), LW_RCLUSTER_OK);
    static const char *const bad[] = {
        "",
        "*0\r\n",
        "*1\r\n",
        "*1\r\n$4\r\nPING",
        "*1\r\n$4\r\nPING\r",
        "*1\r\n$4\r\nPING\r\n*1\r\n$4\r\nPING\r\n", /* two commands */
        "*1\r\n$5\r\nPING\r\n",
        "*1\r\n$3\r\nPING\r\n",
        "*2\r\n$4\r\nPING\r\n",
        "*1\r\n:4\r\nPING\r\n",
        "PING\r\n",
        "*-1\r\n",
        "*1\r\n$99999999999999999999\r\nx\r\n",
        "*99999999999\r\n$1\r\nx\r\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(lw_rcluster_batch_append_resp(b, bad[i], strlen(bad[i])),
                         LW_RCLUSTER_ERR_INVALID_ARG);
    assert_int_equal(lw_rcluster_batch_append_resp(b, NULL, 0), LW_RCLUSTER_ERR_INVALID_ARG);
    assert_int_equal(lw_rcluster_group_size(b, 0), 4);
    assert_int_equal(lw_rcluster_batch_group(b, 7), 1);
    assert_int_equal(lw_rcluster_batch_groups(b), 2);
    assert_int_equal(lw_rcluster_group_size(b, 1), 0);
    assert_int_equal(lw_rcluster_group_size(b, 2), 0);
    assert_null(lw_rcluster_group_reply(b, 0, 0));
    assert_null(lw_rcluster_group_reply(b, 0, 3));
    assert_int_equal(lw_rcluster_batch_recv(b, errstr, sizeof errstr), LW_RCLUSTER_ERR_INVALID_ARG);
    assert_int_equal(lw_rcluster_batch_wait_nodes(b), 0);
    assert_int_equal(lw_rcluster_batch_wait_node(b, 0, NULL, NULL, NULL),
                     LW_RCLUSTER_ERR_INVALID_ARG);
    lw_rcluster_batch_reset(b);
    assert_int_equal(lw_rcluster_batch_groups(b), 0);
    lw_rcluster_batch_destroy(b);

    /* NULL everywhere is safe. */
    lw_rcluster_batch_destroy(NULL);
    lw_rcluster_destroy(NULL);
    lw_rcluster_batch_reset(NULL);
    assert_null(lw_rcluster_batch_new(NULL));
    assert_false(lw_rcluster_is_cluster(NULL));
    assert_int_equal(lw_rcluster_master_count(NULL), 0);
    lw_rcluster_t *none = (lw_rcluster_t *)1;
    assert_int_equal(lw_rcluster_new(NULL, NULL, &none, errstr, sizeof errstr),
                     LW_RCLUSTER_ERR_INVALID_ARG);
    assert_null(none);
    redisReply *reply = (redisReply *)1;
    assert_int_equal(lw_rcluster_command(c, 99999, &reply, errstr, sizeof errstr, "PING"),
                     LW_RCLUSTER_ERR_INVALID_ARG);
    lw_rcluster_destroy(c);

    /* Every code is named; retriable ones are exactly the passing faults. */
    for (int e = 0; e <= LW_RCLUSTER_ERR__CNT; e++)
        assert_non_null(lw_rcluster_err2str((lw_rcluster_err_t)e));
    assert_false(lw_rcluster_err_is_retriable(LW_RCLUSTER_OK));
    assert_false(lw_rcluster_err_is_retriable(LW_RCLUSTER_ERR_AUTH));
    assert_false(lw_rcluster_err_is_retriable(LW_RCLUSTER_ERR_PROTOCOL));
    assert_false(lw_rcluster_err_is_retriable(LW_RCLUSTER_ERR_INVALID_ARG));
    assert_true(lw_rcluster_err_is_retriable(LW_RCLUSTER_ERR_CONNECT));
    assert_true(lw_rcluster_err_is_retriable(LW_RCLUSTER_ERR_IO));
    assert_true(lw_rcluster_err_is_retriable(LW_RCLUSTER_ERR_CLUSTERDOWN));
    assert_true(lw_rcluster_err_is_retriable(LW_RCLUSTER_ERR_TRYAGAIN));
    assert_true(lw_rcluster_err_is_retriable(LW_RCLUSTER_ERR_NOT_REPLICATED));
    assert_false(lw_rcluster_err_is_retriable(LW_RCLUSTER_ERR__CNT));
}

/* A server that is not there: CONNECT, retriable, errstr naming it. */
static void test_connect_refused(void **state)
{
    lw_redis_url_t url;
    char errstr[256];
    assert_int_equal(lw_redis_url_parse("redis://127.0.0.1:1", &url, errstr, sizeof errstr), LW_OK);
    lw_rcluster_t *c = NULL;
    lw_rcluster_err_t err = lw_rcluster_new(&url, NULL, &c, errstr, sizeof errstr);
    assert_int_equal(err, LW_RCLUSTER_ERR_CONNECT);
    assert_true(lw_rcluster_err_is_retriable(err));
    assert_null(c);
    assert_non_null(strstr(errstr, "127.0.0.1"));
}

/* ---- A batch's replies in an arena (rcreply.c) ---- */

/* Same type, value and shape, recursively. */
static void assert_same_reply(const redisReply *a, const redisReply *b)
{
    assert_non_null(a);
    assert_non_null(b);
    assert_int_equal(a->type, b->type);
    switch (a->type) {
    case REDIS_REPLY_INTEGER:
        assert_true(a->integer == b->integer);
        break;
    case REDIS_REPLY_STRING:
    case REDIS_REPLY_STATUS:
    case REDIS_REPLY_ERROR:
        assert_int_equal(a->len, b->len);
        assert_memory_equal(a->str, b->str, a->len);
        assert_int_equal(a->str[a->len], '\0');
        assert_int_equal(b->str[b->len], '\0');
        break;
    case REDIS_REPLY_ARRAY:
        assert_int_equal(a->elements, b->elements);
        for (size_t i = 0; i < a->elements; i++)
            assert_same_reply(a->element[i], b->element[i]);
        break;
    default:
        break;
    }
}

/* Every reply in bytes through an arena reader, fed in pieces of step bytes,
 * checked against hiredis' default reader and against a heap clone. */
static size_t arena_check(lw_rc_arena_t *a, const char *bytes, size_t len, size_t step)
{
    redisReader *def = redisReaderCreate(), *ar = redisReaderCreateWithFunctions(&lw_rc_arena_fns);
    assert_non_null(def);
    assert_non_null(ar);
    ar->privdata = a;
    assert_int_equal(redisReaderFeed(def, bytes, len), REDIS_OK);
    size_t n = 0, fed = 0;
    for (;;) {
        void *want = NULL, *got = NULL;
        assert_int_equal(redisReaderGetReply(def, &want), REDIS_OK);
        while (!got) {
            assert_int_equal(redisReaderGetReply(ar, &got), REDIS_OK);
            if (got || fed == len)
                break;
            size_t k = len - fed < step ? len - fed : step;
            assert_int_equal(redisReaderFeed(ar, bytes + fed, k), REDIS_OK);
            fed += k;
        }
        if (!want) {
            assert_null(got);
            break;
        }
        assert_same_reply(want, got);
        redisReply *c = lw_rc_reply_clone(got);
        assert_same_reply(want, c);
        freeReplyObject(c); /* a heap tree hiredis frees (ASan: nothing left) */
        freeReplyObject(want);
        n++;
    }
    redisReaderFree(def);
    redisReaderFree(ar);
    return n;
}

static void test_arena_replies(void **state)
{
    (void)state;
    /* recorded from Redis 7 (redis-cli --no-raw, then the bytes): an MGET of a
     * slot's states with a new borrower, write.lua's per-borrower codes, and
     * the rest of what a batch meets */
    static const char rec[] =
        "*3\r\n$5\r\n\x05\x01\x02\r\n\r\n$-1\r\n$3\r\n\x00\xff\x80\r\n" /* MGET: bytes, nil */
        "*4\r\n:0\r\n:0\r\n:7\r\n:0\r\n"                                /* write.lua codes */
        "-MOVED 3999 127.0.0.1:21002\r\n"
        "+OK\r\n+QUEUED\r\n"
        "*2\r\n*2\r\n:1\r\n$2\r\nab\r\n*0\r\n" /* EXEC of nested arrays */
        "*-1\r\n"                              /* EXEC aborted: nil array */
        ":-9223372036854775808\r\n"
        "$0\r\n\r\n";
    lw_rc_arena_t a;
    lw_rc_arena_init(&a);
    for (size_t step = 1; step <= sizeof rec; step += 7) {
        assert_int_equal(arena_check(&a, rec, sizeof rec - 1, step), 9);
        lw_rc_arena_reset(&a);
    }
    /* a value bigger than a block, then many small ones over several blocks,
     * rewound and filled again (blocks are reused) */
    size_t big = 200 * 1024;
    char *buf = malloc(big + 64);
    assert_non_null(buf);
    int h = snprintf(buf, 64, "$%zu\r\n", big);
    memset(buf + h, 'x', big);
    memcpy(buf + h + big, "\r\n", 2);
    for (int round = 0; round < 3; round++) {
        assert_int_equal(arena_check(&a, buf, (size_t)h + big + 2, big / 3), 1);
        char line[64];
        for (int i = 0; i < 5000; i++) {
            int n = snprintf(line, sizeof line, "*2\r\n$5\r\nv%04d\r\n:%d\r\n", i, i);
            assert_int_equal(arena_check(&a, line, (size_t)n, (size_t)n), 1);
        }
        lw_rc_arena_reset(&a);
    }
    free(buf);
    /* a protocol error: reported, nothing freed one by one */
    redisReader *ar = redisReaderCreateWithFunctions(&lw_rc_arena_fns);
    assert_non_null(ar);
    ar->privdata = &a;
    static const char bad[] = "*2\r\n$2\r\nok\r\n!x\r\n";
    assert_int_equal(redisReaderFeed(ar, bad, sizeof bad - 1), REDIS_OK);
    void *r = NULL;
    assert_int_equal(redisReaderGetReply(ar, &r), REDIS_ERR);
    redisReaderFree(ar);
    /* without an arena the functions refuse (out of memory), they never crash */
    ar = redisReaderCreateWithFunctions(&lw_rc_arena_fns);
    assert_non_null(ar);
    assert_int_equal(redisReaderFeed(ar, ":1\r\n", 4), REDIS_OK);
    assert_int_equal(redisReaderGetReply(ar, &r), REDIS_ERR);
    redisReaderFree(ar);
    assert_null(lw_rc_reply_clone(NULL));
    lw_rc_arena_free(&a);
    lw_rc_arena_free(&a); /* twice is fine */
}

/* lw_reply_arena_get() on a real hiredis connection (one end of a socket
 * pair): the replies of an MGET and of write.lua as recorded, then a reply
 * cut off by the peer closing, which fails and leaves nothing for hiredis to
 * free; the connection's own replies stay hiredis' afterwards. */
static void test_arena_get_on_a_connection(void **state)
{
    (void)state;
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    redisContext *c = redisConnectFd(sv[0]);
    assert_non_null(c);
    assert_int_equal(c->err, 0);
    lw_reply_arena_t *a = lw_reply_arena_new();
    assert_non_null(a);
    static const char rec[] = "*3\r\n$3\r\n\x05\x01\x02\r\n$-1\r\n$2\r\nab\r\n"
                              "*2\r\n:0\r\n:7\r\n"
                              "+OK\r\n"
                              "*2\r\n$5\r\nhello\r\n";
    assert_int_equal(write(sv[1], rec, sizeof rec - 1), (ssize_t)(sizeof rec - 1));
    redisReply *r = NULL;
    assert_int_equal(lw_reply_arena_get(a, c, &r), REDIS_OK);
    assert_int_equal(r->type, REDIS_REPLY_ARRAY);
    assert_int_equal(r->elements, 3);
    assert_int_equal(r->element[0]->len, 3);
    assert_memory_equal(r->element[0]->str, "\x05\x01\x02", 3);
    assert_int_equal(r->element[1]->type, REDIS_REPLY_NIL);
    assert_string_equal(r->element[2]->str, "ab");
    assert_int_equal(lw_reply_arena_get(a, c, &r), REDIS_OK);
    assert_int_equal(r->elements, 2);
    assert_true(r->element[1]->integer == 7);
    lw_reply_arena_reset(a);
    /* a plain redisGetReply after it: hiredis' own object, freed as usual */
    assert_int_equal(redisGetReply(c, (void **)&r), REDIS_OK);
    assert_string_equal(r->str, "OK");
    freeReplyObject(r);
    /* half an array, then the peer goes: an error, the partial tree the arena's */
    close(sv[1]);
    r = NULL;
    assert_int_equal(lw_reply_arena_get(a, c, &r), REDIS_ERR);
    assert_null(c->reader->reply);
    redisFree(c); /* would free the arena's objects if the reader still held them */
    lw_reply_arena_destroy(a);
    lw_reply_arena_destroy(NULL);
    lw_reply_arena_reset(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crc16_and_slots),
        cmocka_unit_test(test_classify_replies),
        cmocka_unit_test(test_slot_map),
        cmocka_unit_test(test_bad_slot_maps),
        cmocka_unit_test(test_batch_building_and_errors),
        cmocka_unit_test(test_connect_refused),
        cmocka_unit_test(test_arena_replies),
        cmocka_unit_test(test_arena_get_on_a_connection),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
