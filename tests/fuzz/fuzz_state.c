/*
 * fuzz_state.c - libFuzzer target for a borrower's state string (borrower.c):
 * any bytes read from Redis must decode or be refused, never crash; what
 * decodes must encode back to the same bytes (the layout has one spelling).
 */
#include "exposure_int.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    lw_bstate_t s = {0}, s2 = {0};
    lw_sbuf_t out = {0}, out2 = {0};
    if (lw_bstate_decode(&s, data, size) == LW_OK) {
        if (!lw_bstate_encode(&s, &out) || lw_bstate_decode(&s2, out.p, out.len) != LW_OK ||
            !lw_bstate_encode(&s2, &out2) || out.len != out2.len || memcmp(out.p, out2.p, out.len))
            abort();
    }
    lw_bstate_free(&s);
    lw_bstate_free(&s2);
    lw_sbuf_free(&out);
    lw_sbuf_free(&out2);
    return 0;
}
