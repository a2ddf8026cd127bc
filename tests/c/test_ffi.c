/*
 * The C ABI against the throwaway PostgreSQL: every call through the
 * header, as a C user makes it. Prints "c-ffi: N passed, N failed".
 *
 *   DIALPOOL_TEST_PG_URL=postgres://... ./test_ffi
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "dialpool.h"

static int passed, failed;

#define CHECK(cond, ...)                                              \
    do {                                                              \
        if (cond) {                                                   \
            passed++;                                                 \
        } else {                                                      \
            failed++;                                                 \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                             \
            fprintf(stderr, "\n");                                    \
        }                                                             \
    } while (0)

static const char *msg(const dp_error *err) { return err ? dp_error_message(err) : "(no error)"; }

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static char url_buf[1024];

static const char *pg_url(const char *extra) {
    const char *base = getenv("DIALPOOL_TEST_PG_URL");
    snprintf(url_buf, sizeof url_buf, "%s%s%s", base, strchr(base, '?') ? "&" : "?", extra);
    return url_buf;
}

static void test_codes_and_version(void) {
    CHECK(strcmp(dp_code_name(DP_OK), "DP_OK") == 0, "%s", dp_code_name(DP_OK));
    CHECK(strcmp(dp_code_name(DP_QUERY_TIMEOUT), "DP_QUERY_TIMEOUT") == 0, "name");
    CHECK(strcmp(dp_code_name((dp_code)9999), "DP_UNKNOWN") == 0, "unknown code");
    CHECK(strlen(dp_version()) > 0, "version");
}

static void test_null_arguments(void) {
    dp_error *err = NULL;
    dp_pool *pool = NULL;
    CHECK(dp_pool_open(NULL, &pool, &err) == DP_INVALID_ARGUMENT, "NULL url");
    CHECK(err != NULL && dp_error_code(err) == DP_INVALID_ARGUMENT, "error set");
    dp_error_free(err);
    CHECK(dp_pool_open("postgres://h/db", NULL, NULL) == DP_INVALID_ARGUMENT, "NULL out-pointer");
    CHECK(dp_pool_acquire(NULL, NULL, NULL, NULL) == DP_INVALID_ARGUMENT, "NULL pool");
    CHECK(dp_pool_query(NULL, NULL, "SELECT 1", 0, NULL, NULL, NULL) == DP_INVALID_ARGUMENT, "NULL pool");
    CHECK(dp_conn_query(NULL, NULL, "SELECT 1", 0, NULL, NULL, NULL) == DP_INVALID_ARGUMENT, "NULL conn");
    CHECK(dp_result_value(NULL, 0, 0) == NULL, "NULL result");
    dp_pool_close(NULL);
    dp_conn_release(NULL);
    dp_result_free(NULL);
    dp_error_free(NULL);
    dp_ctx_free(NULL);
    dp_ctx_cancel(NULL);
}

static void test_bad_url(void) {
    dp_error *err = NULL;
    dp_pool *pool = NULL;
    dp_code code = dp_pool_open("postgres://u:hunter2@h/db?conect_timeout=3s", &pool, &err);
    CHECK(code == DP_INVALID_ARGUMENT, "%s", dp_code_name(code));
    CHECK(strstr(msg(err), "connect_timeout") != NULL, "%s", msg(err));
    CHECK(strstr(msg(err), "hunter2") == NULL, "password leaked: %s", msg(err));
    CHECK(dp_error_layer(err) == DP_LAYER_NONE, "layer");
    dp_error_free(err);
}

static void test_queries(void) {
    dp_error *err = NULL;
    dp_pool *pool = NULL;
    dp_code code = dp_pool_open(pg_url("sslmode=disable&max_open=2"), &pool, &err);
    CHECK(code == DP_OK, "open: %s", msg(err));
    if (code != DP_OK) { dp_error_free(err); return; }

    const char *params[] = {"20", NULL, "żółw"};
    dp_result *r = NULL;
    code = dp_pool_query(pool, NULL, "SELECT $1::int * 2 AS doubled, $2::text AS nothing, $3::text AS turtle", 3, params, &r, &err);
    CHECK(code == DP_OK, "query: %s", msg(err));
    if (code == DP_OK) {
        CHECK(dp_result_row_count(r) == 1, "rows");
        CHECK(dp_result_column_count(r) == 3, "cols");
        CHECK(strcmp(dp_result_column_name(r, 0), "doubled") == 0, "name");
        CHECK(dp_result_column_name(r, 3) == NULL, "name out of range");
        CHECK(strcmp(dp_result_value(r, 0, 0), "40") == 0, "%s", dp_result_value(r, 0, 0));
        CHECK(dp_result_value(r, 0, 1) == NULL, "SQL NULL is NULL");
        CHECK(strcmp(dp_result_value(r, 0, 2), "żółw") == 0, "utf-8");
        CHECK(dp_result_value_len(r, 0, 2) == strlen("żółw"), "len");
        CHECK(dp_result_value(r, 1, 0) == NULL, "row out of range");
        dp_result_free(r);
    } else {
        dp_error_free(err);
    }

    /* A connection of our own, a transaction, affected rows. */
    dp_conn *conn = NULL;
    code = dp_pool_acquire(pool, NULL, &conn, &err);
    CHECK(code == DP_OK, "acquire: %s", msg(err));
    if (code == DP_OK) {
        uint64_t affected = 0;
        CHECK(dp_conn_execute(conn, NULL, "CREATE TEMP TABLE c_t (v int)", 0, NULL, NULL, &err) == DP_OK, "%s", msg(err));
        CHECK(dp_conn_execute(conn, NULL, "INSERT INTO c_t SELECT generate_series(1, 7)", 0, NULL, &affected, &err) == DP_OK, "%s", msg(err));
        CHECK(affected == 7, "affected %llu", (unsigned long long)affected);
        code = dp_conn_query(conn, NULL, "SELECT * FROM no_such_table", 0, NULL, &r, &err);
        CHECK(code == DP_SERVER_ERROR, "%s", dp_code_name(code));
        CHECK(dp_error_sqlstate(err) && strcmp(dp_error_sqlstate(err), "42P01") == 0, "sqlstate");
        CHECK(dp_error_layer(err) == DP_LAYER_QUERY, "layer");
        CHECK(!dp_error_is_retryable(err), "not retryable");
        dp_error_free(err);
        err = NULL;
        dp_conn_release(conn);
    } else {
        dp_error_free(err);
    }

    dp_stats stats;
    CHECK(dp_pool_stats(pool, &stats, &err) == DP_OK, "stats");
    CHECK(stats.max_open == 2 && stats.open >= 1 && stats.in_use == 0, "open %u in_use %u", stats.open, stats.in_use);
    CHECK(stats.acquire_count >= 2, "acquires %llu", (unsigned long long)stats.acquire_count);
    dp_pool_close(pool);
}

static void test_deadline_cancels_on_the_server(void) {
    dp_error *err = NULL;
    dp_pool *pool = NULL;
    if (dp_pool_open(pg_url("sslmode=disable"), &pool, &err) != DP_OK) { CHECK(0, "open: %s", msg(err)); dp_error_free(err); return; }
    dp_ctx *ctx = dp_ctx_new(500);
    dp_result *r = NULL;
    double start = now_s();
    dp_code code = dp_pool_query(pool, ctx, "SELECT pg_sleep(5)", 0, NULL, &r, &err);
    double took = now_s() - start;
    dp_ctx_free(ctx);
    CHECK(code == DP_QUERY_TIMEOUT, "%s", dp_code_name(code));
    CHECK(dp_error_is_timeout(err), "timeout flag");
    CHECK(dp_error_limit(err) && strcmp(dp_error_limit(err), "deadline") == 0, "limit %s", dp_error_limit(err));
    CHECK(dp_error_sqlstate(err) && strcmp(dp_error_sqlstate(err), "57014") == 0, "cancelled on the server: %s", msg(err));
    /* elapsed counts the query; the ctx deadline also covered the acquire. */
    CHECK(dp_error_elapsed_us(err) >= 300000 && dp_error_elapsed_us(err) < 1500000, "elapsed %lld", (long long)dp_error_elapsed_us(err));
    CHECK(took < 3.0, "took %.2f", took);
    dp_error_free(err);
    dp_pool_close(pool);
}

struct canceller { dp_ctx *ctx; };

static void *cancel_later(void *arg) {
    struct canceller *c = arg;
    usleep(300 * 1000);
    dp_ctx_cancel(c->ctx);
    return NULL;
}

static void test_cancel_from_another_thread(void) {
    dp_error *err = NULL;
    dp_pool *pool = NULL;
    if (dp_pool_open(pg_url("sslmode=disable"), &pool, &err) != DP_OK) { CHECK(0, "open: %s", msg(err)); dp_error_free(err); return; }
    dp_ctx *ctx = dp_ctx_new(-1);
    struct canceller c = {ctx};
    pthread_t t;
    pthread_create(&t, NULL, cancel_later, &c);
    dp_result *r = NULL;
    double start = now_s();
    dp_code code = dp_pool_query(pool, ctx, "SELECT pg_sleep(10)", 0, NULL, &r, &err);
    double took = now_s() - start;
    pthread_join(t, NULL);
    CHECK(code == DP_CANCELLED, "%s: %s", dp_code_name(code), msg(err));
    CHECK(took < 3.0, "took %.2f", took);
    CHECK(!dp_error_is_timeout(err), "a cancel is not a timeout");
    dp_error_free(err);
    err = NULL;
    /* The context stays cancelled: later calls stop at once. */
    code = dp_pool_query(pool, ctx, "SELECT 1", 0, NULL, &r, &err);
    CHECK(code == DP_CANCELLED, "%s", dp_code_name(code));
    dp_error_free(err);
    dp_ctx_free(ctx);
    dp_pool_close(pool);
}

static void test_dial(void) {
    dp_error *err = NULL;
    int fd = -1;
    /* The shared server's port, as a plain TCP dial. */
    const char *base = getenv("DIALPOOL_TEST_PG_URL");
    const char *at = strrchr(base, '@');
    char hostport[128] = {0};
    if (at) sscanf(at + 1, "%127[^/]", hostport);
    char url[256];
    snprintf(url, sizeof url, "tcp://%s?tcp_user_timeout=5s", hostport);
    dp_code code = dp_dial(url, NULL, &fd, &err);
    CHECK(code == DP_OK && fd >= 0, "dial %s: %s", url, msg(err));
    if (fd >= 0) close(fd);
    dp_error_free(err);
    err = NULL;
    code = dp_dial("tcp://127.0.0.1:1", NULL, &fd, &err);
    CHECK(code == DP_CONNECTION_REFUSED, "%s", dp_code_name(code));
    CHECK(dp_error_layer(err) == DP_LAYER_DIAL, "layer");
    CHECK(dp_error_is_retryable(err), "retryable");
    dp_error_free(err);
}

int main(void) {
    if (getenv("DIALPOOL_TEST_PG_URL") == NULL) {
        fprintf(stderr, "DIALPOOL_TEST_PG_URL is not set (run under dialpool-testkit run)\n");
        return 2;
    }
    test_codes_and_version();
    test_null_arguments();
    test_bad_url();
    test_queries();
    test_deadline_cancels_on_the_server();
    test_cancel_from_another_thread();
    test_dial();
    printf("c-ffi: %d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
