/*
 * tokens.c - the bearer tokens loanwire-query accepts (--tokens FILE).
 *
 * Only SHA-256 digests are kept, and a check hashes the presented token and
 * compares it with every known digest using CRYPTO_memcmp without stopping
 * at a match, so the time taken does not tell an attacker how close a guess
 * came or which token matched.
 *
 * Each token belongs to an institution (issue 20): a line is "TOKEN
 * INSTITUTION_ID", or the token alone for the bureau's own staff
 * (LW_INSTITUTION_BUREAU). Every look-up is recorded as an inquiry of the
 * institution whose token made it.
 */
#include "query_int.h"

#include <ctype.h>
#include <errno.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#define LW_TOKEN_MAX 512

/* RFC 6750 b64token: ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" , then "="*. */
static bool lw_token_char_ok(char c)
{
    return isalnum((unsigned char)c) || strchr("-._~+/=", c) != NULL;
}

/*
 * Characters a token of tok's kind needs for 128 bits if it is random: 39
 * when it is all decimal digits (log2 10 = 3.3 bits each), 32 when all hex
 * digits (4 bits), else 22 (base64url, 6 bits; 128 / 6 rounded up). Trailing
 * '=' padding carries nothing. A guess, not a measure of entropy: it refuses
 * the short ("secret", "t0k-123") and the hex or decimal strings an operator
 * cut too short, and takes any random base64url token of 22 characters.
 */
size_t lw_token_min_len(const char *tok, size_t len)
{
    bool dec = true, hexl = true, hexu = true;

    while (len > 0 && tok[len - 1] == '=')
        len--;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)tok[i];
        dec &= isdigit(c) != 0;
        hexl &= isdigit(c) || (c >= 'a' && c <= 'f');
        hexu &= isdigit(c) || (c >= 'A' && c <= 'F');
    }
    return dec ? 39 : hexl || hexu ? 32 : 22;
}

static lw_err_t lw_tokens_add(lw_tokens_t *tk, const char *tok, size_t len, const char *inst)
{
    void *nd = realloc(tk->digest, (tk->n + 1) * sizeof *tk->digest);
    if (!nd)
        return LW_ERR_NOMEM;
    tk->digest = nd;
    void *ni = realloc(tk->institution, (tk->n + 1) * sizeof *tk->institution);
    if (!ni)
        return LW_ERR_NOMEM;
    tk->institution = ni;
    SHA256((const unsigned char *)tok, len, tk->digest[tk->n]);
    snprintf(tk->institution[tk->n], sizeof tk->institution[tk->n], "%s", inst);
    tk->n++;
    return LW_OK;
}

/* An institution id: 1..LW_ID_MAX characters of [A-Za-z0-9._-]. */
static bool lw_institution_ok(const char *s, size_t n)
{
    if (n == 0 || n > LW_ID_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && !strchr("._-", s[i]))
            return false;
    return true;
}

lw_tokens_t *lw_tokens_load(const char *path, char *errstr, size_t errstr_size)
{
    FILE *fp;
    struct stat st;
    char line[LW_TOKEN_MAX + 2];
    lw_tokens_t *tk;
    int lineno = 0;

    fp = fopen(path, "r");
    if (!fp) {
        snprintf(errstr, errstr_size, "%s: cannot open token file: %s", path, strerror(errno));
        return NULL;
    }
    if (fstat(fileno(fp), &st) != 0) {
        snprintf(errstr, errstr_size, "%s: %s", path, strerror(errno));
        fclose(fp);
        return NULL;
    }
    /* Tokens are secrets: a file others may read or rewrite is refused. */
    if (st.st_mode & (S_IRWXG | S_IRWXO)) {
        snprintf(errstr, errstr_size,
                 "%s: token file is accessible by group or others (mode %03o); "
                 "run chmod 600 %s",
                 path, (unsigned)(st.st_mode & 0777), path);
        fclose(fp);
        return NULL;
    }
    if (!S_ISREG(st.st_mode)) {
        snprintf(errstr, errstr_size, "%s: token file is not a regular file", path);
        fclose(fp);
        return NULL;
    }
    tk = calloc(1, sizeof *tk);
    if (!tk) {
        snprintf(errstr, errstr_size, "out of memory");
        fclose(fp);
        return NULL;
    }
    for (;;) {
        size_t len = 0;
        bool nul = false;
        char *s = line, *e;
        int ch;

        /* getc, not fgets: fgets cannot show a NUL byte, and the part of a
         * line after one was silently dropped (found by fuzz_tokens). */
        while ((ch = getc(fp)) != EOF && ch != '\n') {
            nul |= ch == '\0';
            if (len < sizeof line - 1)
                line[len] = (char)ch;
            len++;
        }
        if (ch == EOF && len == 0)
            break;
        lineno++;
        if (len > LW_TOKEN_MAX) {
            snprintf(errstr, errstr_size, "%s:%d: token longer than %d characters", path, lineno,
                     LW_TOKEN_MAX);
            goto fail;
        }
        line[len] = '\0';
        if (nul) {
            snprintf(errstr, errstr_size, "%s:%d: NUL byte in line", path, lineno);
            goto fail;
        }
        while (isspace((unsigned char)*s))
            s++;
        e = s + strlen(s);
        while (e > s && isspace((unsigned char)e[-1]))
            *--e = '\0';
        if (!*s || *s == '#')
            continue;
        /* "TOKEN INSTITUTION_ID" or the token alone (the bureau's staff) */
        const char *inst = LW_INSTITUTION_BUREAU;
        {
            char *sp = s;
            while (sp < e && !isspace((unsigned char)*sp))
                sp++;
            if (sp < e) {
                char *in = sp;
                *sp = '\0';
                while (isspace((unsigned char)*++in))
                    ;
                size_t il = strlen(in);
                if (!lw_institution_ok(in, il)) {
                    snprintf(errstr, errstr_size,
                             "%s:%d: institution id after the token: expected 1-%d characters "
                             "of A-Z a-z 0-9 . _ - (the line is \"TOKEN INSTITUTION_ID\", or "
                             "the token alone for the bureau's staff)",
                             path, lineno, LW_ID_MAX);
                    goto fail;
                }
                inst = in;
                e = sp;
            }
        }
        for (const char *c = s; c < e; c++) {
            if (!lw_token_char_ok(*c)) {
                snprintf(errstr, errstr_size,
                         "%s:%d: token has a character outside A-Z a-z 0-9 - . _ ~ + / =", path,
                         lineno);
                goto fail;
            }
        }
        {
            size_t tlen = (size_t)(e - s), need = lw_token_min_len(s, tlen);
            while (tlen > 0 && s[tlen - 1] == '=') /* padding carries nothing */
                tlen--;
            /* A short token is guessed, whatever the server does about it. */
            if (tlen < need) {
                snprintf(errstr, errstr_size,
                         "%s:%d: token too weak: %zu characters of its kind carry less than 128 "
                         "bits; use at least %zu (e.g. 22 base64url or 32 hex characters: "
                         "openssl rand -base64 24 | tr '+/' '-_')",
                         path, lineno, tlen, need);
                goto fail;
            }
        }
        if (lw_tokens_add(tk, s, (size_t)(e - s), inst) != LW_OK) {
            snprintf(errstr, errstr_size, "out of memory");
            goto fail;
        }
    }
    if (ferror(fp)) {
        snprintf(errstr, errstr_size, "%s: read error", path);
        goto fail;
    }
    if (tk->n == 0) {
        snprintf(errstr, errstr_size, "%s: no token in file (one per line; # comments)", path);
        goto fail;
    }
    OPENSSL_cleanse(line, sizeof line);
    fclose(fp);
    return tk;
fail:
    OPENSSL_cleanse(line, sizeof line);
    fclose(fp);
    lw_tokens_destroy(tk);
    return NULL;
}

size_t lw_tokens_count(const lw_tokens_t *tk)
{
    return tk ? tk->n : 0;
}

bool lw_tokens_check(const lw_tokens_t *tk, const char *authorization)
{
    return lw_tokens_institution(tk, authorization) != NULL;
}

const char *lw_tokens_institution(const lw_tokens_t *tk, const char *authorization)
{
    unsigned char d[SHA256_DIGEST_LENGTH];
    const char *tok;
    size_t len;
    size_t which = 0;
    int match = 0;

    if (!tk || !authorization || strncasecmp(authorization, "Bearer ", 7) != 0)
        return NULL;
    tok = authorization + 7;
    while (*tok == ' ')
        tok++;
    len = strlen(tok);
    while (len > 0 && (tok[len - 1] == ' ' || tok[len - 1] == '\t'))
        len--;
    if (len == 0 || len > LW_TOKEN_MAX)
        return NULL;
    SHA256((const unsigned char *)tok, len, d);
    for (size_t i = 0; i < tk->n; i++) {
        /* no branch on the comparison: the index is selected by a mask (a
         * token listed twice: its last line's institution) */
        size_t eq = (size_t)(CRYPTO_memcmp(d, tk->digest[i], sizeof d) == 0);
        size_t mask = (size_t)0 - eq;
        which = (which & ~mask) | (i & mask);
        match |= (int)eq;
    }
    return match ? tk->institution[which] : NULL;
}

void lw_tokens_destroy(lw_tokens_t *tk)
{
    if (!tk)
        return;
    if (tk->digest)
        OPENSSL_cleanse(tk->digest, tk->n * sizeof *tk->digest);
    free(tk->digest);
    free(tk->institution);
    free(tk);
}
