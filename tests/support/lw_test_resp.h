/*
 * lw_test_resp.h - recorded Redis replies for unit tests: a reply captured
 * from a real server (its RESP bytes as a C string literal) parsed by hiredis'
 * own reader into the redisReply the code under test receives.
 * Include after <cmocka.h>. The caller frees the reply (freeReplyObject).
 */
#ifndef LW_TEST_RESP_H
#define LW_TEST_RESP_H

#include <hiredis/hiredis.h>
#include <stddef.h>

/* Parses one complete RESP reply, or fails the test. */
static inline redisReply *lw_test_resp(const char *bytes, size_t len)
{
    redisReader *rd = redisReaderCreate();
    assert_non_null(rd);
    assert_int_equal(redisReaderFeed(rd, bytes, len), REDIS_OK);
    void *r = NULL;
    assert_int_equal(redisReaderGetReply(rd, &r), REDIS_OK);
    assert_non_null(r);
    redisReaderFree(rd);
    return r;
}
#define RESP(lit) lw_test_resp(lit, sizeof(lit) - 1)

#endif /* LW_TEST_RESP_H */
