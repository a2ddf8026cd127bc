/* The C floor of the Go figures: SELECT 1 through dp_pool_query from p
 * plain threads (no Go, no cgo), with context switches per operation, so
 * that the Go binding's own cost can be told from the core's blocking
 * facade. Build and run (under the test runner, which sets the URL):
 *   cc -O2 -Iinclude bench/go/cfloor/cfloor.c target/release/libdialpool.a \
 *      -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc -o /tmp/cfloor
 *   /tmp/cfloor "$DIALPOOL_TEST_PG_URL?sslmode=disable&max_open=16" 20000 1 4 16
 * Arguments: URL, operations per measurement, then the thread counts.
 * With DEADLINE_MS set, every call gets a dp_ctx with that deadline.
 * With POLL=1 each statement takes the Go binding's path when goroutines
 * keep it company: acquire (preferring the thread's last connection),
 * dp_conn_query_start, dp_op_poll with poll(2) on the socket while it
 * waits, dp_op_finish, then the values read through the getters and
 * release. */
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>

#include "dialpool.h"

static dp_pool *pool;
static atomic_long next;
static long total;
static long deadline_ms = -2; /* -2: NULL ctx */
static int poll_mode;

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static long context_switches(void) {
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return u.ru_nvcsw + u.ru_nivcsw;
}

static double cpu_seconds(void) {
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return u.ru_utime.tv_sec + u.ru_utime.tv_usec / 1e6 + u.ru_stime.tv_sec + u.ru_stime.tv_usec / 1e6;
}

static void fail(dp_error *e) {
    fprintf(stderr, "%s\n", e ? dp_error_message(e) : "failed");
    exit(1);
}

/* One statement as the Go binding runs it in poll mode. */
static void poll_statement(dp_ctx *ctx, uint64_t *last) {
    dp_conn *c = NULL;
    dp_op *op = NULL;
    dp_result *r = NULL;
    dp_error *e = NULL;
    if (dp_pool_acquire_prefer(pool, ctx, *last, &c, &e) != DP_OK) fail(e);
    *last = dp_conn_id(c);
    if (dp_conn_query_start(c, ctx, "SELECT 1", 0, NULL, &op, &e) != DP_OK) fail(e);
    dp_wait w;
    while (dp_op_poll(op, &w)) {
        struct pollfd p = {.fd = w.fd, .events = w.events};
        poll(&p, 1, w.timeout_us < 0 ? -1 : (int)(w.timeout_us / 1000 + 1));
    }
    if (dp_op_finish(op, &r, &e) != DP_OK) fail(e);
    size_t rows = dp_result_row_count(r), cols = dp_result_column_count(r), bytes = 0;
    for (size_t i = 0; i < rows; i++)
        for (size_t j = 0; j < cols; j++) bytes += dp_result_value_len(r, i, j);
    if (bytes == 0) fail(NULL);
    dp_result_free(r);
    dp_conn_release(c);
}

static void *worker(void *arg) {
    (void)arg;
    uint64_t last = 0;
    while (atomic_fetch_add(&next, 1) < total) {
        if (poll_mode) {
            dp_ctx *ctx = deadline_ms == -2 ? NULL : dp_ctx_new(deadline_ms);
            poll_statement(ctx, &last);
            dp_ctx_free(ctx);
            continue;
        }
        dp_ctx *ctx = deadline_ms == -2 ? NULL : dp_ctx_new(deadline_ms);
        dp_result *r = NULL;
        dp_error *e = NULL;
        if (dp_pool_query(pool, ctx, "SELECT 1", 0, NULL, &r, &e) != DP_OK) {
            fprintf(stderr, "%s\n", dp_error_message(e));
            exit(1);
        }
        dp_result_free(r);
        dp_ctx_free(ctx);
    }
    return NULL;
}

static void run(int threads, long n) {
    pthread_t t[256];
    next = 0;
    total = n;
    for (int i = 0; i < threads; i++) pthread_create(&t[i], NULL, worker, NULL);
    for (int i = 0; i < threads; i++) pthread_join(t[i], NULL);
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: cfloor URL OPS THREADS...\n");
        return 2;
    }
    if (getenv("DEADLINE_MS")) deadline_ms = atol(getenv("DEADLINE_MS"));
    poll_mode = getenv("POLL") && atoi(getenv("POLL")) == 1;
    dp_error *e = NULL;
    if (dp_pool_open(argv[1], &pool, &e) != DP_OK) {
        fprintf(stderr, "%s\n", dp_error_message(e));
        return 1;
    }
    long n = atol(argv[2]);
    for (int a = 3; a < argc; a++) {
        int p = atoi(argv[a]);
        if (p < 1 || p > 256) continue;
        run(p, 2000); /* warm: open the connections */
        long cs = context_switches();
        double cpu = cpu_seconds();
        double start = now();
        run(p, n);
        double took = now() - start;
        printf("C threads p=%d: %.1f us/op, %.1f cpu-us/op, %.2f context switches/op\n", p, took / n * 1e6,
               (cpu_seconds() - cpu) / n * 1e6, (double)(context_switches() - cs) / n);
    }
    dp_pool_close(pool);
    return 0;
}
