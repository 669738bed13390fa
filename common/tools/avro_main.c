/* avro_main.c - loanwire-avro: encode/decode single-object Avro, print schema
 * fingerprints and canonical forms. The logic is in common/src/codec_cli.c. */
#include "loanwire/codec.h"

int main(int argc, char **argv)
{
    return lw_avro_tool_main(argc, argv);
}
