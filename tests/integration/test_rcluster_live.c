/*
 * test_rcluster_live.c - the Redis Cluster client (common/src/rcluster.c)
 * against a REAL cluster of 3 masters with a replica each
 * (./deploy/stack.sh up --redis-cluster 3; ./tests/run.sh starts one), and
 * against the single Redis of the ordinary stack.
 *
 *   LOANWIRE_REDIS_CLUSTER            URL of any node of the cluster (required)
 *   LOANWIRE_REDIS_CLUSTER_STACK_DIR  its stack folder, so the failover test can
 *                                     find, kill -9 and restart a master (required)
 *   LOANWIRE_REDIS                    the single Redis (as every integration test)
 *
 * A missing or unreachable cluster fails the test loudly: it never skips.
 *
 * Covered: routing of MULTI/EXEC groups and plain groups to all three masters,
 * each key found on the master its slot says; WAIT per master touched; a slot
 * migrated by hand (CLUSTER SETSLOT IMPORTING/MIGRATING, MIGRATE, SETSLOT
 * NODE) while groups write into it: ASK with ASKING before MULTI, TRYAGAIN for
 * a transaction whose keys are split between the two nodes, then MOVED; and a
 * master killed with kill -9 between send and recv: the batch ends done after
 * the replica's promotion, and batches that WAIT could not vouch for are
 * written again, so every key ends with the last value written.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "lw_test.h"
#include "loanwire/rcluster.h"

#include <pthread.h>
#include <signal.h>

static const char *cluster_url(void)
{
    const char *u = getenv("LOANWIRE_REDIS_CLUSTER");
    if (!u || !*u) {
        fprintf(stderr, "FAIL: LOANWIRE_REDIS_CLUSTER is not set. This test needs a real Redis "
                        "Cluster:\n      ./deploy/stack.sh up --redis-cluster 3 (in its own "
                        "LOANWIRE_STACK_DIR), then export LOANWIRE_REDIS_CLUSTER=redis://host:port "
                        "and LOANWIRE_REDIS_CLUSTER_STACK_DIR, or run ./tests/run.sh.\n");
        exit(1);
    }
    return u;
}

static lw_rcluster_t *connect_url(const char *u, const lw_rcluster_opts_t *opts, bool cluster)
{
    lw_redis_url_t url;
    char errstr[512];
    lw_rcluster_t *c = NULL;
    if (lw_redis_url_parse(u, &url, errstr, sizeof errstr) != LW_OK ||
        lw_rcluster_new(&url, opts, &c, errstr, sizeof errstr) != LW_RCLUSTER_OK) {
        if (!cluster)
            lw_test_fail_server("Redis", u, errstr);
        fprintf(stderr,
                "FAIL: the Redis Cluster is not reachable at %s (%s).\n"
                "      Start one with ./deploy/stack.sh up --redis-cluster 3 (or run "
                "./tests/run.sh),\n      or point LOANWIRE_REDIS_CLUSTER at a node of one.\n",
                u, errstr);
        exit(1);
    }
    return c;
}

static lw_rcluster_t *connect_cluster(int retry_ms)
{
    lw_rcluster_opts_t o;
    lw_rcluster_opts_init(&o);
    o.retry_ms = retry_ms;
    lw_rcluster_t *c = connect_url(cluster_url(), &o, true);
    if (!lw_rcluster_is_cluster(c)) {
        fprintf(stderr, "FAIL: %s is a single Redis, not a cluster node (cluster_enabled:0)\n",
                cluster_url());
        exit(1);
    }
    return c;
}

/* A raw connection to host:port, for checks that must not go through the client. */
static redisContext *raw(const char *host, int port)
{
    struct timeval tv = {5, 0};
    redisContext *r = redisConnectWithTimeout(host, port, tv);
    if (!r || r->err)
        lw_test_fail_server("Redis node", host, r ? r->errstr : "no memory");
    return r;
}

static redisReply *cmd_ok(redisContext *r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *rep = redisvCommand(r, fmt, ap);
    va_end(ap);
    assert_non_null(rep);
    if (rep->type == REDIS_REPLY_ERROR)
        fail_msg("%s: %s", fmt, rep->str);
    return rep;
}

/* Adds group "MULTI; SET b:{tag} v; SET a:{tag} v; EXEC" for one borrower tag. */
static void add_borrower(lw_rcluster_batch_t *b, const char *tag, const char *val)
{
    char k1[160], k2[160];
    snprintf(k1, sizeof k1, "lwt:b:{%s}", tag);
    snprintf(k2, sizeof k2, "lwt:a:{%s}", tag);
    assert_true(lw_rcluster_batch_group(b, lw_rcluster_keyslot(k1, strlen(k1))) >= 0);
    assert_int_equal(lw_rcluster_batch_appendf(b, "MULTI"), LW_RCLUSTER_OK);
    assert_int_equal(lw_rcluster_batch_appendf(b, "SET %s %s EX 3600", k1, val), LW_RCLUSTER_OK);
    assert_int_equal(lw_rcluster_batch_appendf(b, "SET %s %s EX 3600", k2, val), LW_RCLUSTER_OK);
    assert_int_equal(lw_rcluster_batch_appendf(b, "EXEC"), LW_RCLUSTER_OK);
}

/* Every group of a MULTI batch answered OK, QUEUED, QUEUED, [OK, OK]. */
static void check_exec_replies(const lw_rcluster_batch_t *b)
{
    for (size_t g = 0; g < lw_rcluster_batch_groups(b); g++) {
        assert_int_equal(lw_rcluster_group_err(b, g), LW_RCLUSTER_OK);
        assert_int_equal(lw_rcluster_group_size(b, g), 4);
        const redisReply *m = lw_rcluster_group_reply(b, g, 0);
        assert_non_null(m);
        assert_int_equal(m->type, REDIS_REPLY_STATUS);
        const redisReply *q = lw_rcluster_group_reply(b, g, 1);
        assert_non_null(q);
        assert_string_equal(q->str, "QUEUED");
        const redisReply *e = lw_rcluster_group_reply(b, g, 3);
        assert_non_null(e);
        if (e->type != REDIS_REPLY_ARRAY)
            fail_msg("group %zu: EXEC answered type %d: %s", g, e->type, e->str ? e->str : "");
        assert_int_equal(e->elements, 2);
        assert_string_equal(e->element[0]->str, "OK");
        assert_string_equal(e->element[1]->str, "OK");
    }
}

static void get_expect(lw_rcluster_t *c, const char *key, const char *want)
{
    redisReply *r = NULL;
    char errstr[512];
    lw_rcluster_err_t err = lw_rcluster_command(c, lw_rcluster_keyslot(key, strlen(key)), &r,
                                                errstr, sizeof errstr, "GET %s", key);
    if (err)
        fail_msg("GET %s: %s: %s", key, lw_rcluster_err2str(err), errstr);
    if (!want) {
        assert_int_equal(r->type, REDIS_REPLY_NIL);
    } else {
        if (r->type != REDIS_REPLY_STRING)
            fail_msg("GET %s: type %d %s", key, r->type, r->str ? r->str : "");
        if (strcmp(r->str, want) != 0)
            fail_msg("GET %s: %s, want %s", key, r->str, want);
    }
    freeReplyObject(r);
}

static int master_of_key(lw_rcluster_t *c, const char *key)
{
    return lw_rcluster_slot_master(c, lw_rcluster_keyslot(key, strlen(key)));
}

/* ---- Routing ------------------------------------------------------------------ */

static void count_pong(void *opaque, int master, const char *host, int port,
                       const redisReply *reply, lw_rcluster_err_t err)
{
    int *n = opaque;
    assert_int_equal(err, LW_RCLUSTER_OK);
    assert_non_null(reply);
    assert_string_equal(reply->str, "PONG");
    (*n)++;
}

static void test_routing_all_masters(void **state)
{
    char errstr[512], run[64], tag[96], val[96];
    lw_rcluster_t *c = connect_cluster(10000);
    assert_int_equal(lw_rcluster_master_count(c), 3);
    lw_test_unique(run, sizeof run, "route");

    /* 300 borrowers, one MULTI group each, plus a plain (non-MULTI) group per master. */
    lw_rcluster_batch_t *b = lw_rcluster_batch_new(c);
    for (int i = 0; i < 300; i++) {
        snprintf(tag, sizeof tag, "%s-%d", run, i);
        snprintf(val, sizeof val, "v1-%d", i);
        add_borrower(b, tag, val);
    }
    assert_int_equal(lw_rcluster_batch_send(b, errstr, sizeof errstr), LW_RCLUSTER_OK);
    /* While the batch's replies wait on the connections, nothing else may read them. */
    redisReply *busy = NULL;
    assert_int_equal(lw_rcluster_command(c, 0, &busy, errstr, sizeof errstr, "PING"),
                     LW_RCLUSTER_ERR_INVALID_ARG);
    assert_null(busy);
    assert_int_equal(lw_rcluster_batch_send(b, errstr, sizeof errstr), LW_RCLUSTER_ERR_INVALID_ARG);
    lw_rcluster_err_t err = lw_rcluster_batch_recv(b, errstr, sizeof errstr);
    if (err)
        fail_msg("recv: %s", errstr);
    check_exec_replies(b);

    /* WAIT reaches every master the batch wrote, and each has its replica. */
    err = lw_rcluster_batch_wait(b, 1, 2000, errstr, sizeof errstr);
    if (err)
        fail_msg("wait: %s", errstr);
    assert_int_equal(lw_rcluster_batch_wait_nodes(b), 3);
    for (size_t i = 0; i < 3; i++) {
        long long replicas = -2;
        assert_int_equal(lw_rcluster_batch_wait_node(b, i, NULL, NULL, &replicas), LW_RCLUSTER_OK);
        assert_true(replicas >= 1);
    }

    /* Each key is on the master its slot names, asked directly (no client routing). */
    int per_master[3] = {0, 0, 0};
    redisContext *direct[3];
    for (int m = 0; m < 3; m++) {
        const char *host;
        int port;
        assert_int_equal(lw_rcluster_master(c, m, &host, &port), LW_RCLUSTER_OK);
        direct[m] = raw(host, port);
    }
    for (int i = 0; i < 300; i++) {
        char key[160];
        snprintf(key, sizeof key, "lwt:b:{%s-%d}", run, i);
        int m = master_of_key(c, key);
        assert_true(m >= 0 && m < 3);
        redisReply *r = cmd_ok(direct[m], "GET %s", key);
        snprintf(val, sizeof val, "v1-%d", i);
        assert_int_equal(r->type, REDIS_REPLY_STRING);
        assert_string_equal(r->str, val);
        freeReplyObject(r);
        per_master[m]++;
        /* And through the client, by key. */
        snprintf(key, sizeof key, "lwt:a:{%s-%d}", run, i);
        get_expect(c, key, val);
    }
    for (int m = 0; m < 3; m++) {
        assert_true(per_master[m] > 30); /* ~100 each: all three masters were written */
        redisFree(direct[m]);
    }

    /* A plain group (no MULTI): every reply kept, in order. */
    lw_rcluster_batch_reset(b);
    char key[160];
    snprintf(key, sizeof key, "lwt:n:{%s}", run);
    int slot = lw_rcluster_keyslot(key, strlen(key));
    assert_int_equal(lw_rcluster_batch_group(b, slot), 0);
    assert_int_equal(lw_rcluster_batch_appendf(b, "SET %s 41 EX 600", key), LW_RCLUSTER_OK);
    assert_int_equal(lw_rcluster_batch_appendf(b, "INCR %s", key), LW_RCLUSTER_OK);
    assert_int_equal(lw_rcluster_batch_appendf(b, "HSET %s f v", key),
                     LW_RCLUSTER_OK); /* WRONGTYPE */
    assert_int_equal(lw_rcluster_batch_send(b, errstr, sizeof errstr), LW_RCLUSTER_OK);
    assert_int_equal(lw_rcluster_batch_recv(b, errstr, sizeof errstr), LW_RCLUSTER_OK);
    assert_int_equal(lw_rcluster_group_reply(b, 0, 1)->integer, 42);
    const redisReply *wt = lw_rcluster_group_reply(b, 0, 2);
    assert_int_equal(wt->type, REDIS_REPLY_ERROR); /* the command's own error reaches the caller */
    assert_non_null(strstr(wt->str, "WRONGTYPE"));
    lw_rcluster_batch_destroy(b);

    /* One command on every master. */
    int pongs = 0;
    const char *ping[] = {"PING"};
    assert_int_equal(
        lw_rcluster_on_masters(c, 1, ping, NULL, count_pong, &pongs, errstr, sizeof errstr),
        LW_RCLUSTER_OK);
    assert_int_equal(pongs, 3);
    lw_rcluster_stats_t st;
    lw_rcluster_stats(c, &st);
    assert_int_equal(st.moved, 0); /* a fresh map routes right the first time */
    lw_rcluster_destroy(c);
}

/* ---- The same API on one Redis ---------------------------------------------------- */

static void test_single_instance(void **state)
{
    char errstr[512], run[64], tag[96];
    lw_rcluster_t *c = connect_url(lw_test_redis_url(), NULL, false);
    assert_false(lw_rcluster_is_cluster(c));
    assert_int_equal(lw_rcluster_master_count(c), 1);
    assert_int_equal(lw_rcluster_slot_master(c, 0), 0);
    assert_int_equal(lw_rcluster_slot_master(c, 16383), 0);
    lw_test_unique(run, sizeof run, "single");
    lw_rcluster_batch_t *b = lw_rcluster_batch_new(c);
    for (int i = 0; i < 50; i++) {
        snprintf(tag, sizeof tag, "%s-%d", run, i);
        add_borrower(b, tag, "s1");
    }
    assert_int_equal(lw_rcluster_batch_send(b, errstr, sizeof errstr), LW_RCLUSTER_OK);
    assert_int_equal(lw_rcluster_batch_recv(b, errstr, sizeof errstr), LW_RCLUSTER_OK);
    check_exec_replies(b);
    /* No replica: WAIT 1 cannot be met, WAIT 0 is. */
    assert_int_equal(lw_rcluster_batch_wait(b, 1, 50, errstr, sizeof errstr),
                     LW_RCLUSTER_ERR_NOT_REPLICATED);
    assert_non_null(strstr(errstr, "0 of 1"));
    assert_int_equal(lw_rcluster_batch_wait(b, 0, 50, errstr, sizeof errstr), LW_RCLUSTER_OK);
    assert_int_equal(lw_rcluster_batch_wait_nodes(b), 1);
    snprintf(tag, sizeof tag, "lwt:b:{%s-7}", run);
    get_expect(c, tag, "s1");
    lw_rcluster_batch_destroy(b);
    lw_rcluster_destroy(c);
}

/* ---- Resharding: ASK, TRYAGAIN, MOVED ---------------------------------------------- */

typedef struct migration {
    char src_host[256], dst_host[256];
    int src_port, dst_port;
    char src_id[64], dst_id[64];
    char other_host[256];
    int other_port;
    int slot;
    int delay_ms;
} migration_t;

static void node_id(const char *host, int port, char *out, size_t cap)
{
    redisContext *r = raw(host, port);
    redisReply *rep = cmd_ok(r, "CLUSTER MYID");
    snprintf(out, cap, "%s", rep->str);
    freeReplyObject(rep);
    redisFree(r);
}

/* Moves every key of the slot to dst, then gives dst the slot: what redis-cli --cluster reshard
 * does. */
static void *finish_migration(void *arg)
{
    migration_t *m = arg;
    struct timespec ts = {m->delay_ms / 1000, (long)(m->delay_ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
    redisContext *src = raw(m->src_host, m->src_port);
    redisContext *dst = raw(m->dst_host, m->dst_port);
    redisContext *oth = raw(m->other_host, m->other_port);
    for (;;) {
        redisReply *keys = redisCommand(src, "CLUSTER GETKEYSINSLOT %d 100", m->slot);
        if (!keys || keys->type != REDIS_REPLY_ARRAY) {
            fprintf(stderr, "GETKEYSINSLOT failed\n");
            exit(1);
        }
        size_t n = keys->elements;
        for (size_t i = 0; i < n; i++) {
            redisReply *r = redisCommand(src, "MIGRATE %s %d %s 0 5000", m->dst_host, m->dst_port,
                                         keys->element[i]->str);
            if (!r || r->type == REDIS_REPLY_ERROR) {
                fprintf(stderr, "MIGRATE %s: %s\n", keys->element[i]->str, r ? r->str : "?");
                exit(1);
            }
            freeReplyObject(r);
        }
        freeReplyObject(keys);
        if (n == 0)
            break;
    }
    /* The importing node first, then the source, then the others (Redis' documented order). */
    freeReplyObject(cmd_ok(dst, "CLUSTER SETSLOT %d NODE %s", m->slot, m->dst_id));
    freeReplyObject(cmd_ok(src, "CLUSTER SETSLOT %d NODE %s", m->slot, m->dst_id));
    freeReplyObject(cmd_ok(oth, "CLUSTER SETSLOT %d NODE %s", m->slot, m->dst_id));
    redisFree(src);
    redisFree(dst);
    redisFree(oth);
    return NULL;
}

/* Set while a hand-made migration is open, so a failed test does not leave the slot open. */
static char migration_open_at[300];

static int close_migration(void **state)
{
    if (migration_open_at[0]) {
        char cmd[512];
        snprintf(cmd, sizeof cmd, "redis-cli --cluster fix %s --cluster-yes >/dev/null 2>&1",
                 migration_open_at);
        if (system(cmd) != 0)
            fprintf(stderr, "redis-cli --cluster fix %s failed\n", migration_open_at);
        migration_open_at[0] = '\0';
    }
    return 0;
}

static void test_migration_ask_tryagain_moved(void **state)
{
    char errstr[512], run[64], tag[96], key[160];
    lw_rcluster_t *c = connect_cluster(20000);
    lw_rcluster_t *stale = connect_cluster(5000); /* its map stays from before the move */
    lw_test_unique(run, sizeof run, "mig");
    snprintf(tag, sizeof tag, "%s", run);
    migration_t m = {.delay_ms = 600};
    snprintf(key, sizeof key, "lwt:b:{%s}", tag);
    m.slot = lw_rcluster_keyslot(key, strlen(key));
    int src = lw_rcluster_slot_master(c, m.slot);
    assert_true(src >= 0);
    int dst = (src + 1) % 3, oth = (src + 2) % 3;
    const char *h;
    assert_int_equal(lw_rcluster_master(c, src, &h, &m.src_port), LW_RCLUSTER_OK);
    snprintf(m.src_host, sizeof m.src_host, "%s", h);
    assert_int_equal(lw_rcluster_master(c, dst, &h, &m.dst_port), LW_RCLUSTER_OK);
    snprintf(m.dst_host, sizeof m.dst_host, "%s", h);
    assert_int_equal(lw_rcluster_master(c, oth, &h, &m.other_port), LW_RCLUSTER_OK);
    snprintf(m.other_host, sizeof m.other_host, "%s", h);
    node_id(m.src_host, m.src_port, m.src_id, sizeof m.src_id);
    node_id(m.dst_host, m.dst_port, m.dst_id, sizeof m.dst_id);

    /* An existing borrower in the slot, written before the migration starts. */
    lw_rcluster_batch_t *b = lw_rcluster_batch_new(c);
    add_borrower(b, tag, "old");
    assert_int_equal(lw_rcluster_batch_send(b, errstr, sizeof errstr), LW_RCLUSTER_OK);
    assert_int_equal(lw_rcluster_batch_recv(b, errstr, sizeof errstr), LW_RCLUSTER_OK);

    redisContext *rs = raw(m.src_host, m.src_port), *rd = raw(m.dst_host, m.dst_port);
    snprintf(migration_open_at, sizeof migration_open_at, "%s:%d", m.src_host, m.src_port);
    freeReplyObject(cmd_ok(rd, "CLUSTER SETSLOT %d IMPORTING %s", m.slot, m.src_id));
    freeReplyObject(cmd_ok(rs, "CLUSTER SETSLOT %d MIGRATING %s", m.slot, m.dst_id));

    /* 1. A new borrower in the migrating slot: the source ASKs, the group lands on dst. */
    redisReply *r0;
    char key2[160];
    lw_rcluster_stats_t before, after;
    lw_rcluster_stats(c, &before);
    lw_rcluster_batch_reset(b);
    snprintf(key2, sizeof key2, "lwt:new:{%s}", tag);
    assert_int_equal(lw_rcluster_batch_group(b, m.slot), 0);
    assert_int_equal(lw_rcluster_batch_appendf(b, "MULTI"), LW_RCLUSTER_OK);
    assert_int_equal(lw_rcluster_batch_appendf(b, "SET %s n1 EX 3600", key2), LW_RCLUSTER_OK);
    assert_int_equal(lw_rcluster_batch_appendf(b, "EXEC"), LW_RCLUSTER_OK);
    /*
     * And a plain group (no MULTI): a SET of a new key (ASK: resent alone to dst
     * with ASKING) between two GETs of the key still on the source (answered
     * there, kept, not repeated). The SET comes as pre-built RESP.
     */
    char keyp[160], resp[512];
    snprintf(keyp, sizeof keyp, "lwt:p:{%s}", tag);
    int rl = snprintf(resp, sizeof resp, "*3\r\n$3\r\nSET\r\n$%zu\r\n%s\r\n$2\r\np1\r\n",
                      strlen(keyp), keyp);
    assert_int_equal(lw_rcluster_batch_group(b, m.slot), 1);
    assert_int_equal(lw_rcluster_batch_appendf(b, "GET %s", key), LW_RCLUSTER_OK);
    assert_int_equal(lw_rcluster_batch_append_resp(b, resp, (size_t)rl), LW_RCLUSTER_OK);
    assert_int_equal(lw_rcluster_batch_appendf(b, "GET %s", key), LW_RCLUSTER_OK);
    assert_int_equal(lw_rcluster_batch_send(b, errstr, sizeof errstr), LW_RCLUSTER_OK);
    lw_rcluster_err_t err = lw_rcluster_batch_recv(b, errstr, sizeof errstr);
    if (err)
        fail_msg("recv during migration: %s", errstr);
    const redisReply *e = lw_rcluster_group_reply(b, 0, 2);
    assert_int_equal(e->type, REDIS_REPLY_ARRAY);
    assert_string_equal(e->element[0]->str, "OK");
    assert_string_equal(lw_rcluster_group_reply(b, 1, 0)->str, "old");
    assert_string_equal(lw_rcluster_group_reply(b, 1, 1)->str, "OK");
    assert_string_equal(lw_rcluster_group_reply(b, 1, 2)->str, "old");
    lw_rcluster_stats(c, &after);
    assert_int_equal(after.ask - before.ask, 2); /* one per group */
    /* The plain group ran on both nodes: WAIT asks both. */
    err = lw_rcluster_batch_wait(b, 1, 2000, errstr, sizeof errstr);
    if (err)
        fail_msg("wait during migration: %s", errstr);
    assert_int_equal(lw_rcluster_batch_wait_nodes(b), 2);
    assert_int_equal(after.moved, before.moved);
    freeReplyObject(cmd_ok(rd, "ASKING"));
    r0 = cmd_ok(rd, "GET %s", keyp);
    assert_int_equal(r0->type, REDIS_REPLY_STRING);
    assert_string_equal(r0->str, "p1");
    freeReplyObject(r0);
    redisReply *r = cmd_ok(rd, "ASKING");
    freeReplyObject(r);
    r = cmd_ok(rd, "GET %s", key2);
    assert_int_equal(r->type, REDIS_REPLY_STRING); /* it is on the importing node */
    assert_string_equal(r->str, "n1");
    freeReplyObject(r);
    r = redisCommand(rs, "EXISTS %s", key2); /* not on the source, which ASKs for it */
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_ERROR);
    assert_memory_equal(r->str, "ASK ", 4);
    freeReplyObject(r);
    /* The existing key is still served by the source, with no redirect. */
    get_expect(c, key, "old");

    /*
     * 2. One transaction over a key still on the source and one not yet
     * anywhere: the source ASKs, the importing node answers TRYAGAIN (keys
     * split), and the client waits until the migration ends and MOVED comes.
     */
    lw_rcluster_stats(c, &before);
    lw_rcluster_batch_reset(b);
    char key3[160];
    snprintf(key3, sizeof key3, "lwt:a:{%s}", tag); /* written by add_borrower: on the source */
    char key4[160];
    snprintf(key4, sizeof key4, "lwt:z:{%s}", tag); /* nowhere yet */
    assert_int_equal(lw_rcluster_batch_group(b, m.slot), 0);
    assert_int_equal(lw_rcluster_batch_appendf(b, "MULTI"), LW_RCLUSTER_OK);
    assert_int_equal(lw_rcluster_batch_appendf(b, "SET %s new EX 3600", key3), LW_RCLUSTER_OK);
    assert_int_equal(lw_rcluster_batch_appendf(b, "SET %s new EX 3600", key4), LW_RCLUSTER_OK);
    assert_int_equal(lw_rcluster_batch_appendf(b, "EXEC"), LW_RCLUSTER_OK);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, finish_migration, &m), 0);
    assert_int_equal(lw_rcluster_batch_send(b, errstr, sizeof errstr), LW_RCLUSTER_OK);
    err = lw_rcluster_batch_recv(b, errstr, sizeof errstr);
    pthread_join(th, NULL);
    migration_open_at[0] = '\0';
    if (err)
        fail_msg("recv across the migration: %s", errstr);
    e = lw_rcluster_group_reply(b, 0, 3);
    assert_int_equal(e->type, REDIS_REPLY_ARRAY);
    assert_int_equal(e->elements, 2);
    lw_rcluster_stats(c, &after);
    fprintf(stderr, "migration: ask %llu, moved %llu, backoffs %llu, refreshes %llu\n",
            (unsigned long long)(after.ask - before.ask),
            (unsigned long long)(after.moved - before.moved),
            (unsigned long long)(after.backoffs - before.backoffs),
            (unsigned long long)(after.refreshes - before.refreshes));
    assert_true(after.ask > before.ask);           /* the source asked */
    assert_true(after.backoffs > before.backoffs); /* TRYAGAIN made it wait */
    /* (the map reload after each pause found dst as owner, so no MOVED was needed here) */

    /* Everything is on dst now, with the transaction's values, whole. */
    r = cmd_ok(rd, "MGET %s %s %s %s %s", key, key2, key3, key4, keyp);
    assert_int_equal(r->elements, 5);
    assert_string_equal(r->element[4]->str, "p1");
    assert_string_equal(r->element[0]->str, "old");
    assert_string_equal(r->element[1]->str, "n1");
    assert_string_equal(r->element[2]->str, "new");
    assert_string_equal(r->element[3]->str, "new");
    freeReplyObject(r);
    assert_int_equal(lw_rcluster_slot_master(c, m.slot), dst);

    /* A client whose map predates the move is sent on by MOVED, and learns the map. */
    lw_rcluster_stats(stale, &before);
    get_expect(stale, key4, "new");
    get_expect(stale, key2, "n1");
    lw_rcluster_stats(stale, &after);
    assert_int_equal(after.moved - before.moved, 1);
    assert_int_equal(lw_rcluster_slot_master(stale, m.slot), dst);
    lw_rcluster_destroy(stale);

    /* A fresh client (fresh map) reads it all without a redirect. */
    lw_rcluster_t *c2 = connect_cluster(5000);
    get_expect(c2, key4, "new");
    lw_rcluster_stats(c2, &after);
    assert_int_equal(after.moved, 0);
    lw_rcluster_destroy(c2);

    redisFree(rs);
    redisFree(rd);
    lw_rcluster_batch_destroy(b);
    lw_rcluster_destroy(c);
}

/* ---- Failover: kill -9 a master between send and recv -------------------------------- */

/* Runs stack.sh on the cluster's own stack folder (not the single stack's). */
static int stack(const char *args, char *out, size_t cap)
{
    const char *src = getenv("LW_SOURCE_DIR");
    const char *dir = getenv("LOANWIRE_REDIS_CLUSTER_STACK_DIR");
    if (!src || !dir || !*dir) {
        fprintf(stderr, "FAIL: LW_SOURCE_DIR and LOANWIRE_REDIS_CLUSTER_STACK_DIR must be set "
                        "(the cluster's stack folder, for stack.sh pids/kill/start)\n");
        exit(1);
    }
    char cmd[2048];
    snprintf(
        cmd, sizeof cmd,
        "env -u LOANWIRE_REDIS -u LOANWIRE_BOOTSTRAP LOANWIRE_STACK_DIR='%s' '%s/deploy/stack.sh' "
        "%s 2>&1",
        dir, src, args);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t n = out ? fread(out, 1, cap - 1, p) : 0;
    if (out)
        out[n] = '\0';
    else {
        char sink[512];
        while (fread(sink, 1, sizeof sink, p) > 0)
            ;
    }
    return pclose(p);
}

static void write_round(lw_rcluster_batch_t *b, const char *run, int n, int round)
{
    char tag[96], val[64];
    lw_rcluster_batch_reset(b);
    for (int i = 0; i < n; i++) {
        snprintf(tag, sizeof tag, "%s-%d", run, i);
        snprintf(val, sizeof val, "r%d-%d", round, i);
        add_borrower(b, tag, val);
    }
}

static void test_failover_kill_master(void **state)
{
    char errstr[512], run[64], out[4096];
    lw_rcluster_t *c = connect_cluster(45000);
    lw_test_unique(run, sizeof run, "fo");
    enum { N = 300, ROUNDS = 8, KILL_AT = 3 };

    /* The victim: the master of borrower 0, found in stack.sh pids by its port. */
    char key0[160];
    snprintf(key0, sizeof key0, "lwt:b:{%s-0}", run);
    const char *h;
    char vh[256];
    int vport = 0;
    assert_int_equal(lw_rcluster_master(c, master_of_key(c, key0), &h, &vport), LW_RCLUSTER_OK);
    snprintf(vh, sizeof vh, "%s", h);
    if (stack("pids", out, sizeof out) != 0)
        fail_msg("stack.sh pids failed: %s", out);
    char name[32] = "";
    long pid = 0;
    for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n")) {
        char nm[32], ps[32];
        int port;
        if (sscanf(line, "%31s %31s %d", nm, ps, &port) == 3 && port == vport) {
            snprintf(name, sizeof name, "%s", nm);
            pid = strtol(ps, NULL, 10);
        }
    }
    if (!name[0] || pid <= 0)
        fail_msg("no running process on port %d in stack.sh pids", vport);

    lw_rcluster_batch_t *b = lw_rcluster_batch_new(c);
    /* A second client with a 300 ms budget: it must give up in time, retriably. */
    lw_rcluster_t *quick = connect_cluster(300);
    lw_rcluster_batch_t *qb = lw_rcluster_batch_new(quick);
    int rewrites = 0;
    for (int round = 1; round <= ROUNDS; round++) {
        write_round(b, run, N, round);
        /*
         * Killed just before this round's send: the client's open connection
         * to it is dead, reconnecting is refused until the replica is promoted
         * (cluster-node-timeout, then the election), and recv must carry the
         * batch across. Killed between send and recv instead, the master could
         * answer everything before it dies, and no failover would be needed.
         */
        if (round == KILL_AT) {
            snprintf(errstr, sizeof errstr, "kill %s", name);
            if (stack(errstr, out, sizeof out) != 0)
                fail_msg("stack.sh kill %s: %s", name, out);
            /*
             * The quick client writes the same round and runs out of budget
             * long before the failover: a retriable error, the groups of the
             * live masters done, those of the dead one not.
             */
            write_round(qb, run, N, round);
            struct timespec t0, t1;
            clock_gettime(CLOCK_MONOTONIC, &t0);
            assert_int_equal(lw_rcluster_batch_send(qb, errstr, sizeof errstr), LW_RCLUSTER_OK);
            lw_rcluster_err_t qerr = lw_rcluster_batch_recv(qb, errstr, sizeof errstr);
            clock_gettime(CLOCK_MONOTONIC, &t1);
            long ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
            fprintf(stderr, "quick client: %s after %ld ms: %s\n", lw_rcluster_err2str(qerr), ms,
                    errstr);
            assert_int_not_equal(qerr, LW_RCLUSTER_OK);
            assert_true(lw_rcluster_err_is_retriable(qerr));
            assert_true(ms < 2000 + 2000); /* the budget, plus one connect timeout at most */
            size_t done = 0, failed = 0;
            for (size_t g = 0; g < lw_rcluster_batch_groups(qb); g++) {
                lw_rcluster_err_t ge = lw_rcluster_group_err(qb, g);
                if (ge == LW_RCLUSTER_OK)
                    done++;
                else if (lw_rcluster_err_is_retriable(ge))
                    failed++;
            }
            assert_true(done > 0 && failed > 0 && done + failed == N);
        }
        assert_int_equal(lw_rcluster_batch_send(b, errstr, sizeof errstr), LW_RCLUSTER_OK);
        lw_rcluster_err_t err = lw_rcluster_batch_recv(b, errstr, sizeof errstr);
        if (err)
            fail_msg("round %d: recv: %s: %s", round, lw_rcluster_err2str(err), errstr);
        check_exec_replies(b);
        if (round == KILL_AT) {
            int np = 0;
            assert_int_equal(lw_rcluster_master(c, master_of_key(c, key0), NULL, &np),
                             LW_RCLUSTER_OK);
            if (np == vport)
                fail_msg("round %d done, but borrower 0's slot is still on the killed %s", round,
                         name);
            /* The killed master comes back, as a replica of its successor. */
            snprintf(errstr, sizeof errstr, "start %s", name);
            if (stack(errstr, out, sizeof out) != 0)
                fail_msg("stack.sh start %s: %s", name, out);
        }
        /*
         * Offsets would be stored only now. A batch that WAIT cannot vouch for
         * (its connection broke, or the promoted master has no replica until
         * the old one has resynced) is written again, as the consumer redelivers.
         */
        int tries = 0;
        while ((err = lw_rcluster_batch_wait(b, 1, 1000, errstr, sizeof errstr)) !=
               LW_RCLUSTER_OK) {
            assert_int_equal(err, LW_RCLUSTER_ERR_NOT_REPLICATED);
            fprintf(stderr, "round %d: %s: writing the batch again\n", round, errstr);
            rewrites++;
            if (++tries > 40)
                fail_msg("round %d: never replicated: %s", round, errstr);
            assert_int_equal(lw_rcluster_batch_send(b, errstr, sizeof errstr), LW_RCLUSTER_OK);
            err = lw_rcluster_batch_recv(b, errstr, sizeof errstr);
            if (err)
                fail_msg("round %d rewrite: %s", round, errstr);
            check_exec_replies(b);
        }
    }
    lw_rcluster_stats_t st;
    lw_rcluster_stats(c, &st);
    fprintf(stderr,
            "failover: conn_lost %llu, backoffs %llu, moved %llu, refreshes %llu, rewrites %d\n",
            (unsigned long long)st.conn_lost, (unsigned long long)st.backoffs,
            (unsigned long long)st.moved, (unsigned long long)st.refreshes, rewrites);
    assert_true(st.conn_lost >= 1);
    assert_true(st.backoffs >= 1);
    /* The victim no longer serves borrower 0's slot. */
    const char *nh;
    int nport;
    assert_int_equal(lw_rcluster_master(c, master_of_key(c, key0), &nh, &nport), LW_RCLUSTER_OK);
    assert_int_not_equal(nport, vport);

    /* Every key holds the last round's value. */
    for (int i = 0; i < N; i++) {
        char key[160], val[64];
        snprintf(val, sizeof val, "r%d-%d", ROUNDS, i);
        snprintf(key, sizeof key, "lwt:b:{%s-%d}", run, i);
        get_expect(c, key, val);
        snprintf(key, sizeof key, "lwt:a:{%s-%d}", run, i);
        get_expect(c, key, val);
    }
    lw_rcluster_batch_destroy(b);
    lw_rcluster_destroy(c);
    lw_rcluster_batch_destroy(qb);
    lw_rcluster_destroy(quick);

    /* Leave the cluster whole for the next test: 3 masters, each with a replica. */
    for (int i = 0; i < 100; i++) {
        redisContext *r = raw(vh, vport);
        redisReply *rep = redisCommand(r, "ROLE");
        bool replica_ok = rep && rep->type == REDIS_REPLY_ARRAY && rep->elements >= 4 &&
                          strcmp(rep->element[0]->str, "slave") == 0 &&
                          strcmp(rep->element[3]->str, "connected") == 0;
        freeReplyObject(rep);
        redisFree(r);
        if (replica_ok)
            return;
        struct timespec ts = {0, 200 * 1000000L};
        nanosleep(&ts, NULL);
    }
    fail_msg("%s on port %d did not come back as a connected replica within 20 s", name, vport);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_routing_all_masters),
        cmocka_unit_test(test_single_instance),
        cmocka_unit_test_teardown(test_migration_ask_tryagain_moved, close_migration),
        cmocka_unit_test(test_failover_kill_master),
    };
    cluster_url(); /* fail at once, loudly, when there is no cluster */
    return cmocka_run_group_tests(tests, NULL, NULL);
}
