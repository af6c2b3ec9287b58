/*
 * SQLite's own speed for the store's table on this machine, with none of riskflow's code:
 * the textbook bulk load (one prepared single-row INSERT, text bound without a copy, one
 * transaction per 100,000 rows) of N rows shaped like loan_features' (14 columns, 7 of them
 * text), into the same schema with the same settings as riskflow's store (16 KiB pages,
 * write-ahead log, synchronous = NORMAL, 16 MiB cache, WITHOUT ROWID key (_row, _version)).
 * SQLite copies the log into the file inline, as it does by default.
 *
 *   scripts/bench.sh builds it against the SQLite that riskflow bundles and runs it;
 *   by hand: cc -O2 -I DIR scripts/sqlite-ceiling.c DIR/sqlite3.c -lpthread -ldl -lm
 *            ./a.out FILE.db ROWS
 */
#include "sqlite3.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define ROWS_PER_TRANSACTION 100000

static double seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static int fail(sqlite3 *db, const char *what) {
    fprintf(stderr, "sqlite-ceiling: %s: %s\n", what, sqlite3_errmsg(db));
    return 1;
}

static void bind_text(sqlite3_stmt *insert, int column, const char *text) {
    sqlite3_bind_text(insert, column, text, (int)strlen(text), SQLITE_STATIC);
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s FILE.db ROWS\n", argv[0]);
        return 2;
    }
    long rows = atol(argv[2]);
    sqlite3 *db;
    sqlite3_stmt *insert;
    if (sqlite3_open(argv[1], &db) != SQLITE_OK) return fail(db, "open");
    if (sqlite3_exec(db,
            "PRAGMA page_size = 16384; PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;"
            "PRAGMA cache_size = -16384;"
            "CREATE TABLE loan_features (amount_requested REAL, application_date TEXT NOT NULL,"
            " loan_title TEXT, risk_score REAL, debt_to_income_ratio TEXT, zip_code TEXT,"
            " state TEXT, employment_length TEXT, policy_code TEXT, ma50 DOUBLE,"
            " _row INTEGER NOT NULL, _version INTEGER NOT NULL, _modified_ts INTEGER NOT NULL,"
            " ma100 DOUBLE, PRIMARY KEY (_row, _version)) WITHOUT ROWID;",
            NULL, NULL, NULL) != SQLITE_OK)
        return fail(db, "create the table");
    if (sqlite3_prepare_v2(db,
            "INSERT OR IGNORE INTO loan_features VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            -1, &insert, NULL) != SQLITE_OK)
        return fail(db, "prepare");
    static const char *titles[] = {"debt_consolidation", "Credit card refinancing",
                                   "Café crédit à la maison", "Home improvement", "other"};
    static const char *states[] = {"RI", "CA", "NY", "TX", "FL", "IL", "OH"};
    double started = seconds();
    for (long row = 1; row <= rows; row++) {
        if (row % ROWS_PER_TRANSACTION == 1 && sqlite3_exec(db, "BEGIN", NULL, NULL, NULL))
            return fail(db, "begin");
        sqlite3_bind_double(insert, 1, 1000.0 + (row % 35) * 500);
        bind_text(insert, 2, "2012-03-14");
        bind_text(insert, 3, titles[row % 5]);
        if (row % 10 == 0)
            sqlite3_bind_null(insert, 4);
        else
            sqlite3_bind_double(insert, 4, 500.0 + row % 300);
        bind_text(insert, 5, "21.75%");
        bind_text(insert, 6, "127xx");
        bind_text(insert, 7, states[row % 7]);
        bind_text(insert, 8, "2 years");
        bind_text(insert, 9, "0.0");
        sqlite3_bind_double(insert, 10, 650.0 + (row % 97) / 7.0);
        sqlite3_bind_int64(insert, 11, row);
        sqlite3_bind_int64(insert, 12, 2);
        sqlite3_bind_int64(insert, 13, 1764400000000000000LL);
        sqlite3_bind_double(insert, 14, 640.0 + (row % 89) / 3.0);
        if (sqlite3_step(insert) != SQLITE_DONE) return fail(db, "insert");
        sqlite3_reset(insert);
        if ((row % ROWS_PER_TRANSACTION == 0 || row == rows) &&
            sqlite3_exec(db, "COMMIT", NULL, NULL, NULL))
            return fail(db, "commit");
    }
    double elapsed = seconds() - started;
    printf("%ld rows in %.2f s: %.0f rows/s (SQLite %s)\n", rows, elapsed, rows / elapsed,
           sqlite3_libversion());
    sqlite3_finalize(insert);
    sqlite3_close(db);
    return 0;
}
