/*
 * fuzz_tokens.c - libFuzzer target for loanwire-query's token file
 * (consumers/query/src/tokens.c). The input is written to a private file
 * (mode 0600) and loaded: a load that fails says why; a load that succeeds
 * accepts exactly its tokens ("Bearer <token>" checks true for every token
 * line, as this file reads them independently) and each is long enough for
 * 128 bits. The input is also presented as an Authorization header to a
 * fixed token set.
 */
#include "loanwire/query.h"

#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char path[64];
static lw_tokens_t *fixed;

static void setup(void)
{
    char fpath[64], err[512];
    FILE *fp;

    snprintf(path, sizeof path, "/tmp/lw-fuzz-tokens.%d", (int)getpid());
    snprintf(fpath, sizeof fpath, "/tmp/lw-fuzz-tokens-fixed.%d", (int)getpid());
    fp = fopen(fpath, "w");
    if (!fp)
        abort();
    fputs("# fixed\nAbCdEfGhIjKlMnOpQrStUv\n0123456789abcdef0123456789abcdef\n", fp);
    fclose(fp);
    chmod(fpath, 0600);
    fixed = lw_tokens_load(fpath, err, sizeof err);
    unlink(fpath);
    if (!fixed)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[512], *text, *line, *save = NULL;
    static struct {
        char auth[600], inst[520];
    } pairs[256];
    size_t npairs = 0;
    lw_tokens_t *tk;
    FILE *fp;

    if (!fixed)
        setup();
    /* As an Authorization header value (a C string: MHD stops at a NUL). */
    text = malloc(size + 1);
    if (!text)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    if (lw_tokens_check(fixed, text) && strncasecmp(text, "Bearer ", 7) != 0)
        abort();

    fp = fopen(path, "w");
    if (!fp)
        abort();
    fwrite(data, 1, size, fp);
    fclose(fp);
    chmod(path, 0600);
    err[0] = '\0';
    tk = lw_tokens_load(path, err, sizeof err);
    if (!tk) {
        if (!err[0])
            abort();
        free(text);
        return 0;
    }
    if (lw_tokens_count(tk) == 0 || memchr(data, '\0', size))
        abort(); /* a NUL is not a b64token character */
    for (line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char *s = line, *e, auth[600];
        size_t len, pad = 0;
        while (isspace((unsigned char)*s))
            s++;
        e = s + strlen(s);
        while (e > s && isspace((unsigned char)e[-1]))
            *--e = '\0';
        if (!*s || *s == '#')
            continue;
        /* "TOKEN INSTITUTION_ID" or the token alone (institution BUREAU) */
        const char *inst = "BUREAU";
        char *sp = s;
        while (*sp && !isspace((unsigned char)*sp))
            sp++;
        if (*sp) {
            *sp++ = '\0';
            while (isspace((unsigned char)*sp))
                sp++;
            inst = sp;
        }
        len = strlen(s);
        while (pad < len && s[len - 1 - pad] == '=')
            pad++;
        if (len - pad < lw_token_min_len(s, len) || len - pad < 22)
            abort(); /* under 128 bits, yet loaded */
        snprintf(auth, sizeof auth, "Bearer %s", s);
        if (!lw_tokens_check(tk, auth))
            abort();
        /* its owner: this line's institution, unless a later line lists the
         * same token (the last one wins): checked once all lines are read */
        if (npairs < 256) {
            snprintf(pairs[npairs].auth, sizeof pairs[npairs].auth, "%s", auth);
            snprintf(pairs[npairs].inst, sizeof pairs[npairs].inst, "%s", inst);
            npairs++;
        }
    }
    for (size_t i = 0; i < npairs; i++) {
        size_t last = i;
        for (size_t j = i + 1; j < npairs; j++)
            if (!strcmp(pairs[j].auth, pairs[i].auth))
                last = j;
        const char *got = lw_tokens_institution(tk, pairs[i].auth);
        if (!got || strcmp(got, pairs[last].inst))
            abort();
    }
    lw_tokens_destroy(tk);
    free(text);
    return 0;
}
