/*
 * fuzz_json.c - libFuzzer target for the JSON reader: any text must parse or
 * fail with a reason, never crash; what parses must print and parse back to
 * the same JSON.
 */
#include "codec_int.h"
#include "loanwire/json.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    lw_event_t ev, ev2;
    lw_alert_t al, al2;
    lw_field_error_t fe;
    char raw[LW_ID_MAX + 1], j1[4096], j2[4096];
    int n1, n2;

    if (lw_event_from_json((const char *)data, size, &ev, raw, &fe) == LW_OK) {
        n1 = lw_event_to_json(&ev, j1, sizeof(j1));
        if (n1 < 0 || lw_event_from_json(j1, (size_t)n1, &ev2, raw, &fe) != LW_OK)
            abort();
        n2 = lw_event_to_json(&ev2, j2, sizeof(j2));
        if (n1 != n2 || memcmp(j1, j2, (size_t)n1))
            abort();
    } else if (!fe.reason[0]) {
        abort(); /* every failure says why */
    }
    if (lw_alert_from_json((const char *)data, size, &al, &fe) == LW_OK) {
        n1 = lw_alert_to_json(&al, j1, sizeof(j1));
        if (n1 < 0 || lw_alert_from_json(j1, (size_t)n1, &al2, &fe) != LW_OK)
            abort();
        n2 = lw_alert_to_json(&al2, j2, sizeof(j2));
        if (n1 != n2 || memcmp(j1, j2, (size_t)n1))
            abort();
    }
    return 0;
}
