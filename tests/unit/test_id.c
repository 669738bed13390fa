/*
 * test_id.c - pseudonymous borrower ids (common/src/id.c): the HMAC against
 * RFC 4231's HMAC-SHA256 vectors truncated to 128 bits, PRC check digits,
 * normalisation, the base64url form, and key-file loading (permissions,
 * length, content).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "id_int.h"
#include "loanwire/id.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static void hex2bin(const char *hex, unsigned char *out, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        assert_int_equal(sscanf(hex + 2 * i, "%2x", &v), 1);
        out[i] = (unsigned char)v;
    }
}

/* RFC 4231 section 4, HMAC-SHA-256 outputs, first 128 bits (test case 5 is
 * the RFC's own truncation case). */
static void test_rfc4231_vectors(void **state)
{
    static const char tc7_data[] =
        "This is a test using a larger than block-size key and a larger than block-size data. "
        "The key needs to be hashed before being used by the HMAC algorithm.";
    struct {
        unsigned char key[131];
        size_t keylen;
        unsigned char data[160];
        size_t datalen;
        const char *want;
    } tc[7];
    unsigned char mac[32], want[16];
    char err[256];

    (void)state;
    memset(tc, 0, sizeof tc);
    memset(tc[0].key, 0x0b, tc[0].keylen = 20);
    memcpy(tc[0].data, "Hi There", tc[0].datalen = 8);
    tc[0].want = "b0344c61d8db38535ca8afceaf0bf12b";
    memcpy(tc[1].key, "Jefe", tc[1].keylen = 4);
    memcpy(tc[1].data, "what do ya want for nothing?", tc[1].datalen = 28);
    tc[1].want = "5bdcc146bf60754e6a042426089575c7";
    memset(tc[2].key, 0xaa, tc[2].keylen = 20);
    memset(tc[2].data, 0xdd, tc[2].datalen = 50);
    tc[2].want = "773ea91e36800e46854db8ebd09181a7";
    for (int i = 0; i < 25; i++)
        tc[3].key[i] = (unsigned char)(i + 1);
    tc[3].keylen = 25;
    memset(tc[3].data, 0xcd, tc[3].datalen = 50);
    tc[3].want = "82558a389a443c0ea4cc819899f2083a";
    memset(tc[4].key, 0x0c, tc[4].keylen = 20);
    memcpy(tc[4].data, "Test With Truncation", tc[4].datalen = 20);
    tc[4].want = "a3b6167473100ee06e0c796c2955552b";
    memset(tc[5].key, 0xaa, tc[5].keylen = 131);
    memcpy(tc[5].data, "Test Using Larger Than Block-Size Key - Hash Key First",
           tc[5].datalen = 54);
    tc[5].want = "60e431591ee0b67f0d8a26aacbf5b77f";
    memset(tc[6].key, 0xaa, tc[6].keylen = 131);
    memcpy(tc[6].data, tc7_data, tc[6].datalen = strlen(tc7_data));
    tc[6].want = "9b09ffa71b942fcb27635fbcd5b0e944";

    for (int i = 0; i < 7; i++) {
        lw_id_key_t *k = lw_id_key_new_raw(tc[i].key, tc[i].keylen, err, sizeof err);
        assert_non_null(k);
        assert_int_equal(lw_id_key_mac(k, tc[i].data, tc[i].datalen, mac), LW_OK);
        hex2bin(tc[i].want, want, 16);
        if (memcmp(mac, want, 16) != 0)
            fail_msg("RFC 4231 test case %d: HMAC-SHA256-128 mismatch", i + 1);
        lw_id_key_destroy(k);
    }
}

/* base64url of RFC 4231 case 5 (an independent encoder gives this text). */
static void test_b64url(void **state)
{
    unsigned char in[16];
    char out[LW_BORROWER_ID_LEN + 1];

    (void)state;
    hex2bin("a3b6167473100ee06e0c796c2955552b", in, 16);
    lw_id_b64url_16(in, out);
    assert_string_equal(out, "o7YWdHMQDuBuDHlsKVVVKw");
    memset(in, 0xff, sizeof in);
    lw_id_b64url_16(in, out);
    assert_string_equal(out, "_____________________w");
    assert_true(lw_borrower_id_is_valid(out));
    /* the value table is the inverse of the alphabet, -1 for every other byte */
    for (int c = 0; c < 256; c++) {
        const char *at = c ? memchr(lw_b64url_alphabet, c, 64) : NULL;
        assert_int_equal(lw_b64url_value((unsigned char)c), at ? at - lw_b64url_alphabet : -1);
    }
}

static lw_id_key_t *key_0_to_31(void)
{
    unsigned char raw[32];
    char err[256];
    lw_id_key_t *k;

    for (int i = 0; i < 32; i++)
        raw[i] = (unsigned char)i;
    k = lw_id_key_new(raw, sizeof raw, err, sizeof err);
    assert_non_null(k);
    return k;
}

/* Expected values computed with Python's hmac module, key bytes 00..1f. */
static void test_pseudonymise(void **state)
{
    lw_id_key_t *k = key_0_to_31();
    char out[LW_BORROWER_ID_LEN + 1], out2[LW_BORROWER_ID_LEN + 1], err[256];

    (void)state;
    assert_int_equal(lw_id_pseudonymise(k, "11010519491231002X", out, err, sizeof err), LW_OK);
    assert_string_equal(out, "pmdVRTsQbc6gz6JkIUrlnw");
    assert_int_equal(strlen(out), LW_BORROWER_ID_LEN);
    assert_true(lw_borrower_id_is_valid(out));
    /* Formatting does not change the person. */
    assert_int_equal(lw_id_pseudonymise(k, "  110105-1949 1231-002x\n", out2, err, sizeof err),
                     LW_OK);
    assert_string_equal(out, out2);
    /* 15 digits: hashed as its 18-digit form 110105191949123101 (GB 11643-1999). */
    assert_int_equal(lw_id_pseudonymise(k, "110105194912310", out, err, sizeof err), LW_OK);
    assert_string_equal(out, "kL7S9Bu9z3T5_Njhzrlwhg");
    assert_int_equal(lw_id_pseudonymise(k, "e1234-5678", out, err, sizeof err), LW_OK);
    assert_string_equal(out, "W_39KgXDBtO5nfOAuHrDLg");
    /* A bad id is refused, and the error does not echo it. */
    assert_int_equal(lw_id_pseudonymise(k, "110105194912310021", out, err, sizeof err),
                     LW_ERR_BAD_ID);
    assert_null(strstr(err, "110105194912310021"));
    assert_non_null(strstr(err, "check digit"));
    assert_int_equal(lw_id_pseudonymise(NULL, "A1234", out, err, sizeof err), LW_ERR_INVALID_ARG);
    lw_id_key_destroy(k);
    lw_id_key_destroy(NULL);
}

static void test_check_digit(void **state)
{
    static const char *valid[] = {"11010519491231002X", "440524188001010014", "110101199003074477",
                                  "11010119900307803x"};
    static const char *invalid[] = {"110105194912310021", "440524188001010015",
                                    "110101199003074470", "11010119900307803A",
                                    "1101011990030780X3"};
    char out[40], err[256];

    (void)state;
    for (size_t i = 0; i < sizeof valid / sizeof *valid; i++)
        if (lw_id_normalise(valid[i], out, sizeof out, err, sizeof err) != LW_OK)
            fail_msg("valid id #%zu refused: %s", i, err);
    for (size_t i = 0; i < sizeof invalid / sizeof *invalid; i++) {
        err[0] = '\0';
        if (lw_id_normalise(invalid[i], out, sizeof out, err, sizeof err) != LW_ERR_BAD_ID)
            fail_msg("invalid id #%zu accepted", i);
        assert_true(strlen(err) > 0);
    }
}

/* GB 11643-1999: a 15-digit id becomes its 18-digit form before hashing. The
 * expected forms were computed outside this code (Python, with the standard's
 * "10X98765432" table indexed by the weighted sum mod 11), and the first pair
 * is the standard's own example. */
static void test_legacy_15_digit(void **state)
{
    static const char *pairs[][2] = {
        {"110105491231002", "11010519491231002X"},      {"130503670401001", "130503196704010016"},
        {"440524800101001", "440524198001010013"},      {"320311770706001", "320311197707060018"},
        {"510105851203234", "510105198512032342"},      {"120104600101552", "120104196001015526"},
        {" 1101-0549 1231-002 ", "11010519491231002X"},
    };
    unsigned char keyb[32];
    char out[40], err[256], b15[LW_BORROWER_ID_LEN + 1], b18[LW_BORROWER_ID_LEN + 1];
    lw_id_key_t *k;

    (void)state;
    for (size_t i = 0; i < sizeof keyb; i++)
        keyb[i] = (unsigned char)i;
    k = lw_id_key_new(keyb, sizeof keyb, err, sizeof err);
    assert_non_null(k);
    for (size_t i = 0; i < sizeof pairs / sizeof *pairs; i++) {
        if (lw_id_normalise(pairs[i][0], out, sizeof out, err, sizeof err) != LW_OK)
            fail_msg("15-digit id #%zu refused: %s", i, err);
        if (strcmp(out, pairs[i][1]) != 0)
            fail_msg("15-digit id #%zu: normalised to %s, expected %s", i, out, pairs[i][1]);
        /* Its 18-digit form passes the check digit as it is. */
        assert_int_equal(lw_id_normalise(pairs[i][1], out, sizeof out, err, sizeof err), LW_OK);
        assert_string_equal(out, pairs[i][1]);
        /* One person, one pseudonym. */
        assert_int_equal(lw_id_pseudonymise(k, pairs[i][0], b15, err, sizeof err), LW_OK);
        assert_int_equal(lw_id_pseudonymise(k, pairs[i][1], b18, err, sizeof err), LW_OK);
        assert_string_equal(b15, b18);
    }
    lw_id_key_destroy(k);
}

static void test_normalise(void **state)
{
    char out[40], err[256];

    (void)state;
    assert_int_equal(lw_id_normalise(" 1101-0519 4912-3100 2x ", out, sizeof out, err, sizeof err),
                     LW_OK);
    assert_string_equal(out, "11010519491231002X");
    assert_int_equal(lw_id_normalise("g1234567-8", out, sizeof out, err, sizeof err), LW_OK);
    assert_string_equal(out, "G12345678");
    /* A 15-character id that is not all digits is no PRC id: as it is. */
    assert_int_equal(lw_id_normalise("A10105491231002", out, sizeof out, err, sizeof err), LW_OK);
    assert_string_equal(out, "A10105491231002");
    /* Refused: empty, too short, too long, bad characters, too small a buffer. */
    assert_int_equal(lw_id_normalise("   ", out, sizeof out, err, sizeof err), LW_ERR_BAD_ID);
    assert_non_null(strstr(err, "empty"));
    assert_int_equal(lw_id_normalise("A12", out, sizeof out, err, sizeof err), LW_ERR_BAD_ID);
    assert_non_null(strstr(err, "short"));
    assert_int_equal(
        lw_id_normalise("123456789012345678901234567890123", out, sizeof out, err, sizeof err),
        LW_ERR_BAD_ID);
    assert_int_equal(lw_id_normalise("A1234/567", out, sizeof out, err, sizeof err), LW_ERR_BAD_ID);
    assert_int_equal(lw_id_normalise("A1234\xe4\xb8\xad", out, sizeof out, err, sizeof err),
                     LW_ERR_BAD_ID);
    assert_int_equal(lw_id_normalise("ABCDEFGHIJKLMNOPQR", out, sizeof out, err, sizeof err),
                     LW_ERR_BAD_ID); /* 18 chars must be a PRC id */
    assert_int_equal(lw_id_normalise(NULL, out, sizeof out, err, sizeof err), LW_ERR_BAD_ID);
    assert_int_equal(lw_id_normalise("11010519491231002X", out, 10, err, sizeof err),
                     LW_ERR_INVALID_ARG);
}

static void test_borrower_id_form(void **state)
{
    (void)state;
    assert_true(lw_borrower_id_is_valid("AAAAAAAAAAAAAAAAAAAAAA"));
    assert_true(lw_borrower_id_is_valid("pmdVRTsQbc6gz6JkIUrl-_"));
    assert_false(lw_borrower_id_is_valid("AAAAAAAAAAAAAAAAAAAAA"));
    assert_false(lw_borrower_id_is_valid("AAAAAAAAAAAAAAAAAAAAAAA"));
    assert_false(lw_borrower_id_is_valid("AAAAAAAAAAAAAAAAAAAA+A"));
    assert_false(lw_borrower_id_is_valid("AAAAAAAAAAAAAAAAAAAA=="));
    assert_false(lw_borrower_id_is_valid(""));
    assert_false(lw_borrower_id_is_valid(NULL));
}

static char tmpdir[256];

static const char *write_key(const char *name, const char *text, mode_t mode)
{
    static char path[512];
    FILE *fp;

    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    fp = fopen(path, "w");
    assert_non_null(fp);
    fputs(text, fp);
    fclose(fp);
    assert_int_equal(chmod(path, mode), 0);
    return path;
}

static void test_key_file(void **state)
{
    static const char hex64[] = "000102030405060708090a0b0c0d0e0f101112131415161718191A1B1C1D1E1F";
    char err[256], out[LW_BORROWER_ID_LEN + 1];
    lw_id_key_t *k;
    const char *p;

    (void)state;
    /* Good key, with a newline, gives the same ids as the raw bytes. */
    p = write_key("good.key", "000102030405060708090a0b0c0d0e0f101112131415161718191A1B1C1D1E1F\n",
                  0600);
    k = lw_id_key_load(p, err, sizeof err);
    if (!k)
        fail_msg("good key refused: %s", err);
    assert_int_equal(lw_id_pseudonymise(k, "11010519491231002X", out, err, sizeof err), LW_OK);
    assert_string_equal(out, "pmdVRTsQbc6gz6JkIUrlnw");
    lw_id_key_destroy(k);

    /* Readable by group, then by others: refused, naming the reason. */
    p = write_key("group.key", hex64, 0640);
    assert_null(lw_id_key_load(p, err, sizeof err));
    assert_non_null(strstr(err, "group or others"));
    p = write_key("other.key", hex64, 0604);
    assert_null(lw_id_key_load(p, err, sizeof err));
    assert_non_null(strstr(err, "group or others"));
    /* Too short, odd length, not hex, two lines, missing file. */
    p = write_key("short.key", "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e\n",
                  0600);
    assert_null(lw_id_key_load(p, err, sizeof err));
    assert_non_null(strstr(err, "too short"));
    p = write_key("odd.key", "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f0\n",
                  0600);
    assert_null(lw_id_key_load(p, err, sizeof err));
    assert_non_null(strstr(err, "odd"));
    p = write_key("nothex.key",
                  "zz0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n", 0400);
    assert_null(lw_id_key_load(p, err, sizeof err));
    p = write_key("two.key", "000102030405060708090a0b0c0d0e0f\n101112131415161718191a1b1c1d1e1f\n",
                  0600);
    assert_null(lw_id_key_load(p, err, sizeof err));
    {
        char missing[600];
        snprintf(missing, sizeof missing, "%s/none.key", tmpdir);
        assert_null(lw_id_key_load(missing, err, sizeof err));
        assert_non_null(strstr(err, "none.key"));
    }
    assert_null(lw_id_key_load(NULL, err, sizeof err));
    /* Raw keys out of bounds. */
    assert_null(lw_id_key_new((const unsigned char *)hex64, 31, err, sizeof err));
    assert_null(lw_id_key_new((const unsigned char *)hex64, 129, err, sizeof err));
}

/* Runs a shell command, returns its exit status and its stdout in out. */
static int sh(const char *cmd, char *out, size_t cap)
{
    FILE *fp = popen(cmd, "r");
    size_t n;
    int st;

    assert_non_null(fp);
    n = fread(out, 1, cap - 1, fp);
    out[n] = '\0';
    st = pclose(fp);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* The loanwire-id program: stdin and arguments, line-aligned output, errors. */
static void test_cli(void **state)
{
    const char *bin = getenv("LW_BIN_DIR");
    char cmd[2048], out[1024];
    const char *key;

    (void)state;
    if (!bin || !*bin)
        fail_msg("LW_BIN_DIR is not set (ctest sets it to build/bin)");
    key = write_key("cli.key", "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n",
                    0600);
    snprintf(cmd, sizeof cmd,
             "printf '11010519491231002X\\n110105194912310021\\ne1234-5678\\n' | "
             "'%s/loanwire-id' --key-file '%s' 2>'%s/cli.err'",
             bin, key, tmpdir);
    assert_int_equal(sh(cmd, out, sizeof out), 1); /* one bad id */
    assert_string_equal(out, "pmdVRTsQbc6gz6JkIUrlnw\n\nW_39KgXDBtO5nfOAuHrDLg\n");
    snprintf(cmd, sizeof cmd, "cat '%s/cli.err'", tmpdir);
    sh(cmd, out, sizeof out);
    assert_non_null(strstr(out, "line 2: "));
    assert_non_null(strstr(out, "check digit"));

    snprintf(cmd, sizeof cmd, "'%s/loanwire-id' -k '%s' 110105194912310 2>/dev/null", bin, key);
    assert_int_equal(sh(cmd, out, sizeof out), 0);
    assert_string_equal(out, "kL7S9Bu9z3T5_Njhzrlwhg\n"); /* its 18-digit form */

    key = write_key("cli-loose.key",
                    "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n", 0644);
    snprintf(cmd, sizeof cmd, "'%s/loanwire-id' -k '%s' 110105194912310 2>&1", bin, key);
    assert_int_equal(sh(cmd, out, sizeof out), 2);
    assert_non_null(strstr(out, "group or others"));
    snprintf(cmd, sizeof cmd, "'%s/loanwire-id' --help", bin);
    assert_int_equal(sh(cmd, out, sizeof out), 0);
}

static int setup(void **state)
{
    const char *base = getenv("LW_TMP_DIR");
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "%s/test_id.XXXXXX", base && *base ? base : "/tmp");
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
        cmocka_unit_test(test_rfc4231_vectors),
        cmocka_unit_test(test_b64url),
        cmocka_unit_test(test_pseudonymise),
        cmocka_unit_test(test_check_digit),
        cmocka_unit_test(test_normalise),
        cmocka_unit_test(test_legacy_15_digit),
        cmocka_unit_test(test_borrower_id_form),
        cmocka_unit_test(test_key_file),
        cmocka_unit_test(test_cli),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
