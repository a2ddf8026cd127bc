/*
 * Opens a pool, runs a query under a deadline, and shows what dialpool
 * reports for a query that outlives it.
 *
 *   make -C examples/c run URL=postgres://user:pass@127.0.0.1:5432/db
 */
#include <stdio.h>
#include <stdlib.h>

#include "dialpool.h"

static void report(const char *what, dp_code code, dp_error *err) {
    const char *limit = dp_error_limit(err);
    printf("%s: %s\n", what, dp_code_name(code));
    printf("  layer   %s\n", dp_layer_name(dp_error_layer(err)));
    printf("  limit   %s\n", limit ? limit : "(none)");
    printf("  elapsed %.3f s\n", dp_error_elapsed_us(err) / 1e6);
    printf("  timeout %s\n", dp_error_is_timeout(err) ? "yes" : "no");
    printf("  message %s\n", dp_error_message(err));
}

int main(int argc, char **argv) {
    const char *url = argc > 1 ? argv[1] : getenv("DIALPOOL_URL");
    if (url == NULL) {
        fprintf(stderr, "usage: %s postgres://user:pass@host:port/db\n", argv[0]);
        return 2;
    }
    dp_pool *pool = NULL;
    dp_error *err = NULL;
    dp_code code = dp_pool_open(url, &pool, &err);
    if (code != DP_OK) {
        report("open", code, err);
        dp_error_free(err);
        return 1;
    }

    /* A quick query with a 2 s deadline over acquire and query together. */
    dp_ctx *ctx = dp_ctx_new(2000);
    dp_result *result = NULL;
    code = dp_pool_query(pool, ctx, "SELECT 'hello from ' || version()", 0, NULL, &result, &err);
    dp_ctx_free(ctx);
    if (code != DP_OK) {
        report("query", code, err);
        dp_error_free(err);
        dp_pool_close(pool);
        return 1;
    }
    printf("%s\n", dp_result_value(result, 0, 0));
    dp_result_free(result);

    /* A slow query under a 500 ms deadline: cancelled on the server. */
    ctx = dp_ctx_new(500);
    code = dp_pool_query(pool, ctx, "SELECT pg_sleep(5)", 0, NULL, &result, &err);
    dp_ctx_free(ctx);
    if (code == DP_OK) {
        fprintf(stderr, "the slow query was expected to time out\n");
        dp_result_free(result);
        dp_pool_close(pool);
        return 1;
    }
    report("slow query", code, err);
    dp_error_free(err);

    dp_pool_close(pool);
    return code == DP_QUERY_TIMEOUT ? 0 : 1;
}
