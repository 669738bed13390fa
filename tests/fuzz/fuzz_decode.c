/*
 * fuzz_decode.c - libFuzzer target for the single-object decoder: any bytes
 * go through both the fast path and Avro C's path (as events and as alerts).
 * They must never crash, must agree on success and, when they succeed, on
 * every value; a decoded event must re-encode and decode to the same values.
 */
#include "codec_int.h"
#include "loanwire/json.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static lw_codec_t *codec;

static void free_codec(void)
{
    lw_codec_destroy(codec); /* so LeakSanitizer sees only real leaks */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char errstr[256], j1[4096], j2[4096];
    union {
        lw_event_t ev;
        lw_alert_t al;
    } a, b;

    if (!codec) {
        if (!(codec = lw_codec_new(errstr, sizeof(errstr))))
            abort();
        atexit(free_codec);
    }
    for (int k = 0; k < 2; k++) {
        lw_record_kind_t kind = k ? LW_RECORD_ALERT : LW_RECORD_LOAN_EVENT;
        lw_err_t e1 = lw_codec_decode(codec, kind, data, size, &a, errstr, sizeof(errstr));
        lw_err_t e2 = lw_codec_decode_generic(codec, kind, data, size, &b, errstr, sizeof(errstr));
        if ((e1 == LW_OK) != (e2 == LW_OK))
            abort();
        if (e1 != LW_OK)
            continue;
        int n1 =
            k ? lw_alert_to_json(&a.al, j1, sizeof(j1)) : lw_event_to_json(&a.ev, j1, sizeof(j1));
        int n2 =
            k ? lw_alert_to_json(&b.al, j2, sizeof(j2)) : lw_event_to_json(&b.ev, j2, sizeof(j2));
        if (n1 < 0 || n1 != n2 || memcmp(j1, j2, (size_t)n1))
            abort();
        unsigned char buf[LW_CODEC_MAX_ALERT];
        size_t len;
        if (lw_codec_encode(codec, kind, &a, buf, sizeof(buf), &len) != LW_OK)
            abort();
        if (lw_codec_decode(codec, kind, buf, len, &b, errstr, sizeof(errstr)) != LW_OK)
            abort();
        n2 = k ? lw_alert_to_json(&b.al, j2, sizeof(j2)) : lw_event_to_json(&b.ev, j2, sizeof(j2));
        if (n1 != n2 || memcmp(j1, j2, (size_t)n1))
            abort();
    }
    return 0;
}
