/*
 * The C ABI beside libpq, same server, same run, interleaved batches:
 *   - SELECT 1 round trips: PQexec on one connection, dp_conn_query on one
 *     checked-out connection, dp_pool_query (acquire + query + release);
 *   - acquire + release through the C ABI (ns per pair).
 * Prints medians over the batches.
 *
 *   make -C bench/c run URL=postgres://user:pass@127.0.0.1:5432/db
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libpq-fe.h>

#include "dialpool.h"

static double now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n) {
    qsort(v, n, sizeof *v, cmp);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

#define BATCHES 9

int main(int argc, char **argv) {
    const char *url = argc > 1 ? argv[1] : getenv("DIALPOOL_URL");
    int per_batch = argc > 2 ? atoi(argv[2]) : 2000;
    if (!url) {
        fprintf(stderr, "usage: %s postgres://... [round trips per batch]\n", argv[0]);
        return 2;
    }
    char dp_url[1024];
    snprintf(dp_url, sizeof dp_url, "%s%ssslmode=disable&max_open=1", url, strchr(url, '?') ? "&" : "?");
    char pq_url[1024];
    snprintf(pq_url, sizeof pq_url, "%s%ssslmode=disable", url, strchr(url, '?') ? "&" : "?");

    PGconn *pq = PQconnectdb(pq_url);
    if (PQstatus(pq) != CONNECTION_OK) {
        fprintf(stderr, "libpq: %s", PQerrorMessage(pq));
        return 1;
    }
    dp_pool *pool = NULL;
    dp_error *err = NULL;
    if (dp_pool_open(dp_url, &pool, &err) != DP_OK) {
        fprintf(stderr, "dialpool: %s\n", dp_error_message(err));
        return 1;
    }
    /* Warm both up (the pool opens its connection on first use). */
    for (int i = 0; i < 200; i++) {
        PQclear(PQexec(pq, "SELECT 1"));
        dp_result *r = NULL;
        if (dp_pool_query(pool, NULL, "SELECT 1", 0, NULL, &r, &err) != DP_OK) {
            fprintf(stderr, "dialpool: %s\n", dp_error_message(err));
            return 1;
        }
        dp_result_free(r);
    }

    double t_pq[BATCHES], t_conn[BATCHES], t_pool[BATCHES], t_acq[BATCHES];
    for (int b = 0; b < BATCHES; b++) {
        double t0 = now_ns();
        for (int i = 0; i < per_batch; i++) {
            PGresult *res = PQexec(pq, "SELECT 1");
            if (PQresultStatus(res) != PGRES_TUPLES_OK) { fprintf(stderr, "libpq failed\n"); return 1; }
            PQclear(res);
        }
        t_pq[b] = (now_ns() - t0) / per_batch;

        dp_conn *conn = NULL;
        if (dp_pool_acquire(pool, NULL, &conn, &err) != DP_OK) { fprintf(stderr, "acquire failed\n"); return 1; }
        t0 = now_ns();
        for (int i = 0; i < per_batch; i++) {
            dp_result *r = NULL;
            if (dp_conn_query(conn, NULL, "SELECT 1", 0, NULL, &r, &err) != DP_OK) { fprintf(stderr, "query failed\n"); return 1; }
            dp_result_free(r);
        }
        t_conn[b] = (now_ns() - t0) / per_batch;
        dp_conn_release(conn);

        t0 = now_ns();
        for (int i = 0; i < per_batch; i++) {
            dp_result *r = NULL;
            if (dp_pool_query(pool, NULL, "SELECT 1", 0, NULL, &r, &err) != DP_OK) { fprintf(stderr, "pool query failed\n"); return 1; }
            dp_result_free(r);
        }
        t_pool[b] = (now_ns() - t0) / per_batch;

        int pairs = per_batch * 10;
        t0 = now_ns();
        for (int i = 0; i < pairs; i++) {
            if (dp_pool_acquire(pool, NULL, &conn, &err) != DP_OK) { fprintf(stderr, "acquire failed\n"); return 1; }
            dp_conn_release(conn);
        }
        t_acq[b] = (now_ns() - t0) / pairs;
    }
    double pq_m = median(t_pq, BATCHES), conn_m = median(t_conn, BATCHES), pool_m = median(t_pool, BATCHES);
    printf("SELECT 1 round trip, median of %d batches of %d (us per query; ratio = libpq time / dialpool time, >1 is faster)\n",
           BATCHES, per_batch);
    printf("  libpq PQexec (one connection)        %8.2f us\n", pq_m / 1e3);
    printf("  dp_conn_query (one connection)       %8.2f us   ratio %.2f\n", conn_m / 1e3, pq_m / conn_m);
    printf("  dp_pool_query (acquire+query+release) %7.2f us   ratio %.2f\n", pool_m / 1e3, pq_m / pool_m);
    printf("acquire+release through the C ABI      %8.0f ns per pair\n", median(t_acq, BATCHES));
    PQfinish(pq);
    dp_pool_close(pool);
    return 0;
}
