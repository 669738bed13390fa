/*
 * id.c - pseudonymous borrower ids: normalise a national id, then
 * borrower_id = base64url-nopad(HMAC-SHA256(key, normalised)[0..16)).
 *
 * Which ids are accepted (after trimming, dropping spaces/tabs/hyphens and
 * upper-casing; only [A-Z0-9] may remain):
 *   - 18 characters: must be a PRC resident identity number, 17 digits and a
 *     check character (0-9 or X) that passes ISO 7064 MOD 11-2. An 18-character
 *     id that is not one is refused: a typo in the commonest id must not
 *     silently become a different person.
 *   - 15 digits: a legacy (first-generation) PRC id, which has no check digit;
 *     accepted as is (it is not converted to the 18-digit form).
 *   - any other 5..32 characters of [A-Z0-9]: other documents (passports,
 *     Hong Kong / Macau / Taiwan permits...), accepted as is.
 *   - anything else is refused with LW_ERR_BAD_ID.
 * Error texts never repeat the raw id: it is personal data and logs travel.
 *
 * The HMAC comes from OpenSSL's EVP_MAC; the keyed context is prepared once
 * per key and duplicated per id, which saves re-hashing the key every time.
 */
#include "loanwire/id.h"
#include "id_int.h"
#include "text_int.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define LW_NORM_MAX 32 /* longest accepted normalised id */
#define LW_NORM_MIN 5

struct lw_id_key_s {
    EVP_MAC *mac;
    EVP_MAC_CTX *tmpl; /* initialised with the key; duplicated per id */
};

void lw_id_key_destroy(lw_id_key_t *key)
{
    if (!key)
        return;
    /* EVP_MAC_CTX_free cleanses the key material it holds. */
    EVP_MAC_CTX_free(key->tmpl);
    EVP_MAC_free(key->mac);
    free(key);
}

lw_id_key_t *lw_id_key_new_raw(const unsigned char *key, size_t len, char *errstr,
                               size_t errstr_size)
{
    lw_id_key_t *k;
    OSSL_PARAM params[2];
    char digest[] = "SHA256";

    if (!key || len == 0) {
        snprintf(errstr, errstr_size, "empty id key");
        return NULL;
    }
    k = calloc(1, sizeof *k);
    if (!k) {
        snprintf(errstr, errstr_size, "out of memory");
        return NULL;
    }
    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0);
    params[1] = OSSL_PARAM_construct_end();
    k->mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    if (!k->mac || !(k->tmpl = EVP_MAC_CTX_new(k->mac)) ||
        !EVP_MAC_init(k->tmpl, key, len, params)) {
        snprintf(errstr, errstr_size, "libcrypto: cannot set up HMAC-SHA256");
        lw_id_key_destroy(k);
        return NULL;
    }
    return k;
}

lw_id_key_t *lw_id_key_new(const unsigned char *key, size_t len, char *errstr, size_t errstr_size)
{
    if (!key || len < LW_ID_KEY_MIN || len > LW_ID_KEY_MAX) {
        snprintf(errstr, errstr_size, "id key must be %d..%d bytes, got %zu", LW_ID_KEY_MIN,
                 LW_ID_KEY_MAX, key ? len : 0);
        return NULL;
    }
    return lw_id_key_new_raw(key, len, errstr, errstr_size);
}

lw_err_t lw_id_key_mac(const lw_id_key_t *key, const void *data, size_t len, unsigned char out[32])
{
    unsigned char mac[EVP_MAX_MD_SIZE];
    size_t maclen = 0;
    EVP_MAC_CTX *ctx;
    int ok;

    if (!key || (!data && len))
        return LW_ERR_INVALID_ARG;
    ctx = EVP_MAC_CTX_dup(key->tmpl);
    ok = ctx && EVP_MAC_update(ctx, data, len) && EVP_MAC_final(ctx, mac, &maclen, sizeof mac) &&
         maclen == 32;
    EVP_MAC_CTX_free(ctx);
    if (!ok)
        return LW_ERR_CRYPTO;
    memcpy(out, mac, 32);
    return LW_OK;
}

lw_id_key_t *lw_id_key_load(const char *path, char *errstr, size_t errstr_size)
{
    /* Room for the longest key in hex plus a newline and some slack, so an
     * overlong file is noticed rather than silently cut. */
    char text[LW_ID_KEY_MAX * 2 + 64];
    unsigned char raw[LW_ID_KEY_MAX];
    size_t got = 0, nhex = 0, i, end;
    struct stat st;
    lw_id_key_t *k = NULL;
    ssize_t n;
    int fd;

    if (!path) {
        snprintf(errstr, errstr_size, "no key file given");
        return NULL;
    }
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(errstr, errstr_size, "%s: %s", path, strerror(errno));
        return NULL;
    }
    /* fstat on the open file: the mode checked is the file read. */
    if (fstat(fd, &st) != 0) {
        snprintf(errstr, errstr_size, "%s: %s", path, strerror(errno));
        close(fd);
        return NULL;
    }
    if (!S_ISREG(st.st_mode)) {
        snprintf(errstr, errstr_size, "%s: not a regular file", path);
        close(fd);
        return NULL;
    }
    if (st.st_mode & 077) {
        snprintf(errstr, errstr_size,
                 "%s: key file is accessible by group or others (mode %04o); "
                 "chmod 600 it",
                 path, (unsigned)(st.st_mode & 07777));
        close(fd);
        return NULL;
    }
    while (got < sizeof text && (n = read(fd, text + got, sizeof text - got)) != 0) {
        if (n < 0) {
            if (errno == EINTR)
                continue;
            snprintf(errstr, errstr_size, "%s: %s", path, strerror(errno));
            goto out;
        }
        got += (size_t)n;
    }
    if (got == sizeof text) {
        snprintf(errstr, errstr_size, "%s: key file too long (at most %d hex digits)", path,
                 LW_ID_KEY_MAX * 2);
        goto out;
    }
    /* One line of hex digits; trailing white space (the newline) allowed. */
    end = got;
    while (end > 0 && isspace((unsigned char)text[end - 1]))
        end--;
    i = 0;
    while (i < end && (text[i] == ' ' || text[i] == '\t'))
        i++;
    for (; i < end; i++) {
        int v = lw_hex_digit((unsigned char)text[i]);
        if (v < 0) {
            snprintf(errstr, errstr_size,
                     "%s: key file must hold hex digits on one line (bad byte at offset %zu)", path,
                     i);
            goto out;
        }
        if (nhex / 2 >= sizeof raw) {
            snprintf(errstr, errstr_size, "%s: key too long (at most %d hex digits)", path,
                     LW_ID_KEY_MAX * 2);
            goto out;
        }
        if (nhex % 2 == 0)
            raw[nhex / 2] = (unsigned char)(v << 4);
        else
            raw[nhex / 2] |= (unsigned char)v;
        nhex++;
    }
    if (nhex % 2) {
        snprintf(errstr, errstr_size, "%s: odd number of hex digits (%zu)", path, nhex);
        goto out;
    }
    if (nhex < LW_ID_KEY_MIN * 2) {
        snprintf(errstr, errstr_size, "%s: key too short: %zu hex digits, need at least %d", path,
                 nhex, LW_ID_KEY_MIN * 2);
        goto out;
    }
    k = lw_id_key_new(raw, nhex / 2, errstr, errstr_size);
out:
    OPENSSL_cleanse(raw, sizeof raw);
    OPENSSL_cleanse(text, sizeof text);
    close(fd);
    return k;
}

/* ISO 7064 MOD 11-2 check character of the first 17 digits of a PRC id. */
static char lw_prc_check_char(const char *id17)
{
    static const int w[17] = {7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2};
    int sum = 0, c, i;

    for (i = 0; i < 17; i++)
        sum += (id17[i] - '0') * w[i];
    c = (12 - sum % 11) % 11;
    return c == 10 ? 'X' : (char)('0' + c);
}

/* Formats errstr (when given) and returns LW_ERR_BAD_ID. */
static lw_err_t lw_id_fail(char *errstr, size_t errstr_size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static lw_err_t lw_id_fail(char *errstr, size_t errstr_size, const char *fmt, ...)
{
    va_list ap;

    if (errstr && errstr_size) {
        va_start(ap, fmt);
        vsnprintf(errstr, errstr_size, fmt, ap);
        va_end(ap);
    }
    return LW_ERR_BAD_ID;
}

lw_err_t lw_id_normalise(const char *raw, char *out, size_t cap, char *errstr, size_t errstr_size)
{
    char buf[LW_NORM_MAX + 1];
    size_t n = 0, i;
    const unsigned char *s = (const unsigned char *)raw;
    char want;

    if (!raw || !out || cap == 0)
        return lw_id_fail(errstr, errstr_size, "no id given");
    for (; *s; s++) {
        int c = *s;
        /* Spaces and hyphens are formatting only; trimming falls out of this. */
        if (c == ' ' || c == '-' || c == '\t' || c == '\r' || c == '\n')
            continue;
        if (!isascii(c) || !isalnum(c))
            return lw_id_fail(errstr, errstr_size,
                              "id may hold only letters, digits, spaces and hyphens");
        if (n == LW_NORM_MAX)
            return lw_id_fail(errstr, errstr_size, "id longer than %d characters", LW_NORM_MAX);
        buf[n++] = (char)toupper(c);
    }
    buf[n] = '\0';
    if (n == 0)
        return lw_id_fail(errstr, errstr_size, "id is empty");
    if (n < LW_NORM_MIN)
        return lw_id_fail(errstr, errstr_size, "id too short: %zu characters, need at least %d", n,
                          LW_NORM_MIN);
    if (n == 18) {
        for (i = 0; i < 17; i++)
            if (!isdigit((unsigned char)buf[i]))
                return lw_id_fail(errstr, errstr_size,
                                  "18-character PRC resident id must start with 17 digits "
                                  "(character %zu is not a digit)",
                                  i + 1);
        if (!(isdigit((unsigned char)buf[17]) || buf[17] == 'X'))
            return lw_id_fail(errstr, errstr_size,
                              "18-character PRC resident id must end in a digit or X");
        want = lw_prc_check_char(buf);
        if (buf[17] != want)
            return lw_id_fail(errstr, errstr_size,
                              "PRC resident id fails its check digit (ISO 7064 MOD 11-2): "
                              "ends in '%c', expected '%c'",
                              buf[17], want);
    }
    /* A first-generation (15-digit) PRC id names the same person as its
     * 18-digit form, so both must hash alike: GB 11643-1999 turns one into
     * the other by inserting the century "19" after the 6-digit area code
     * (every 15-digit id was issued to people born in 1900-1999) and
     * appending the ISO 7064 MOD 11-2 check character. Other ids of 5..32
     * characters pass as they are. */
    if (n == 15) {
        for (i = 0; i < 15 && isdigit((unsigned char)buf[i]); i++)
            ;
        if (i == 15) {
            memmove(buf + 8, buf + 6, 9);
            buf[6] = '1';
            buf[7] = '9';
            buf[17] = lw_prc_check_char(buf);
            buf[18] = '\0';
            n = 18;
        }
    }
    if (n + 1 > cap) {
        if (errstr && errstr_size)
            snprintf(errstr, errstr_size, "output buffer too small for normalised id");
        return LW_ERR_INVALID_ARG;
    }
    memcpy(out, buf, n + 1);
    OPENSSL_cleanse(buf, sizeof buf);
    return LW_OK;
}

const char lw_b64url_alphabet[65] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* lw_b64url_alphabet's value of each byte, -1 for the others: a table,
 * because packing loan ids and checking borrower ids look up every byte. */
/* clang-format off */
const signed char lw_b64url_values[256] = {
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, /* 0x00 */
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, /* 0x10 */
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 62, -1, -1, /* 0x20 */
    52, 53, 54, 55, 56, 57, 58, 59, 60, 61, -1, -1, -1, -1, -1, -1, /* 0x30 */
    -1,  0,  1,  2,  3,  4,  5,  6,  7,  8,  9, 10, 11, 12, 13, 14, /* 0x40 */
    15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, -1, -1, -1, -1, 63, /* 0x50 */
    -1, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, /* 0x60 */
    41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, -1, -1, -1, -1, -1, /* 0x70 */
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, /* 0x80 */
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, /* 0x90 */
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, /* 0xa0 */
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, /* 0xb0 */
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, /* 0xc0 */
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, /* 0xd0 */
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, /* 0xe0 */
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, /* 0xf0 */
};
/* clang-format on */

/* base64url without padding of 16 bytes: 22 characters + NUL. */
void lw_id_b64url_16(const unsigned char in[16], char out[LW_BORROWER_ID_LEN + 1])
{
    size_t i, o = 0;

    for (i = 0; i + 3 <= 15; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = lw_b64url_alphabet[(v >> 18) & 63];
        out[o++] = lw_b64url_alphabet[(v >> 12) & 63];
        out[o++] = lw_b64url_alphabet[(v >> 6) & 63];
        out[o++] = lw_b64url_alphabet[v & 63];
    }
    /* Last byte: 8 bits -> two characters. */
    out[o++] = lw_b64url_alphabet[in[15] >> 2];
    out[o++] = lw_b64url_alphabet[(in[15] & 3) << 4];
    out[o] = '\0';
}

lw_err_t lw_id_pseudonymise(const lw_id_key_t *key, const char *raw,
                            char out[LW_BORROWER_ID_LEN + 1], char *errstr, size_t errstr_size)
{
    char norm[LW_NORM_MAX + 1];
    unsigned char mac[32];
    lw_err_t err;

    if (!key || !out) {
        if (errstr && errstr_size)
            snprintf(errstr, errstr_size, "no key or output given");
        return LW_ERR_INVALID_ARG;
    }
    err = lw_id_normalise(raw, norm, sizeof norm, errstr, errstr_size);
    if (err)
        return err;
    err = lw_id_key_mac(key, norm, strlen(norm), mac);
    OPENSSL_cleanse(norm, sizeof norm);
    if (err) {
        if (errstr && errstr_size)
            snprintf(errstr, errstr_size, "libcrypto: HMAC-SHA256 failed");
        return err;
    }
    /* HMAC-SHA-256-128: the first 16 bytes, as RFC 4868 truncates. */
    lw_id_b64url_16(mac, out);
    OPENSSL_cleanse(mac, sizeof mac);
    return LW_OK;
}

bool lw_borrower_id_is_valid(const char *s)
{
    size_t i;

    if (!s)
        return false;
    for (i = 0; i < LW_BORROWER_ID_LEN; i++)
        if (lw_b64url_value((unsigned char)s[i]) < 0)
            return false;
    return s[LW_BORROWER_ID_LEN] == '\0';
}
