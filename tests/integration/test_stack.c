/*
 * test_stack.c - proves the local stack is real: a message produced with
 * librdkafka comes back from the broker, hiredis round-trips a value, and a
 * value written before a Redis restart is still there after it (AOF).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "lw_test.h"

static void test_kafka_produce_consume(void **state)
{
    char errstr[512], topic[128], group[128], payload[128];
    lw_test_require_kafka();
    lw_test_unique(topic, sizeof topic, "lw-test-stack");
    lw_test_unique(group, sizeof group, "lw-test-stack-g");
    lw_test_unique(payload, sizeof payload, "hello");

    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    assert_int_equal(
        rd_kafka_conf_set(conf, "bootstrap.servers", lw_test_bootstrap(), errstr, sizeof errstr),
        RD_KAFKA_CONF_OK);
    rd_kafka_conf_set(conf, "enable.idempotence", "true", errstr, sizeof errstr);
    rd_kafka_t *p = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
    assert_non_null(p);
    assert_int_equal(rd_kafka_producev(p, RD_KAFKA_V_TOPIC(topic),
                                       RD_KAFKA_V_VALUE(payload, strlen(payload)),
                                       RD_KAFKA_V_KEY("k", 1),
                                       RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END),
                     RD_KAFKA_RESP_ERR_NO_ERROR);
    assert_int_equal(rd_kafka_flush(p, 30000), RD_KAFKA_RESP_ERR_NO_ERROR);
    assert_int_equal(rd_kafka_outq_len(p), 0);
    rd_kafka_destroy(p);

    conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", lw_test_bootstrap(), errstr, sizeof errstr);
    rd_kafka_conf_set(conf, "group.id", group, errstr, sizeof errstr);
    rd_kafka_conf_set(conf, "auto.offset.reset", "earliest", errstr, sizeof errstr);
    rd_kafka_t *c = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof errstr);
    assert_non_null(c);
    rd_kafka_poll_set_consumer(c);
    rd_kafka_topic_partition_list_t *subs = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(subs, topic, RD_KAFKA_PARTITION_UA);
    assert_int_equal(rd_kafka_subscribe(c, subs), RD_KAFKA_RESP_ERR_NO_ERROR);
    rd_kafka_topic_partition_list_destroy(subs);

    int found = 0;
    for (int i = 0; i < 60 && !found; i++) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(c, 1000);
        if (!m)
            continue;
        if (!m->err && m->len == strlen(payload) && memcmp(m->payload, payload, m->len) == 0)
            found = 1;
        rd_kafka_message_destroy(m);
    }
    rd_kafka_consumer_close(c);
    rd_kafka_destroy(c);
    assert_true(found);
}

static void test_redis_round_trip(void **state)
{
    redisContext *c = lw_test_redis_connect();
    char key[128], val[128];
    lw_test_unique(key, sizeof key, "lw:test:stack");
    lw_test_unique(val, sizeof val, "v");
    redisReply *r = redisCommand(c, "SET %s %s EX 600", key, val);
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_STATUS);
    freeReplyObject(r);
    r = redisCommand(c, "GET %s", key);
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_STRING);
    assert_string_equal(r->str, val);
    freeReplyObject(r);
    redisFree(c);
}

static void redis_run_id(redisContext *c, char *out, size_t cap)
{
    redisReply *r = redisCommand(c, "INFO server");
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_STRING);
    const char *p = strstr(r->str, "run_id:");
    assert_non_null(p);
    snprintf(out, cap, "%.40s", p + 7);
    freeReplyObject(r);
}

/* Restarting Redis through the stack script keeps what was written (AOF). */
static void test_redis_survives_restart(void **state)
{
    redisContext *c = lw_test_redis_connect();
    char key[128], val[128], cmd[1024], run_before[64], run_after[64];
    redis_run_id(c, run_before, sizeof run_before);
    lw_test_unique(key, sizeof key, "lw:test:persist");
    lw_test_unique(val, sizeof val, "v");
    redisReply *r = redisCommand(c, "SET %s %s EX 600", key, val);
    assert_non_null(r);
    freeReplyObject(r);
    redisFree(c);

    const char *src = getenv("LW_SOURCE_DIR");
    assert_non_null(src);
    snprintf(cmd, sizeof cmd, "'%s/deploy/stack.sh' redis-restart >/dev/null", src);
    assert_int_equal(system(cmd), 0);

    c = lw_test_redis_connect();
    redis_run_id(c, run_after, sizeof run_after);
    assert_string_not_equal(run_before, run_after); /* it really restarted */
    r = redisCommand(c, "GET %s", key);
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_STRING);
    assert_string_equal(r->str, val);
    freeReplyObject(r);
    redisFree(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kafka_produce_consume),
        cmocka_unit_test(test_redis_round_trip),
        cmocka_unit_test(test_redis_survives_restart),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
