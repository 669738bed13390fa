/*
 * script.c - builds the write script (its options compiled in), and the
 * names of a partition's epoch key and of its writer.
 *
 * The options become Lua constants prepended to write.lua, so they cost no
 * ARGV parsing per call and the script's SHA names the exact variant.
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
    o->wait_replicas = 0;
    o->wait_timeout_ms = 1000;
}

void lw_writer_name(const char *topic, int32_t partition, char *buf, size_t cap)
{
    snprintf(buf, cap, "@%s:%" PRId32, topic, partition);
}

void lw_epoch_key(const char *topic, int32_t partition, char *buf, size_t cap)
{
    snprintf(buf, cap, "lw:epoch:%s:%" PRId32, topic, partition);
}

char *lw_script_build(const lw_script_opts_t *opts)
{
    size_t cap = strlen(lw_write_lua) + 256;
    char *s = malloc(cap);
    if (!s)
        return NULL;
    snprintf(s, cap, "local STREAM = %s\nlocal MAXLEN = %" PRId64 "\n%s",
             opts->alert_stream ? "true" : "false", opts->stream_maxlen, lw_write_lua);
    return s;
}
