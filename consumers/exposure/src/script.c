/*
 * script.c - builds the apply script (rules compiled in) and the key names
 * of a borrower's state string and open-alert hash.
 *
 * The rule pack becomes Lua constants prepended to apply.lua, so evaluating
 * rules costs no ARGV parsing per event and the script's SHA names the exact
 * rule pack in force.
 */
#include "exposure_int.h"

#include "loanwire/conf.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void lw_script_opts_init(lw_script_opts_t *o)
{
    o->strict_fencing = true;
    o->alert_stream = true;
    o->stream_maxlen = 100000;
    o->chunk_max = 0;
}

void lw_state_key(const char *borrower_id, char *buf, size_t cap)
{
    snprintf(buf, cap, "b:{%s}", borrower_id);
}

void lw_alerts_key(const char *borrower_id, char *buf, size_t cap)
{
    snprintf(buf, cap, "a:{%s}", borrower_id);
}

void lw_epoch_key(const char *topic, int32_t partition, char *buf, size_t cap)
{
    snprintf(buf, cap, "lw:epoch:%s:%" PRId32, topic, partition);
}

char *lw_script_build(const lw_rules_t *rules, const lw_script_opts_t *opts)
{
    size_t cap = strlen(lw_apply_lua) + 512 + LW_RULES_MAX * 256;
    char *s = malloc(cap);
    if (!s)
        return NULL;
    size_t o = 0;
    o += snprintf(s + o, cap - o,
                  "local STRICT = %s\nlocal STREAM = %s\nlocal MAXLEN = %" PRId64
                  "\nlocal RULES = {\n",
                  opts->strict_fencing ? "true" : "false", opts->alert_stream ? "true" : "false",
                  opts->stream_maxlen);
    for (size_t i = 0; i < lw_rules_count(rules); i++) {
        const lw_rule_t *r = lw_rules_get(rules, i);
        /* ids are [a-z0-9_] (rules.c), so they need no quoting beyond '' */
        o += snprintf(s + o, cap - o,
                      "  {id='%s', kind=%d, version=%" PRId32 ", severity='%s', cap=%" PRId64
                      ", div=%" PRId64 ", n=%" PRId64 ", window=%" PRId64 "},\n",
                      r->id, (int)r->kind, r->version, lw_severity_name(r->severity), r->cap_fen,
                      r->income_divisor, r->min_count, r->window_ms);
    }
    o += snprintf(s + o, cap - o, "}\n");
    snprintf(s + o, cap - o, "%s", lw_apply_lua);
    return s;
}
