/* avro_main.c - loanwire-avro: encode/decode single-object Avro, print schema
 * fingerprints and canonical forms. The logic is in common/src/codec_cli.c. */
#include "loanwire/codec.h"
#include "loanwire/log.h"

#include <stdio.h>

int main(int argc, char **argv)
{
    if (lw_log_take_args(&argc, argv) != 0) {
        fprintf(stderr, "%s: --log-format takes text or json\n", argv[0]);
        return 2;
    }
    return lw_avro_tool_main(argc, argv);
}
