/*
 * script.c - builds the apply script (rules compiled in) and the key names,
 * and reads the msgpack values the script stores.
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
    snprintf(buf, cap, "lw:b:{%s}", borrower_id);
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

/* ---- msgpack (the subset cmsgpack writes for integers and strings) ------- */

static bool need(lw_mp_t *m, size_t n)
{
    return (size_t)(m->end - m->p) >= n;
}

static uint64_t be(const unsigned char *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v = (v << 8) | p[i];
    return v;
}

bool lw_mp_int(lw_mp_t *m, int64_t *out)
{
    if (!need(m, 1))
        return false;
    unsigned char c = *m->p++;
    if (c <= 0x7f) {
        *out = c;
        return true;
    }
    if (c >= 0xe0) {
        *out = (int8_t)c;
        return true;
    }
    int n;
    bool sign = false, dbl = false;
    switch (c) {
    case 0xcc:
        n = 1;
        break;
    case 0xcd:
        n = 2;
        break;
    case 0xce:
        n = 4;
        break;
    case 0xcf:
        n = 8;
        break;
    case 0xd0:
        n = 1;
        sign = true;
        break;
    case 0xd1:
        n = 2;
        sign = true;
        break;
    case 0xd2:
        n = 4;
        sign = true;
        break;
    case 0xd3:
        n = 8;
        sign = true;
        break;
    case 0xcb:
        n = 8;
        dbl = true;
        break;
    default:
        return false;
    }
    if (!need(m, (size_t)n))
        return false;
    uint64_t v = be(m->p, n);
    m->p += n;
    if (dbl) {
        double d;
        memcpy(&d, &v, sizeof d);
        if (!(d >= -9007199254740992.0 && d <= 9007199254740992.0) || d != (double)(int64_t)d)
            return false;
        *out = (int64_t)d;
    } else if (sign) {
        int shift = 64 - 8 * n;
        *out = (int64_t)(v << shift) >> shift;
    } else {
        if (v > INT64_MAX)
            return false;
        *out = (int64_t)v;
    }
    return true;
}

bool lw_mp_str(lw_mp_t *m, char *buf, size_t cap)
{
    if (!need(m, 1))
        return false;
    unsigned char c = *m->p++;
    size_t n;
    if ((c & 0xe0) == 0xa0) {
        n = c & 0x1f;
    } else if (c == 0xd9 && need(m, 1)) {
        n = be(m->p, 1);
        m->p += 1;
    } else if (c == 0xda && need(m, 2)) {
        n = be(m->p, 2);
        m->p += 2;
    } else {
        return false;
    }
    if (!need(m, n) || n + 1 > cap)
        return false;
    memcpy(buf, m->p, n);
    buf[n] = '\0';
    m->p += n;
    return true;
}
