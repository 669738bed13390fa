/*
 * fuzz_rules.c - libFuzzer target for the rules file parser of
 * loanwire-exposure (consumers/exposure/src/rules.c, read through its public
 * lw_rules_parse). A pack parses or is refused with "name:line: reason"; a
 * parsed pack has 1..LW_RULES_MAX rules with unique ids of [a-z0-9_], a
 * version >= 1, a known severity and kind, and windows within 90 days.
 */
#include "loanwire/exposure.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text, err[512];
    lw_rules_t *rules;

    text = malloc(size + 1);
    if (!text)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    err[0] = '\0';
    rules = lw_rules_parse(text, "fuzz", err, sizeof err);
    if (!rules) {
        if (strncmp(err, "fuzz", 4) != 0)
            abort(); /* every refusal names the file (and line) */
    } else {
        size_t n = lw_rules_count(rules);
        if (n > LW_RULES_MAX)
            abort();
        for (size_t i = 0; i < n; i++) {
            const lw_rule_t *r = lw_rules_get(rules, i);
            size_t len = strlen(r->id);
            if (len == 0 || len > LW_ID_MAX ||
                strspn(r->id, "abcdefghijklmnopqrstuvwxyz0123456789_") != len)
                abort();
            if (r->version < 1 || r->window_ms < 0 || r->window_ms > 90LL * 86400000)
                abort();
            if (lw_rules_find(rules, r->id) != r)
                abort(); /* ids are unique */
        }
        if (lw_rules_get(rules, n) != NULL)
            abort();
    }
    lw_rules_destroy(rules);
    free(text);
    return 0;
}
