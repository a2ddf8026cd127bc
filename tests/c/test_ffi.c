/*
 * The C ABI against the throwaway PostgreSQL: every call through the
 * header, as a C user makes it. Prints "c-ffi: N passed, N failed".
 *
 *   DIALPOOL_TEST_PG_URL=postgres://... ./test_ffi
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sys/socket.h>
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

/* The backend pid behind a held connection, or -1. */
static long backend_pid(dp_conn *conn) {
    dp_error *err = NULL;
    dp_result *r = NULL;
    if (dp_conn_query(conn, NULL, "SELECT pg_backend_pid()", 0, NULL, &r, &err) != DP_OK) {
        dp_error_free(err);
        return -1;
    }
    long pid = atol(dp_result_value(r, 0, 0));
    dp_result_free(r);
    return pid;
}

/* Runs SELECT pg_backend_pid() through the pool; whether it ran on the
 * server process `want` (any process when want is 0). */
static int dp_pool_query_prefer_check(dp_pool *pool, long want, dp_result **r) {
    dp_error *err = NULL;
    if (dp_pool_query(pool, NULL, "SELECT pg_backend_pid()", 0, NULL, r, &err) != DP_OK) {
        fprintf(stderr, "  pooled query: %s\n", dp_error_message(err));
        dp_error_free(err);
        return 0;
    }
    long got = atol(dp_result_value(*r, 0, 0));
    dp_result_free(*r);
    *r = NULL;
    if (want != 0 && got != want) fprintf(stderr, "  server process %ld, want %ld\n", got, want);
    return want == 0 || got == want;
}

/* dp_pool_acquire_prefer gives back the connection (and so the server
 * process) named by dp_conn_id while it is idle, even when another was
 * returned after it; otherwise some other one. */
static void test_preferred_acquire(void) {
    dp_error *err = NULL;
    dp_pool *pool = NULL;
    dp_code code = dp_pool_open(pg_url("sslmode=disable&max_open=2"), &pool, &err);
    CHECK(code == DP_OK, "open: %s", msg(err));
    if (code != DP_OK) { dp_error_free(err); return; }
    dp_conn *a = NULL, *b = NULL;
    CHECK(dp_pool_acquire(pool, NULL, &a, &err) == DP_OK, "a: %s", msg(err));
    CHECK(dp_pool_acquire(pool, NULL, &b, &err) == DP_OK, "b: %s", msg(err));
    if (a == NULL || b == NULL) { dp_conn_release(a); dp_conn_release(b); dp_pool_close(pool); return; }
    uint64_t ida = dp_conn_id(a), idb = dp_conn_id(b);
    CHECK(ida != 0 && idb != 0 && ida != idb, "ids %llu %llu", (unsigned long long)ida, (unsigned long long)idb);
    long pida = backend_pid(a), pidb = backend_pid(b);
    CHECK(pida > 0 && pidb > 0 && pida != pidb, "pids %ld %ld", pida, pidb);
    /* b goes back last, so a plain acquire would get it. */
    dp_conn_release(a);
    dp_conn_release(b);
    for (int round = 0; round < 3; round++) {
        dp_conn *c = NULL;
        CHECK(dp_pool_acquire_prefer(pool, NULL, ida, &c, &err) == DP_OK, "prefer a: %s", msg(err));
        if (c == NULL) break;
        CHECK(dp_conn_id(c) == ida, "round %d: id %llu", round, (unsigned long long)dp_conn_id(c));
        CHECK(backend_pid(c) == pida, "round %d: the same server process", round);
        /* While a is held, preferring it gives the other. */
        dp_conn *d = NULL;
        CHECK(dp_pool_acquire_prefer(pool, NULL, ida, &d, &err) == DP_OK, "prefer held a: %s", msg(err));
        CHECK(d != NULL && dp_conn_id(d) == idb, "the other one");
        dp_conn_release(d);
        dp_conn_release(c);
    }
    dp_conn *z = NULL;
    CHECK(dp_pool_acquire_prefer(pool, NULL, 0, &z, &err) == DP_OK, "prefer none: %s", msg(err));
    CHECK(z != NULL && dp_conn_id(z) == ida, "no preference: the last returned");
    dp_conn_release(z);

    /* dp_pool_query prefers the connection of this thread's last pooled
     * statement: a ran last, then b is returned after it, and the next
     * pooled statement still meets a's server process. */
    dp_result *r = NULL;
    CHECK(dp_pool_query_prefer_check(pool, pida, &r), "a pooled statement");
    dp_conn *x = NULL, *y = NULL;
    CHECK(dp_pool_acquire_prefer(pool, NULL, ida, &x, &err) == DP_OK, "x: %s", msg(err));
    CHECK(dp_pool_acquire(pool, NULL, &y, &err) == DP_OK, "y: %s", msg(err));
    dp_conn_release(x);
    dp_conn_release(y); /* b on top of the idle list */
    for (int round = 0; round < 3; round++)
        CHECK(dp_pool_query_prefer_check(pool, pida, &r), "round %d: the thread's last server process", round);
    dp_pool_close(pool);
}

static void test_null_arguments(void) {
    dp_error *err = NULL;
    dp_pool *pool = NULL;
    CHECK(dp_pool_open(NULL, &pool, &err) == DP_INVALID_ARGUMENT, "NULL url");
    CHECK(err != NULL && dp_error_code(err) == DP_INVALID_ARGUMENT, "error set");
    dp_error_free(err);
    CHECK(dp_pool_open("postgres://h/db", NULL, NULL) == DP_INVALID_ARGUMENT, "NULL out-pointer");
    CHECK(dp_pool_acquire(NULL, NULL, NULL, NULL) == DP_INVALID_ARGUMENT, "NULL pool");
    CHECK(dp_pool_acquire_prefer(NULL, NULL, 1, NULL, NULL) == DP_INVALID_ARGUMENT, "NULL pool");
    CHECK(dp_conn_id(NULL) == 0, "NULL conn has id 0");
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
    CHECK(dp_error_elapsed_us(err) >= 100000 && dp_error_elapsed_us(err) < 1500000, "elapsed %lld", (long long)dp_error_elapsed_us(err));
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


/* ---- fault fixtures in C: the same kinds the Rust harness makes ---- */

/* A loopback listener with backlog 0 whose queue is filled, so that further
 * SYNs are dropped: connects hang until their own timeout. */
struct black_hole { int listener; int fillers[8]; int nfill; int port; };

static int black_hole_open(struct black_hole *h) {
    struct sockaddr_in a = {0};
    socklen_t len = sizeof a;
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    h->nfill = 0;
    h->listener = socket(AF_INET, SOCK_STREAM, 0);
    if (h->listener < 0 || bind(h->listener, (struct sockaddr *)&a, sizeof a) != 0 || listen(h->listener, 0) != 0)
        return -1;
    getsockname(h->listener, (struct sockaddr *)&a, &len);
    h->port = ntohs(a.sin_port);
    for (int i = 0; i < 8; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        fcntl(fd, F_SETFL, O_NONBLOCK);
        connect(fd, (struct sockaddr *)&a, sizeof a);
        struct pollfd p = {fd, POLLOUT, 0};
        h->fillers[h->nfill++] = fd;
        if (poll(&p, 1, 200) == 0) return 0; /* this one hangs: the queue is full */
    }
    return -1;
}

static void black_hole_close(struct black_hole *h) {
    for (int i = 0; i < h->nfill; i++) close(h->fillers[i]);
    close(h->listener);
}

/* A server that answers PostgreSQL's SSLRequest with 'S' and then never
 * speaks: the TLS handshake hangs. */
struct stall { int listener; int port; pthread_t thread; };

static void *stall_serve(void *arg) {
    struct stall *s = arg;
    int c = accept(s->listener, NULL, NULL);
    if (c >= 0) {
        char buf[8];
        ssize_t got = 0;
        while (got < 8) {
            ssize_t n = read(c, buf + got, sizeof buf - got);
            if (n <= 0) break;
            got += n;
        }
        if (write(c, "S", 1) == 1) sleep(2); /* silent: never answers the ClientHello */
        close(c);
    }
    return NULL;
}

static int stall_open(struct stall *s) {
    struct sockaddr_in a = {0};
    socklen_t len = sizeof a;
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    s->listener = socket(AF_INET, SOCK_STREAM, 0);
    if (s->listener < 0 || bind(s->listener, (struct sockaddr *)&a, sizeof a) != 0 || listen(s->listener, 4) != 0)
        return -1;
    getsockname(s->listener, (struct sockaddr *)&a, &len);
    s->port = ntohs(a.sin_port);
    return pthread_create(&s->thread, NULL, stall_serve, s);
}

/* Expects `code` from dp_pool_query on a fresh pool for `url`, with the
 * given layer, limit (NULL: none) and timeout flag. */
static void expect_error(const char *url, dp_code want, dp_layer layer, const char *limit, int timeout, int retryable) {
    dp_error *err = NULL;
    dp_pool *pool = NULL;
    dp_code code = dp_pool_open(url, &pool, &err);
    if (code == DP_OK) {
        dp_result *r = NULL;
        code = dp_pool_query(pool, NULL, "SELECT 1", 0, NULL, &r, &err);
        if (code == DP_OK) dp_result_free(r);
    }
    CHECK(code == want, "%s: got %s, want %s: %s", url, dp_code_name(code), dp_code_name(want), msg(err));
    if (code == want) {
        CHECK(dp_error_layer(err) == layer, "%s: layer %s", dp_code_name(want), dp_layer_name(dp_error_layer(err)));
        const char *got = dp_error_limit(err);
        CHECK((limit == NULL && got == NULL) || (limit && got && strcmp(limit, got) == 0),
              "%s: limit %s, want %s", dp_code_name(want), got ? got : "(none)", limit ? limit : "(none)");
        CHECK(dp_error_is_timeout(err) == timeout, "%s: timeout flag", dp_code_name(want));
        if (retryable >= 0) CHECK(dp_error_is_retryable(err) == retryable, "%s: retryable flag", dp_code_name(want));
    }
    dp_error_free(err);
    dp_pool_close(pool);
}

static void test_error_codes_from_c(void) {
    char url[1200];
    const char *base = getenv("DIALPOOL_TEST_PG_URL");
    const char *at = strrchr(base, '@');
    int port = 0;
    if (at) sscanf(at + 1, "127.0.0.1:%d", &port);

    /* The pool's acquire turns dial errors into the error itself when the
     * failure is permanent, or ACQUIRE_TIMEOUT naming it; a short
     * acquire_timeout and a direct look at the dial layer cover both. */
    expect_error("postgres://u:p@127.0.0.1:1/db?sslmode=disable&acquire_timeout=300ms",
                 DP_ACQUIRE_TIMEOUT, DP_LAYER_POOL, "acquire_timeout", 1, 1);

    struct black_hole hole;
    if (black_hole_open(&hole) == 0) {
        snprintf(url, sizeof url, "tcp://127.0.0.1:%d?connect_timeout=300ms", hole.port);
        int fd = -1;
        dp_error *err = NULL;
        dp_code code = dp_dial(url, NULL, &fd, &err);
        CHECK(code == DP_CONNECT_TIMEOUT, "black hole: %s", dp_code_name(code));
        CHECK(dp_error_layer(err) == DP_LAYER_DIAL && dp_error_is_timeout(err) && dp_error_is_retryable(err), "flags");
        CHECK(dp_error_limit(err) && strcmp(dp_error_limit(err), "connect_timeout") == 0, "limit");
        dp_error_free(err);
        err = NULL;
        /* A ctx cancel interrupts the hanging dial at once. */
        dp_ctx *ctx = dp_ctx_new(-1);
        struct canceller c = {ctx};
        pthread_t t;
        pthread_create(&t, NULL, cancel_later, &c);
        snprintf(url, sizeof url, "tcp://127.0.0.1:%d?connect_timeout=10s", hole.port);
        double start = now_s();
        code = dp_dial(url, ctx, &fd, &err);
        pthread_join(t, NULL);
        CHECK(code == DP_CANCELLED && now_s() - start < 2.0, "cancelled dial: %s", dp_code_name(code));
        dp_error_free(err);
        dp_ctx_free(ctx);
        black_hole_close(&hole);
    } else {
        CHECK(0, "could not make a SYN black hole");
    }

    struct stall st;
    if (stall_open(&st) == 0) {
        snprintf(url, sizeof url, "postgres://u:p@127.0.0.1:%d/db?sslmode=require&tls_timeout=300ms&acquire_timeout=3s", st.port);
        /* TLS_TIMEOUT is not permanent: the pool reports it as the last
         * connect error of ACQUIRE_TIMEOUT; the dial-level code is seen by
         * the dial itself. */
        dp_error *err = NULL;
        dp_pool *pool = NULL;
        dp_result *r = NULL;
        dp_ctx *ctx = dp_ctx_new(1000);
        dp_pool_open(url, &pool, &err);
        dp_code code = dp_pool_query(pool, ctx, "SELECT 1", 0, NULL, &r, &err);
        CHECK(code == DP_ACQUIRE_TIMEOUT, "stalled TLS: %s", dp_code_name(code));
        CHECK(strstr(msg(err), "TLS handshake") != NULL && strstr(msg(err), "tls_timeout=300ms") != NULL, "%s", msg(err));
        CHECK(dp_error_limit(err) && strcmp(dp_error_limit(err), "deadline") == 0, "limit %s", dp_error_limit(err));
        dp_error_free(err);
        dp_ctx_free(ctx);
        dp_pool_close(pool);
        pthread_join(st.thread, NULL);
        close(st.listener);
    }

    snprintf(url, sizeof url, "postgres://dialpool:wrong-pw@127.0.0.1:%d/dialpool?sslmode=disable", port);
    expect_error(url, DP_AUTH_FAILED, DP_LAYER_LOGIN, NULL, 0, 0);
    snprintf(url, sizeof url, "postgres://dialpool:dp-secret-pw@127.0.0.1:%d/no_such_db?sslmode=disable", port);
    expect_error(url, DP_SERVER_ERROR, DP_LAYER_LOGIN, NULL, 0, 0);
    const char *ca = getenv("DIALPOOL_TEST_PG_CA");
    if (ca) {
        snprintf(url, sizeof url, "postgres://dialpool:dp-secret-pw@127.0.0.1:%d/dialpool?sslmode=verify-full&sslrootcert=%s", port, ca);
        expect_error(url, DP_TLS_ERROR, DP_LAYER_DIAL, NULL, 0, 0);
    }
    snprintf(url, sizeof url, "%s?sslmode=disable&query_timeout=300ms", base);
    dp_error *err = NULL;
    dp_pool *pool = NULL;
    dp_result *r = NULL;
    dp_pool_open(url, &pool, &err);
    dp_code code = dp_pool_query(pool, NULL, "SELECT pg_sleep(3)", 0, NULL, &r, &err);
    CHECK(code == DP_QUERY_TIMEOUT, "%s", dp_code_name(code));
    CHECK(dp_error_limit(err) && strcmp(dp_error_limit(err), "query_timeout") == 0, "limit");
    CHECK(dp_error_layer(err) == DP_LAYER_QUERY && dp_error_is_timeout(err) && !dp_error_is_retryable(err), "flags");
    dp_error_free(err);
    dp_pool_close(pool);
}

struct held { dp_pool *pool; dp_ctx *ctx; dp_code code; dp_layer layer; };

static void *acquire_in_thread(void *arg) {
    struct held *h = arg;
    dp_conn *conn = NULL;
    dp_error *err = NULL;
    h->code = dp_pool_acquire(h->pool, h->ctx, &conn, &err);
    h->layer = dp_error_layer(err);
    dp_error_free(err);
    dp_conn_release(conn);
    return NULL;
}

static void test_cancel_a_pending_acquire_and_exhaustion(void) {
    dp_error *err = NULL;
    dp_pool *pool = NULL;
    if (dp_pool_open(pg_url("sslmode=disable&max_open=1&acquire_timeout=5s"), &pool, &err) != DP_OK) {
        CHECK(0, "open: %s", msg(err));
        dp_error_free(err);
        return;
    }
    dp_conn *conn = NULL;
    CHECK(dp_pool_acquire(pool, NULL, &conn, &err) == DP_OK, "first acquire: %s", msg(err));
    struct held h = {pool, dp_ctx_new(-1), DP_OK, DP_LAYER_NONE};
    pthread_t t;
    pthread_create(&t, NULL, acquire_in_thread, &h);
    usleep(200 * 1000);
    double start = now_s();
    dp_ctx_cancel(h.ctx);
    pthread_join(t, NULL);
    CHECK(h.code == DP_CANCELLED && h.layer == DP_LAYER_POOL, "pending acquire: %s", dp_code_name(h.code));
    CHECK(now_s() - start < 1.0, "cancel took %.2f", now_s() - start);
    dp_ctx_free(h.ctx);

    dp_ctx *ctx = dp_ctx_new(300);
    dp_conn *second = NULL;
    dp_code code = dp_pool_acquire(pool, ctx, &second, &err);
    CHECK(code == DP_ACQUIRE_TIMEOUT, "%s", dp_code_name(code));
    CHECK(dp_error_limit(err) && strcmp(dp_error_limit(err), "deadline") == 0, "limit");
    CHECK(strstr(msg(err), "1/1 open, 1 in use, 0 idle") != NULL, "%s", msg(err));
    dp_error_free(err);
    dp_ctx_free(ctx);
    dp_conn_release(conn);
    dp_pool_close(pool);
}

struct worker { dp_pool *pool; int n; int ok; };

static void *query_loop(void *arg) {
    struct worker *w = arg;
    for (int i = 0; i < w->n; i++) {
        char v[32];
        snprintf(v, sizeof v, "%d", i);
        const char *params[] = {v};
        dp_result *r = NULL;
        dp_error *err = NULL;
        if (dp_pool_query(w->pool, NULL, "SELECT $1::int + 1", 1, params, &r, &err) == DP_OK &&
            atoi(dp_result_value(r, 0, 0)) == i + 1)
            w->ok++;
        dp_result_free(r);
        dp_error_free(err);
    }
    return NULL;
}

static void test_threads(void) {
    const char *n_env = getenv("DP_C_STRESS");
    int n = n_env ? atoi(n_env) : 1000;
    dp_error *err = NULL;
    dp_pool *pool = NULL;
    if (dp_pool_open(pg_url("sslmode=disable&max_open=4"), &pool, &err) != DP_OK) {
        CHECK(0, "open: %s", msg(err));
        dp_error_free(err);
        return;
    }
    pthread_t t[8];
    struct worker w[8];
    for (int i = 0; i < 8; i++) {
        w[i] = (struct worker){pool, n, 0};
        pthread_create(&t[i], NULL, query_loop, &w[i]);
    }
    int ok = 0;
    for (int i = 0; i < 8; i++) {
        pthread_join(t[i], NULL);
        ok += w[i].ok;
    }
    CHECK(ok == 8 * n, "%d of %d queries from 8 threads", ok, 8 * n);
    dp_stats s;
    dp_pool_stats(pool, &s, NULL);
    CHECK(s.open <= 4 && s.in_use == 0, "open %u in use %u", s.open, s.in_use);
    dp_pool_close(pool);
}

static void test_mariadb(void) {
    const char *base = getenv("DIALPOOL_TEST_MARIADB_URL");
    if (base == NULL) {
        CHECK(0, "DIALPOOL_TEST_MARIADB_URL is not set");
        return;
    }
    char url[1024];
    snprintf(url, sizeof url, "%s?sslmode=disable&query_timeout=500ms", base);
    dp_error *err = NULL;
    dp_pool *pool = NULL;
    if (dp_pool_open(url, &pool, &err) != DP_OK) {
        CHECK(0, "open: %s", msg(err));
        dp_error_free(err);
        return;
    }
    const char *params[] = {"41", NULL};
    dp_result *r = NULL;
    dp_code code = dp_pool_query(pool, NULL, "SELECT ? + 1 AS answer, ? AS nothing, 'żółw' AS turtle", 2, params, &r, &err);
    CHECK(code == DP_OK, "mariadb query: %s", msg(err));
    if (code == DP_OK) {
        CHECK(strcmp(dp_result_column_name(r, 0), "answer") == 0, "name");
        CHECK(strcmp(dp_result_value(r, 0, 0), "42") == 0, "%s", dp_result_value(r, 0, 0));
        CHECK(dp_result_value(r, 0, 1) == NULL, "NULL");
        CHECK(strcmp(dp_result_value(r, 0, 2), "żółw") == 0, "utf-8");
        dp_result_free(r);
    } else {
        dp_error_free(err);
        err = NULL;
    }
    code = dp_pool_query(pool, NULL, "SELECT SLEEP(3)", 0, NULL, &r, &err);
    CHECK(code == DP_QUERY_TIMEOUT, "mariadb slow query: %s", dp_code_name(code));
    CHECK(dp_error_sqlstate(err) && strcmp(dp_error_sqlstate(err), "70100") == 0, "killed: %s", msg(err));
    CHECK(dp_error_limit(err) && strcmp(dp_error_limit(err), "query_timeout") == 0, "limit");
    dp_error_free(err);
    err = NULL;
    code = dp_pool_query(pool, NULL, "SELECT * FROM no_such_table", 0, NULL, &r, &err);
    CHECK(code == DP_SERVER_ERROR && dp_error_sqlstate(err) && strcmp(dp_error_sqlstate(err), "42S02") == 0,
          "%s: %s", dp_code_name(code), msg(err));
    dp_error_free(err);
    dp_pool_close(pool);

    const char *at = strrchr(base, '@');
    int port = 0;
    if (at) sscanf(at + 1, "127.0.0.1:%d", &port);
    snprintf(url, sizeof url, "mysql://dialpool:wrong-pw@127.0.0.1:%d/dialpool?sslmode=disable", port);
    expect_error(url, DP_AUTH_FAILED, DP_LAYER_LOGIN, NULL, 0, 0);
}

static void test_newer_accessors(void) {
    dp_error *err = NULL;
    /* The runtime is running by now: the worker count can no longer change. */
    CHECK(dp_set_worker_threads(2, &err) == DP_INVALID_STATE, "late worker count");
    CHECK(err && dp_error_layer(err) == DP_LAYER_NONE, "layer");
    dp_error_free(err);
    err = NULL;
    CHECK(dp_set_worker_threads(0, NULL) == DP_INVALID_ARGUMENT || dp_set_worker_threads(0, NULL) == DP_INVALID_STATE,
          "zero workers refused");

    dp_pool *pool = NULL;
    if (dp_pool_open(pg_url("sslmode=disable"), &pool, &err) != DP_OK) {
        CHECK(0, "open: %s", msg(err));
        dp_error_free(err);
        return;
    }
    dp_result *r = NULL;
    if (dp_pool_query(pool, NULL, "SELECT 1::int4 AS i, 'x'::text AS t", 0, NULL, &r, &err) == DP_OK) {
        CHECK(dp_result_column_type(r, 0) == 23, "int4 oid %u", dp_result_column_type(r, 0));
        CHECK(dp_result_column_type(r, 1) == 25, "text oid %u", dp_result_column_type(r, 1));
        CHECK(dp_result_column_type(r, 2) == 0, "out of range");
        uint64_t id = 0;
        CHECK(dp_result_last_insert_id(r, &id) == 0, "no insert id from PostgreSQL");
        dp_result_free(r);
    } else {
        CHECK(0, "query: %s", msg(err));
        dp_error_free(err);
        err = NULL;
    }
    dp_pool_close(pool);

    /* ACQUIRE_TIMEOUT carries the pool's last connect error as its source. */
    if (dp_pool_open("postgres://u:p@127.0.0.1:1/db?sslmode=disable&acquire_timeout=300ms", &pool, &err) == DP_OK) {
        dp_code code = dp_pool_query(pool, NULL, "SELECT 1", 0, NULL, &r, &err);
        CHECK(code == DP_ACQUIRE_TIMEOUT, "%s", dp_code_name(code));
        const dp_error *src = dp_error_source(err);
        CHECK(src && dp_error_code(src) == DP_CONNECTION_REFUSED && dp_error_layer(src) == DP_LAYER_DIAL,
              "source: %s", src ? dp_code_name(dp_error_code(src)) : "(none)");
        CHECK(dp_error_source(NULL) == NULL, "NULL source");
        dp_error_free(err);
        err = NULL;
        dp_pool_close(pool);
    }

    const char *base = getenv("DIALPOOL_TEST_MARIADB_URL");
    if (base == NULL) return;
    char url[1024];
    snprintf(url, sizeof url, "%s?sslmode=disable", base);
    if (dp_pool_open(url, &pool, &err) != DP_OK) {
        CHECK(0, "open: %s", msg(err));
        dp_error_free(err);
        return;
    }
    dp_conn *conn = NULL;
    if (dp_pool_acquire(pool, NULL, &conn, &err) == DP_OK) {
        dp_conn_execute(conn, NULL, "CREATE TEMPORARY TABLE c_ids (id INT AUTO_INCREMENT PRIMARY KEY, v INT)", 0, NULL, NULL, &err);
        dp_error_free(err);
        err = NULL;
        dp_conn_execute(conn, NULL, "INSERT INTO c_ids (v) VALUES (1), (2)", 0, NULL, NULL, NULL);
        if (dp_conn_query(conn, NULL, "INSERT INTO c_ids (v) VALUES (3)", 0, NULL, &r, &err) == DP_OK) {
            uint64_t id = 0;
            CHECK(dp_result_last_insert_id(r, &id) == 1 && id == 3, "last insert id %llu", (unsigned long long)id);
            dp_result_free(r);
        } else {
            CHECK(0, "insert: %s", msg(err));
            dp_error_free(err);
            err = NULL;
        }
        dp_conn_release(conn);
    }
    dp_pool_close(pool);
}

/* What the event callback saw; it runs on dialpool's threads and ours. */
struct seen {
    pthread_mutex_t mu;
    int kinds[16];
    int timeout_code;
    int pool_closed;
    long long connect_tcp_us;
    int calls_after_close;
    int closed;
};

static void on_event(const dp_event *ev, void *user_data) {
    struct seen *s = user_data;
    pthread_mutex_lock(&s->mu);
    if (s->closed) s->calls_after_close++;
    if ((unsigned)ev->kind < 16) s->kinds[ev->kind]++;
    if (ev->kind == DP_EVENT_ACQUIRE_TIMEOUT && ev->error) s->timeout_code = dp_error_code(ev->error);
    if (ev->kind == DP_EVENT_CLOSE && ev->reason && strcmp(ev->reason, "pool_closed") == 0) s->pool_closed++;
    if (ev->kind == DP_EVENT_CONNECT && ev->error == NULL) s->connect_tcp_us = ev->tcp_us;
    pthread_mutex_unlock(&s->mu);
}

/* The value of the first sample line that starts with `name{` and whose
 * labels contain `label`; -1 when there is none. */
static double sample(const char *text, const char *name, const char *label) {
    size_t n = strlen(name);
    char labels[512];
    for (const char *line = text; *line;) {
        const char *end = strchr(line, '\n');
        size_t len = end ? (size_t)(end - line) : strlen(line);
        const char *close = len > n ? memchr(line, '}', len) : NULL;
        if (close && strncmp(line, name, n) == 0 && line[n] == '{' && (size_t)(close - line) < sizeof labels) {
            memcpy(labels, line, (size_t)(close - line) + 1);
            labels[close - line + 1] = 0;
            if (strstr(labels, label)) return strtod(close + 1, NULL);
        }
        if (!end) break;
        line = end + 1;
    }
    return -1;
}

static void test_metrics_and_events(void) {
    CHECK(strcmp(dp_event_kind_name(DP_EVENT_ACQUIRE_TIMEOUT), "acquire_timeout") == 0, "kind name");
    CHECK(strcmp(dp_event_kind_name(99), "unknown") == 0, "unknown kind");
    char *text = NULL;
    CHECK(dp_pool_metrics_text(NULL, &text, NULL) == DP_INVALID_ARGUMENT, "NULL pool");
    dp_string_free(NULL);

    struct seen seen;
    memset(&seen, 0, sizeof seen);
    pthread_mutex_init(&seen.mu, NULL);
    dp_error *err = NULL;
    dp_pool *pool = NULL;
    if (dp_pool_open_with_events(pg_url("sslmode=disable&max_open=1&acquire_timeout=200ms&pool_name=c-test"),
                                 on_event, &seen, &pool, &err) != DP_OK) {
        CHECK(0, "open: %s", msg(err));
        dp_error_free(err);
        return;
    }
    CHECK(dp_pool_metrics_text(pool, NULL, NULL) == DP_INVALID_ARGUMENT, "NULL out-pointer");

    /* The workload: 3 statements, 1 acquire timeout, 1 query timeout. */
    dp_result *r = NULL;
    for (int i = 0; i < 3; i++) {
        dp_code code = dp_pool_query(pool, NULL, "SELECT 1", 0, NULL, &r, &err);
        CHECK(code == DP_OK, "query: %s", msg(err));
        if (code == DP_OK) dp_result_free(r); else { dp_error_free(err); err = NULL; }
    }
    dp_conn *held = NULL;
    if (dp_pool_acquire(pool, NULL, &held, &err) == DP_OK) {
        dp_code code = dp_pool_query(pool, NULL, "SELECT 1", 0, NULL, &r, &err);
        CHECK(code == DP_ACQUIRE_TIMEOUT, "%s", dp_code_name(code));
        if (code == DP_OK) dp_result_free(r);
        dp_error_free(err);
        err = NULL;
        dp_conn_release(held);
    } else {
        CHECK(0, "acquire: %s", msg(err));
        dp_error_free(err);
        err = NULL;
    }
    dp_ctx *ctx = dp_ctx_new(300);
    dp_code code = dp_pool_query(pool, ctx, "SELECT pg_sleep(5)", 0, NULL, &r, &err);
    dp_ctx_free(ctx);
    CHECK(code == DP_QUERY_TIMEOUT, "%s", dp_code_name(code));
    if (code == DP_OK) dp_result_free(r);
    dp_error_free(err);
    err = NULL;

    code = dp_pool_metrics_text(pool, &text, &err);
    CHECK(code == DP_OK && text != NULL, "metrics: %s", msg(err));
    if (code == DP_OK) {
        const char *p = "db_client_connection_pool_name=\"c-test\"";
        CHECK(strstr(text, "# TYPE db_client_connection_count gauge\n") != NULL, "count family");
        CHECK(strstr(text, "# TYPE db_client_connection_wait_time_seconds histogram\n") != NULL, "wait family");
        CHECK(sample(text, "db_client_connection_count", "state=\"used\"") == 0, "used");
        CHECK(sample(text, "db_client_connection_max", p) == 1, "max");
        CHECK(sample(text, "db_client_connection_timeouts_total", p) == 1, "timeouts %g",
              sample(text, "db_client_connection_timeouts_total", p));
        /* 3 statements + the held connection + the slow statement. */
        CHECK(sample(text, "db_client_connection_wait_time_seconds_count", p) == 5, "acquires %g",
              sample(text, "db_client_connection_wait_time_seconds_count", p));
        CHECK(sample(text, "db_client_operation_duration_seconds_count", "db_system_name=\"postgresql\"}") == 3,
              "statements %g", sample(text, "db_client_operation_duration_seconds_count", "db_system_name=\"postgresql\"}"));
        CHECK(sample(text, "db_client_operation_duration_seconds_count", "error_type=\"DP_QUERY_TIMEOUT\"") == 1,
              "query timeouts");
        CHECK(sample(text, "dialpool_query_cancel_duration_seconds_count", p) == 1, "cancels");
        CHECK(sample(text, "db_client_connection_create_time_seconds_count", p) >= 1, "connects");
        CHECK(sample(text, "dialpool_dial_duration_seconds_count", "phase=\"tcp\"") >= 1, "tcp phase");
        dp_string_free(text);
    } else {
        dp_error_free(err);
        err = NULL;
    }
    dp_pool_close(pool);

    pthread_mutex_lock(&seen.mu);
    seen.closed = 1;
    CHECK(seen.kinds[DP_EVENT_CONNECT_START] >= 1 && seen.kinds[DP_EVENT_CONNECT] >= 1, "connect events");
    CHECK(seen.connect_tcp_us >= 0, "tcp phase %lld", seen.connect_tcp_us);
    CHECK(seen.kinds[DP_EVENT_ACQUIRE] == 5, "acquire events %d", seen.kinds[DP_EVENT_ACQUIRE]);
    CHECK(seen.kinds[DP_EVENT_RELEASE] == 5, "release events %d", seen.kinds[DP_EVENT_RELEASE]);
    CHECK(seen.kinds[DP_EVENT_ACQUIRE_TIMEOUT] == 1 && seen.timeout_code == DP_ACQUIRE_TIMEOUT, "timeout event");
    CHECK(seen.pool_closed >= 1, "the idle connection's close event");
    pthread_mutex_unlock(&seen.mu);
    /* Nothing may call back once dp_pool_close has returned. */
    usleep(50 * 1000);
    pthread_mutex_lock(&seen.mu);
    CHECK(seen.calls_after_close == 0, "%d calls after close", seen.calls_after_close);
    pthread_mutex_unlock(&seen.mu);
    pthread_mutex_destroy(&seen.mu);
}

/* What driving a dp_op with poll(2) saw. */
struct drive {
    int waits;         /* dp_op_poll calls that returned 1 */
    int zero_ids;      /* of those, waits with socket_id 0 (a cancel's socket) */
    int bad;           /* of those, waits with a negative fd or other events */
    dp_wait first;     /* the first wait */
    int finished;      /* dp_op_poll returned 0 */
};

/* Calls dp_op_poll and waits with poll(2) for what it asks, honouring
   timeout_us, until it finishes or `max` waits have happened. */
static struct drive drive_op(dp_op *op, int max) {
    struct drive d;
    memset(&d, 0, sizeof d);
    dp_wait w;
    while (d.waits < max) {
        memset(&w, 0xab, sizeof w);
        if (!dp_op_poll(op, &w)) {
            d.finished = 1;
            break;
        }
        if (d.waits == 0) d.first = w;
        d.waits++;
        if (w.socket_id == 0) d.zero_ids++;
        if (w.fd < 0 || (w.events != POLLIN && w.events != POLLOUT)) {
            fprintf(stderr, "bad wait: fd %d events %d\n", w.fd, w.events);
            d.bad++;
            break;
        }
        int ms = -1;
        if (w.timeout_us >= 0) {
            int64_t rounded = (w.timeout_us + 999) / 1000;
            ms = rounded > 600000 ? 600000 : (int)rounded;
        }
        struct pollfd p = {.fd = w.fd, .events = w.events, .revents = 0};
        if (poll(&p, 1, ms) < 0 && errno != EINTR) {
            fprintf(stderr, "poll: %s\n", strerror(errno));
            d.bad++;
            break;
        }
    }
    CHECK(d.bad == 0, "%d bad waits", d.bad);
    return d;
}

/* Ends op and checks that it gave one value, `want`. */
static void finish_expect(dp_op *op, const char *want) {
    dp_result *r = NULL;
    dp_error *err = NULL;
    dp_code code = dp_op_finish(op, &r, &err);
    CHECK(code == DP_OK, "finish: %s", msg(err));
    if (code == DP_OK) {
        const char *got = dp_result_value(r, 0, 0);
        CHECK(got && strcmp(got, want) == 0, "%s, want %s", got ? got : "NULL", want);
        dp_result_free(r);
    } else {
        dp_error_free(err);
    }
}

static void test_poll_mode(void) {
    CHECK(dp_conn_socket(NULL, NULL, NULL, NULL) == DP_INVALID_ARGUMENT, "NULL conn");
    dp_error *err = NULL;
    dp_pool *pool = NULL;
    if (dp_pool_open(pg_url("sslmode=disable"), &pool, &err) != DP_OK) { CHECK(0, "open: %s", msg(err)); dp_error_free(err); return; }
    dp_conn *conn = NULL;
    if (dp_pool_acquire(pool, NULL, &conn, &err) != DP_OK) {
        CHECK(0, "acquire: %s", msg(err));
        dp_error_free(err);
        dp_pool_close(pool);
        return;
    }
    dp_op *op = NULL;
    dp_result *r = NULL;
    dp_code code;

    /* a) Driven by the caller's own poll(2), on the connection's socket.
     * The core reads once right after the send, so a fast reply needs no
     * wait at all; these statements sleep on the server so that one is
     * waited for. */
    const char *params[] = {"41"};
    uint64_t first_id = 0;
    code = dp_conn_query_start(conn, NULL, "SELECT $1::int + 1 FROM pg_sleep(0.05)", 1, params, &op, &err);
    CHECK(code == DP_OK, "start: %s", msg(err));
    if (code == DP_OK) {
        struct drive d = drive_op(op, 1000);
        CHECK(d.finished, "not finished after %d waits", d.waits);
        CHECK(d.waits >= 1, "a reply 50 ms away was there before it was waited for");
        CHECK(d.zero_ids == 0, "%d waits with socket_id 0", d.zero_ids);
        CHECK(d.first.events == POLLIN || d.first.events == POLLOUT, "events %d", d.first.events);
        CHECK(d.first.timeout_us < 0, "no deadline, yet timeout_us %lld", (long long)d.first.timeout_us);
        first_id = d.first.socket_id;
        int fd = -1;
        uint64_t id = 0;
        CHECK(dp_conn_socket(conn, &fd, &id, &err) == DP_OK, "socket: %s", msg(err));
        CHECK(fd == d.first.fd && id == first_id, "dp_conn_socket says fd %d id %llu, the wait fd %d id %llu",
              fd, (unsigned long long)id, d.first.fd, (unsigned long long)first_id);
        finish_expect(op, "42");
    } else {
        dp_error_free(err);
        err = NULL;
    }
    /* The same connection, the same socket. */
    code = dp_conn_query_start(conn, NULL, "SELECT 2 FROM pg_sleep(0.05)", 0, NULL, &op, &err);
    CHECK(code == DP_OK, "start: %s", msg(err));
    if (code == DP_OK) {
        struct drive d = drive_op(op, 1000);
        CHECK(d.finished && d.waits >= 1, "finished %d waits %d", d.finished, d.waits);
        CHECK(d.first.socket_id == first_id && first_id != 0, "socket_id %llu then %llu",
              (unsigned long long)first_id, (unsigned long long)d.first.socket_id);
        finish_expect(op, "2");
    } else {
        dp_error_free(err);
        err = NULL;
    }

    /* b) dp_op_finish without a dp_op_poll runs the statement, blocking. */
    code = dp_conn_query_start(conn, NULL, "SELECT 7", 0, NULL, &op, &err);
    CHECK(code == DP_OK, "start: %s", msg(err));
    if (code == DP_OK) {
        finish_expect(op, "7");
    } else {
        dp_error_free(err);
        err = NULL;
    }

    /* c) The ctx deadline comes back as timeout_us; when it passes the
       statement is cancelled on the server and the session stays usable. */
    dp_ctx *ctx = dp_ctx_new(300);
    double start = now_s();
    code = dp_conn_query_start(conn, ctx, "SELECT pg_sleep(5)", 0, NULL, &op, &err);
    CHECK(code == DP_OK, "start: %s", msg(err));
    if (code == DP_OK) {
        struct drive d = drive_op(op, 1000);
        CHECK(d.finished, "not finished after %d waits", d.waits);
        CHECK(d.waits >= 1, "waits %d", d.waits);
        CHECK(d.first.timeout_us >= 0 && d.first.timeout_us <= 300000, "timeout_us %lld", (long long)d.first.timeout_us);
        code = dp_op_finish(op, &r, &err);
        double took = now_s() - start;
        CHECK(code == DP_QUERY_TIMEOUT, "%s: %s", dp_code_name(code), msg(err));
        CHECK(dp_error_sqlstate(err) && strcmp(dp_error_sqlstate(err), "57014") == 0, "cancelled on the server: %s", msg(err));
        CHECK(took >= 0.25 && took < 3.0, "took %.2f", took);
        if (code == DP_OK) dp_result_free(r);
        r = NULL;
        dp_error_free(err);
        err = NULL;
    } else {
        dp_error_free(err);
        err = NULL;
    }
    dp_ctx_free(ctx);
    code = dp_conn_query(conn, NULL, "SELECT 1", 0, NULL, &r, &err);
    CHECK(code == DP_OK, "the session after a timeout: %s", msg(err));
    if (code == DP_OK) dp_result_free(r); else dp_error_free(err);
    r = NULL;
    err = NULL;

    /* d) A cancel between two polls: the next dp_op_poll goes on with the
       server-side cancel, whose waits (its own connection, socket_id 0,
       then the reply on the session's socket) the caller drives too. */
    ctx = dp_ctx_new(-1);
    code = dp_conn_query_start(conn, ctx, "SELECT pg_sleep(10)", 0, NULL, &op, &err);
    CHECK(code == DP_OK, "start: %s", msg(err));
    if (code == DP_OK) {
        dp_wait w;
        CHECK(dp_op_poll(op, &w) == 1, "pg_sleep(10) cannot be done yet");
        /* At once, right after the send: PostgreSQL drops a cancel that
           reaches the backend while it still reads the statement, and the
           library then asks again. */
        start = now_s();
        dp_ctx_cancel(ctx);
        struct drive d = drive_op(op, 1000);
        CHECK(d.finished, "not finished after %d more waits", d.waits);
        double took = now_s() - start;
        code = dp_op_finish(op, &r, &err);
        CHECK(code == DP_CANCELLED, "%s: %s", dp_code_name(code), msg(err));
        CHECK(!dp_error_is_timeout(err), "a cancel is not a timeout");
        CHECK(dp_error_sqlstate(err) && strcmp(dp_error_sqlstate(err), "57014") == 0, "cancelled on the server: %s", msg(err));
        CHECK(took < 3.0, "took %.2f", took);
        if (code == DP_OK) dp_result_free(r);
        r = NULL;
        dp_error_free(err);
        err = NULL;
    } else {
        dp_error_free(err);
        err = NULL;
    }
    dp_ctx_free(ctx);
    code = dp_conn_query(conn, NULL, "SELECT 1", 0, NULL, &r, &err);
    CHECK(code == DP_OK, "the session after a cancel: %s", msg(err));
    if (code == DP_OK) dp_result_free(r); else dp_error_free(err);
    r = NULL;
    err = NULL;

    /* e) NULL arguments. */
    op = NULL;
    CHECK(dp_conn_query_start(NULL, NULL, "SELECT 1", 0, NULL, &op, &err) == DP_INVALID_ARGUMENT, "NULL conn");
    CHECK(err && dp_error_code(err) == DP_INVALID_ARGUMENT, "error set");
    CHECK(op == NULL, "no op for a NULL conn");
    dp_error_free(err);
    err = NULL;
    CHECK(dp_conn_query_start(conn, NULL, "SELECT 1", 0, NULL, NULL, &err) == DP_INVALID_ARGUMENT, "NULL op out-pointer");
    CHECK(err && dp_error_code(err) == DP_INVALID_ARGUMENT, "error set");
    dp_error_free(err);
    err = NULL;
    CHECK(dp_conn_query_start(conn, NULL, NULL, 0, NULL, &op, &err) == DP_INVALID_ARGUMENT, "NULL sql");
    CHECK(op == NULL, "no op for NULL sql");
    dp_error_free(err);
    err = NULL;
    CHECK(dp_op_poll(NULL, NULL) == 0, "NULL op polls as finished");
    CHECK(dp_op_finish(NULL, NULL, &err) == DP_INVALID_ARGUMENT, "NULL op");
    CHECK(err && dp_error_code(err) == DP_INVALID_ARGUMENT, "error set");
    dp_error_free(err);
    err = NULL;
    /* The connection took none of that as a statement. */
    code = dp_conn_query(conn, NULL, "SELECT 1", 0, NULL, &r, &err);
    CHECK(code == DP_OK, "after the NULL calls: %s", msg(err));
    if (code == DP_OK) dp_result_free(r); else dp_error_free(err);

    dp_conn_release(conn);
    dp_pool_close(pool);
}

/* A dial driven by the caller's own poll(2): dp_dial_start, dp_op_poll,
 * dp_dial_finish; a black hole's connect_timeout and a refusal come back as
 * dp_dial gives them, and each op ends only with its own finish call. */
static void test_dial_poll_mode(void) {
    const char *base = getenv("DIALPOOL_TEST_PG_URL");
    const char *at = strrchr(base, '@');
    char hostport[128] = {0};
    if (at) sscanf(at + 1, "%127[^/]", hostport);
    char url[256];
    snprintf(url, sizeof url, "tcp://%s?connect_timeout=5s", hostport);
    dp_error *err = NULL;
    dp_op *op = NULL;
    int fd = -1;

    dp_code code = dp_dial_start(url, NULL, &op, &err);
    CHECK(code == DP_OK, "dial start: %s", msg(err));
    if (code == DP_OK) {
        struct drive d = drive_op(op, 1000);
        CHECK(d.finished, "dial not finished after %d waits", d.waits);
        CHECK(d.waits == 0 || (d.first.events == POLLOUT && d.first.socket_id == 0),
              "a dial waits for its connecting socket to be writable: events %d socket_id %llu",
              d.first.events, (unsigned long long)d.first.socket_id);
        code = dp_dial_finish(op, &fd, &err);
        CHECK(code == DP_OK && fd >= 0, "dial finish: %s", msg(err));
        if (fd >= 0) {
            struct sockaddr_in peer;
            socklen_t len = sizeof peer;
            CHECK(getpeername(fd, (struct sockaddr *)&peer, &len) == 0, "connected: %s", strerror(errno));
            CHECK((fcntl(fd, F_GETFL) & O_NONBLOCK) == 0, "handed over in blocking mode, as dp_dial does");
            close(fd);
            fd = -1;
        }
    }
    dp_error_free(err);
    err = NULL;

    /* Refused: the error comes from the finish. */
    CHECK(dp_dial_start("tcp://127.0.0.1:1", NULL, &op, &err) == DP_OK, "start: %s", msg(err));
    drive_op(op, 1000);
    code = dp_dial_finish(op, &fd, &err);
    CHECK(code == DP_CONNECTION_REFUSED && fd == -1, "refused: %s", dp_code_name(code));
    CHECK(dp_error_layer(err) == DP_LAYER_DIAL, "layer");
    dp_error_free(err);
    err = NULL;

    /* A black hole: the wait carries connect_timeout, and the finish names it. */
    struct black_hole hole;
    if (black_hole_open(&hole) == 0) {
        snprintf(url, sizeof url, "tcp://127.0.0.1:%d?connect_timeout=300ms", hole.port);
        CHECK(dp_dial_start(url, NULL, &op, &err) == DP_OK, "start: %s", msg(err));
        double start = now_s();
        struct drive d = drive_op(op, 1000);
        CHECK(d.waits >= 1 && d.first.timeout_us > 0 && d.first.timeout_us <= 300000,
              "waits %d, first timeout %lld us", d.waits, (long long)d.first.timeout_us);
        CHECK(d.first.events == POLLOUT && d.first.socket_id == 0,
              "a dial waits for its connecting socket to be writable: events %d socket_id %llu",
              d.first.events, (unsigned long long)d.first.socket_id);
        code = dp_dial_finish(op, &fd, &err);
        double took = now_s() - start;
        CHECK(code == DP_CONNECT_TIMEOUT && took > 0.25 && took < 2.0, "black hole: %s after %.2fs", dp_code_name(code), took);
        CHECK(dp_error_limit(err) && strcmp(dp_error_limit(err), "connect_timeout") == 0, "limit");
        dp_error_free(err);
        err = NULL;
        black_hole_close(&hole);
    } else {
        CHECK(0, "could not make a SYN black hole");
    }

    /* The wrong finish ends the op all the same and says which one to use. */
    snprintf(url, sizeof url, "tcp://%s", hostport);
    CHECK(dp_dial_start(url, NULL, &op, &err) == DP_OK, "start: %s", msg(err));
    code = dp_op_finish(op, NULL, &err);
    CHECK(code == DP_INVALID_ARGUMENT && strstr(dp_error_message(err), "dp_dial_finish"), "%s", msg(err));
    dp_error_free(err);
    err = NULL;
    CHECK(dp_dial_start(url, NULL, &op, &err) == DP_OK, "start: %s", msg(err));
    CHECK(dp_dial_finish(op, NULL, &err) == DP_INVALID_ARGUMENT, "NULL fd");
    dp_error_free(err);
    err = NULL;
    dp_pool *pool = NULL;
    if (dp_pool_open(pg_url("sslmode=disable"), &pool, &err) == DP_OK) {
        dp_conn *conn = NULL;
        if (dp_pool_acquire(pool, NULL, &conn, &err) == DP_OK) {
            CHECK(dp_conn_query_start(conn, NULL, "SELECT 1", 0, NULL, &op, &err) == DP_OK, "start: %s", msg(err));
            code = dp_dial_finish(op, &fd, &err);
            CHECK(code == DP_INVALID_ARGUMENT && strstr(dp_error_message(err), "dp_op_finish"), "%s", msg(err));
            dp_conn_release(conn);
        }
        dp_error_free(err);
        err = NULL;
        dp_pool_close(pool);
    } else {
        CHECK(0, "open: %s", msg(err));
        dp_error_free(err);
        err = NULL;
    }

    CHECK(dp_dial_start(NULL, NULL, &op, &err) == DP_INVALID_ARGUMENT, "NULL url");
    dp_error_free(err);
    err = NULL;
    CHECK(dp_dial_start("tcp://127.0.0.1:1", NULL, NULL, &err) == DP_INVALID_ARGUMENT, "NULL op out-pointer");
    dp_error_free(err);
    err = NULL;
    CHECK(dp_dial_start("tcp://127.0.0.1:1?connect_timeout=banana", NULL, &op, &err) == DP_INVALID_ARGUMENT,
          "a bad option fails at the start");
    dp_error_free(err);
    err = NULL;
    CHECK(dp_dial_finish(NULL, &fd, &err) == DP_INVALID_ARGUMENT, "NULL op");
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
    test_preferred_acquire();
    test_deadline_cancels_on_the_server();
    test_cancel_from_another_thread();
    test_dial();
    test_error_codes_from_c();
    test_cancel_a_pending_acquire_and_exhaustion();
    test_threads();
    test_mariadb();
    test_newer_accessors();
    test_metrics_and_events();
    test_poll_mode();
    test_dial_poll_mode();
    printf("c-ffi: %d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
