/*
 * test_conf.c - configuration parsers (common/src/conf.c): -X key=value,
 * properties files with "file:line: reason" errors, the Redis URL forms, and
 * the environment defaults.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "loanwire/conf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static char tmpdir[256];

static const char *write_file(const char *name, const char *text)
{
    static char path[512];
    FILE *fp;

    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    fp = fopen(path, "w");
    assert_non_null(fp);
    fputs(text, fp);
    fclose(fp);
    chmod(path, 0600); /* properties files may hold passwords: 0600 or refused */
    return path;
}

static void assert_conf(rd_kafka_conf_t *conf, const char *key, const char *want)
{
    char val[512];
    size_t sz = sizeof val;

    assert_int_equal(rd_kafka_conf_get(conf, key, val, &sz), RD_KAFKA_CONF_OK);
    assert_string_equal(val, want);
}

static void test_set_kv(void **state)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char err[512];

    (void)state;
    assert_int_equal(lw_conf_set_kv(conf, "linger.ms=17", err, sizeof err), LW_OK);
    assert_conf(conf, "linger.ms", "17");
    /* Spaces around key and value are trimmed; '=' in the value is kept. */
    assert_int_equal(lw_conf_set_kv(conf, " client.id = a=b ", err, sizeof err), LW_OK);
    assert_conf(conf, "client.id", "a=b");
    assert_int_equal(lw_conf_set_kv(conf, "linger.ms", err, sizeof err), LW_ERR_CONFIG);
    assert_non_null(strstr(err, "key=value"));
    assert_int_equal(lw_conf_set_kv(conf, "=5", err, sizeof err), LW_ERR_CONFIG);
    assert_int_equal(lw_conf_set_kv(conf, "no.such.property=1", err, sizeof err), LW_ERR_CONFIG);
    assert_non_null(strstr(err, "no.such.property"));
    assert_int_equal(lw_conf_set_kv(conf, "linger.ms=banana", err, sizeof err), LW_ERR_CONFIG);
    assert_int_equal(lw_conf_set_kv(NULL, "a=b", err, sizeof err), LW_ERR_INVALID_ARG);
    rd_kafka_conf_destroy(conf);
}

static void test_load_file(void **state)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char err[512], want[600];
    const char *p;

    (void)state;
    p = write_file("good.properties", "# a comment\n"
                                      "\n"
                                      "   \t\n"
                                      "bootstrap.servers=127.0.0.1:1\n"
                                      "  linger.ms = 3  \r\n"
                                      "  # indented comment\n"
                                      "client.id=x");
    assert_int_equal(lw_conf_load_file(conf, p, err, sizeof err), LW_OK);
    assert_conf(conf, "bootstrap.servers", "127.0.0.1:1");
    assert_conf(conf, "linger.ms", "3");
    assert_conf(conf, "client.id", "x");

    /* The error names the file and the line. */
    p = write_file("bad.properties", "# ok\nlinger.ms=1\n\nnot a property line\n");
    assert_int_equal(lw_conf_load_file(conf, p, err, sizeof err), LW_ERR_CONFIG);
    snprintf(want, sizeof want, "%s:4: ", p);
    assert_memory_equal(err, want, strlen(want));

    p = write_file("unknown.properties", "linger.ms=1\nfoo.bar=2\n");
    assert_int_equal(lw_conf_load_file(conf, p, err, sizeof err), LW_ERR_CONFIG);
    snprintf(want, sizeof want, "%s:2: ", p);
    assert_memory_equal(err, want, strlen(want));
    assert_non_null(strstr(err, "foo.bar"));

    snprintf(want, sizeof want, "%s/missing.properties", tmpdir);
    assert_int_equal(lw_conf_load_file(conf, want, err, sizeof err), LW_ERR_IO);
    assert_non_null(strstr(err, "missing.properties"));
    rd_kafka_conf_destroy(conf);
}

/* Issue 21 item 11: -F FILE may hold sasl.password; like the token and key
 * files it is refused when group or others have any access. */
static void test_load_file_mode(void **state)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char err[512];
    const char *p;

    (void)state;
    p = write_file("secret.properties", "sasl.password=hunter2\n");
    assert_int_equal(lw_conf_load_file(conf, p, err, sizeof err), LW_OK);
    assert_conf(conf, "sasl.password", "hunter2");
    static const mode_t bad[] = {0644, 0640, 0604, 0660, 0602};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        chmod(p, bad[i]);
        err[0] = '\0';
        if (lw_conf_load_file(conf, p, err, sizeof err) != LW_ERR_CONFIG)
            fail_msg("properties file of mode %03o accepted", (unsigned)bad[i]);
        assert_non_null(strstr(err, "chmod 600"));
        assert_non_null(strstr(err, "secret.properties"));
        assert_null(strstr(err, "hunter2"));
    }
    chmod(p, 0400);
    assert_int_equal(lw_conf_load_file(conf, p, err, sizeof err), LW_OK);
    rd_kafka_conf_destroy(conf);
}

static void test_redis_url(void **state)
{
    lw_redis_url_t u;
    char err[512];

    (void)state;
    assert_int_equal(lw_redis_url_parse("redis://127.0.0.1:6380", &u, err, sizeof err), LW_OK);
    assert_string_equal(u.host, "127.0.0.1");
    assert_int_equal(u.port, 6380);
    assert_int_equal(u.db, 0);
    assert_string_equal(u.password, "");
    assert_string_equal(u.path, "");

    assert_int_equal(lw_redis_url_parse("redis://localhost", &u, err, sizeof err), LW_OK);
    assert_string_equal(u.host, "localhost");
    assert_int_equal(u.port, 6379);

    assert_int_equal(lw_redis_url_parse("redis://:s3cr@t@127.0.0.1:7000/5", &u, err, sizeof err),
                     LW_OK);
    assert_string_equal(u.password, "s3cr@t");
    assert_string_equal(u.host, "127.0.0.1");
    assert_int_equal(u.port, 7000);
    assert_int_equal(u.db, 5);

    assert_int_equal(lw_redis_url_parse("redis://user:pw@h:1/", &u, err, sizeof err), LW_OK);
    assert_string_equal(u.password, "pw");
    assert_string_equal(u.user, "user");
    assert_int_equal(u.db, 0);

    assert_int_equal(lw_redis_url_parse("redis://[::1]:6390/2", &u, err, sizeof err), LW_OK);
    assert_string_equal(u.host, "::1");
    assert_int_equal(u.port, 6390);
    assert_int_equal(u.db, 2);

    assert_int_equal(lw_redis_url_parse("unix:///tmp/redis.sock", &u, err, sizeof err), LW_OK);
    assert_string_equal(u.path, "/tmp/redis.sock");
    assert_string_equal(u.host, "");
    assert_int_equal(lw_redis_url_parse("unix:///tmp/r.sock?db=3", &u, err, sizeof err), LW_OK);
    assert_string_equal(u.path, "/tmp/r.sock");
    assert_int_equal(u.db, 3);

    static const char *bad[] = {
        "http://127.0.0.1:6379",
        "redis://",
        "redis://:6379",
        "redis://h:0",
        "redis://h:65536",
        "redis://h:12x",
        "redis://h:1/x",
        "redis://h:1/-1",
        "redis://[::1",
        "unix://",
        "unix://relative",
        "unix:///s?db=x",
        "unix:///s?foo=1",
        "127.0.0.1:6379",
        "",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        err[0] = '\0';
        if (lw_redis_url_parse(bad[i], &u, err, sizeof err) == LW_OK)
            fail_msg("bad URL accepted: \"%s\"", bad[i]);
        assert_true(strlen(err) > 0);
    }
    assert_int_equal(lw_redis_url_parse(NULL, &u, err, sizeof err), LW_ERR_INVALID_ARG);
}

/* Issue 21 item 6: the ACL user is kept, user and password are
 * percent-decoded, and no error message or log form shows the password. */
static void test_redis_url_credentials(void **state)
{
    lw_redis_url_t u;
    char err[512], out[600];

    (void)state;
    assert_int_equal(lw_redis_url_parse("redis://lw%2Duser:p%40ss%3Aw%2Frd%25x@127.0.0.1:6380/3",
                                        &u, err, sizeof err),
                     LW_OK);
    assert_string_equal(u.user, "lw-user");
    assert_string_equal(u.password, "p@ss:w/rd%x");
    assert_string_equal(u.host, "127.0.0.1");
    assert_int_equal(u.port, 6380);
    assert_int_equal(u.db, 3);
    /* A raw '@' in the password still works (the last '@' ends the userinfo). */
    assert_int_equal(lw_redis_url_parse("redis://:a@b@h", &u, err, sizeof err), LW_OK);
    assert_string_equal(u.user, "");
    assert_string_equal(u.password, "a@b");
    /* "password@" without ':' is the default user's password, as before. */
    assert_int_equal(lw_redis_url_parse("redis://sekrit@h", &u, err, sizeof err), LW_OK);
    assert_string_equal(u.user, "");
    assert_string_equal(u.password, "sekrit");

    /* Refused, and the message does not hold the secret part. */
    static const char *bad[] = {
        "redis://u:SEKRIT%zz@h", "redis://u:SEKRIT%4@h",     "redis://u:SEKRIT%@h",
        "redis://u:SEKRIT%00@h", "redis://u%zz:SEKRIT@h",    "redis://u:@h",
        "redis://u:SEKRIT@h:0",  "redis://u:SEKRIT@h:99999", "redis://u:SEKRIT@h/x",
        "redis://:SEKRIT/x@h",   "http://u:SEKRIT@h",        "u:SEKRIT@h:6379",
        "redis://:SEKRIT@",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        err[0] = '\0';
        if (lw_redis_url_parse(bad[i], &u, err, sizeof err) == LW_OK)
            fail_msg("bad URL accepted: \"%s\"", bad[i]);
        if (strlen(err) == 0 || strstr(err, "SEKRIT"))
            fail_msg("URL #%zu: error shows the password: %s", i, err);
        assert_string_equal(u.password, ""); /* nothing half-decoded left behind */
    }
    {
        char longpw[400];
        memset(longpw, 'P', sizeof longpw);
        snprintf(longpw, sizeof longpw, "redis://:%0300d@h", 7);
        assert_int_equal(lw_redis_url_parse(longpw, &u, err, sizeof err), LW_ERR_CONFIG);
        assert_null(strstr(err, "0000000007"));
    }

    /* Redaction of a URL string, parsed or not. */
    assert_string_equal(lw_redis_url_redact("redis://u:SEKRIT@h:1/2", out, sizeof out),
                        "redis://u:***@h:1/2");
    assert_string_equal(lw_redis_url_redact("redis://:SEKRIT@h", out, sizeof out),
                        "redis://:***@h");
    assert_string_equal(lw_redis_url_redact("redis://SEKRIT@h", out, sizeof out), "redis://***@h");
    assert_string_equal(lw_redis_url_redact("redis://:SE/KR?IT@h", out, sizeof out),
                        "redis://:***@h");
    assert_string_equal(lw_redis_url_redact("redis://127.0.0.1:6379/0", out, sizeof out),
                        "redis://127.0.0.1:6379/0");
    assert_string_equal(lw_redis_url_redact("unix:///tmp/r@x.sock", out, sizeof out),
                        "unix:///tmp/r@x.sock");
    assert_string_equal(lw_redis_url_redact("u:SEKRIT@h", out, sizeof out), "u:***@h");
    assert_string_equal(lw_redis_url_redact(NULL, out, sizeof out), "(none)");
    /* fuzz_redis_url: the parser's password "@@@@" is before the first ':' */
    assert_string_equal(lw_redis_url_redact("redis://@@@@@is:/@@@b", out, sizeof out),
                        "redis://***@b");
    assert_int_equal(lw_redis_url_parse("redis://@@@@@is:/@@@b", &u, err, sizeof err),
                     LW_ERR_CONFIG);
    assert_null(strstr(err, "@@@@"));
    assert_string_equal(lw_redis_url_redact("redis://u:SEKRIT@h", out, 4), "red");

    /* The parsed form for log lines. */
    assert_int_equal(lw_redis_url_parse("redis://lw:SEKRIT@[::1]:7/2", &u, err, sizeof err), LW_OK);
    assert_string_equal(lw_redis_url_format(&u, out, sizeof out), "redis://lw:***@[::1]:7/2");
    assert_int_equal(lw_redis_url_parse("redis://h", &u, err, sizeof err), LW_OK);
    assert_string_equal(lw_redis_url_format(&u, out, sizeof out), "redis://h:6379/0");
    assert_int_equal(lw_redis_url_parse("unix:///s?db=4", &u, err, sizeof err), LW_OK);
    assert_string_equal(lw_redis_url_format(&u, out, sizeof out), "unix:///s?db=4");
}

static void test_defaults(void **state)
{
    (void)state;
    unsetenv("LOANWIRE_BOOTSTRAP");
    unsetenv("LOANWIRE_REDIS");
    assert_string_equal(lw_conf_default_bootstrap(), LW_DEFAULT_BOOTSTRAP);
    assert_string_equal(lw_conf_default_redis(), LW_DEFAULT_REDIS);
    setenv("LOANWIRE_BOOTSTRAP", "127.0.0.1:19092", 1);
    setenv("LOANWIRE_REDIS", "redis://127.0.0.1:16379/1", 1);
    assert_string_equal(lw_conf_default_bootstrap(), "127.0.0.1:19092");
    assert_string_equal(lw_conf_default_redis(), "redis://127.0.0.1:16379/1");
    setenv("LOANWIRE_BOOTSTRAP", "", 1);
    assert_string_equal(lw_conf_default_bootstrap(), LW_DEFAULT_BOOTSTRAP);
}

static int setup(void **state)
{
    const char *base = getenv("LW_TMP_DIR");
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "%s/test_conf.XXXXXX", base && *base ? base : "/tmp");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state)
{
    char cmd[300];
    (void)state;
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_set_kv),
        cmocka_unit_test(test_load_file),
        cmocka_unit_test(test_load_file_mode),
        cmocka_unit_test(test_redis_url),
        cmocka_unit_test(test_redis_url_credentials),
        cmocka_unit_test(test_defaults),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
