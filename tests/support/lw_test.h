/*
 * lw_test.h - what integration tests share: finding the real servers.
 *
 * The servers come from LOANWIRE_BOOTSTRAP and LOANWIRE_REDIS (./tests/run.sh
 * exports them after ./deploy/stack.sh up). A server that does not answer
 * fails the test at once with a message naming it and how to start it: an
 * integration test never skips.
 */
#ifndef LW_TEST_H
#define LW_TEST_H

#include <hiredis/hiredis.h>
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static inline const char *lw_test_bootstrap(void)
{
    const char *b = getenv("LOANWIRE_BOOTSTRAP");
    return b && *b ? b : "127.0.0.1:9092";
}

static inline const char *lw_test_redis_url(void)
{
    const char *r = getenv("LOANWIRE_REDIS");
    return r && *r ? r : "redis://127.0.0.1:6379";
}

static inline void lw_test_fail_server(const char *server, const char *where, const char *why)
{
    fprintf(stderr,
            "FAIL: %s is not reachable at %s (%s).\n"
            "      Start the stack with ./deploy/stack.sh up (or run ./tests/run.sh),\n"
            "      or point LOANWIRE_BOOTSTRAP / LOANWIRE_REDIS at running servers.\n",
            server, where, why);
    exit(1);
}

/* Connects to the test Redis (host:port from the URL, db 0) or fails loudly. */
static inline redisContext *lw_test_redis_connect(void)
{
    const char *url = lw_test_redis_url();
    char host[256] = "127.0.0.1";
    int port = 6379;
    if (sscanf(url, "redis://%255[^:/]:%d", host, &port) < 1)
        lw_test_fail_server("Redis", url, "unparsable LOANWIRE_REDIS");
    struct timeval tv = {5, 0};
    redisContext *c = redisConnectWithTimeout(host, port, tv);
    if (!c || c->err)
        lw_test_fail_server("Redis", url, c ? c->errstr : "no memory");
    redisReply *r = redisCommand(c, "PING");
    if (!r || r->type == REDIS_REPLY_ERROR)
        lw_test_fail_server("Redis", url, r ? r->str : c->errstr);
    freeReplyObject(r);
    return c;
}

/* Fails loudly unless the broker answers a metadata request within 10 s. */
static inline void lw_test_require_kafka(void)
{
    char errstr[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", lw_test_bootstrap(), errstr, sizeof errstr);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
    if (!rk)
        lw_test_fail_server("Kafka", lw_test_bootstrap(), errstr);
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t err = rd_kafka_metadata(rk, 0, NULL, &md, 10000);
    if (err)
        lw_test_fail_server("Kafka", lw_test_bootstrap(), rd_kafka_err2str(err));
    rd_kafka_metadata_destroy(md);
    rd_kafka_destroy(rk);
}

/* A name unique to this run, for topics, groups and keys. */
static inline void lw_test_unique(char *buf, size_t cap, const char *prefix)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    snprintf(buf, cap, "%s-%ld-%ld", prefix, (long)getpid(), (long)(ts.tv_nsec / 1000));
}

#endif /* LW_TEST_H */
