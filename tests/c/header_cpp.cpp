// The header must compile as C++ and declare everything extern "C".
#include "dialpool.h"

#include <cstdio>

int main() {
    dp_ctx *ctx = dp_ctx_new(-1);
    dp_ctx_cancel(ctx);
    dp_ctx_free(ctx);
    std::printf("%s %s\n", dp_version(), dp_code_name(DP_OK));
    return 0;
}
