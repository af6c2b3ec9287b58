//! A prepared multi-row `INSERT` for the SQLite store's hot path that binds text without
//! copying it.
//!
//! rusqlite binds every string with `SQLITE_TRANSIENT`, so SQLite allocates and copies each
//! text value before the statement runs and frees it after: with seven text columns that was
//! about a tenth of the writer thread. Here text is bound `SQLITE_STATIC`, which is sound only
//! while the bound bytes outlive the step that reads them: [`RowInsert::execute`] binds every
//! parameter and steps within one call whose values borrow for its whole duration, and refuses
//! to step unless every parameter was bound in that call. Pointers left bound after the call
//! are never read: the next step comes after all of them are bound anew, and finalizing does
//! not read them. (Clearing the bindings after each step cost a pass over all 900 of them.)

use rusqlite::{ffi, Connection};
use std::ffi::{c_int, CStr, CString};
use std::marker::PhantomData;

/// A prepared statement on a connection, finalized on drop.
pub struct RowInsert<'conn> {
    db: *mut ffi::sqlite3,
    stmt: *mut ffi::sqlite3_stmt,
    parameters: c_int,
    _conn: PhantomData<&'conn Connection>,
}

/// Binds the parameters of one execution, in order, from the first.
pub struct Binder<'s, 'v> {
    stmt: *mut ffi::sqlite3_stmt,
    next: c_int,
    status: c_int,
    _statement: PhantomData<&'s mut ()>,
    _values: PhantomData<&'v [u8]>,
}

impl<'conn> RowInsert<'conn> {
    pub fn prepare(conn: &'conn Connection, sql: &str) -> rusqlite::Result<RowInsert<'conn>> {
        let sql = CString::new(sql).map_err(|_| rusqlite::Error::InvalidQuery)?;
        // SAFETY: the handle is valid while `conn` is borrowed, which `'conn` guarantees.
        let db = unsafe { conn.handle() };
        let mut stmt = std::ptr::null_mut();
        // SAFETY: `db` is a valid open connection and `sql` a NUL-terminated string.
        let rc = unsafe {
            ffi::sqlite3_prepare_v2(db, sql.as_ptr(), -1, &mut stmt, std::ptr::null_mut())
        };
        if rc != ffi::SQLITE_OK {
            return Err(error(db, rc));
        }
        Ok(RowInsert {
            db,
            stmt,
            // SAFETY: `stmt` was just prepared.
            parameters: unsafe { ffi::sqlite3_bind_parameter_count(stmt) },
            _conn: PhantomData,
        })
    }

    /// Binds the parameters with `bind`, runs the statement once, and resets it. Every value
    /// bound borrows for `'v`, which outlives this call; `bind` must bind every parameter.
    pub fn execute<'v>(&mut self, bind: impl FnOnce(&mut Binder<'_, 'v>)) -> rusqlite::Result<()> {
        let mut binder = Binder {
            stmt: self.stmt,
            next: 1,
            status: ffi::SQLITE_OK,
            _statement: PhantomData,
            _values: PhantomData,
        };
        bind(&mut binder);
        let status = match binder.status {
            ffi::SQLITE_OK if binder.next - 1 != self.parameters => ffi::SQLITE_RANGE,
            status => status,
        };
        // SAFETY: `stmt` is a prepared statement of `db`; it steps only when every parameter
        // was bound in this call, to values borrowed for 'v, which outlives the step.
        unsafe {
            let rc = if status == ffi::SQLITE_OK {
                ffi::sqlite3_step(self.stmt)
            } else {
                status
            };
            let result = match rc {
                ffi::SQLITE_DONE => Ok(()),
                rc => Err(error(self.db, rc)),
            };
            ffi::sqlite3_reset(self.stmt);
            result
        }
    }
}

impl Drop for RowInsert<'_> {
    fn drop(&mut self) {
        // SAFETY: `stmt` was prepared by `prepare` and is finalized exactly once.
        unsafe { ffi::sqlite3_finalize(self.stmt) };
    }
}

impl<'v> Binder<'_, 'v> {
    fn record(&mut self, rc: c_int) {
        if self.status == ffi::SQLITE_OK {
            self.status = rc;
        }
        self.next += 1;
    }

    pub fn real(&mut self, value: Option<f64>) {
        // SAFETY: binding a number copies it; an index past the last parameter is reported.
        let rc = unsafe {
            match value {
                Some(v) => ffi::sqlite3_bind_double(self.stmt, self.next, v),
                None => ffi::sqlite3_bind_null(self.stmt, self.next),
            }
        };
        self.record(rc);
    }

    pub fn integer(&mut self, value: i64) {
        // SAFETY: as for `real`.
        let rc = unsafe { ffi::sqlite3_bind_int64(self.stmt, self.next, value) };
        self.record(rc);
    }

    /// Binds UTF-8 text without copying it: it must live for `'v`.
    pub fn text(&mut self, value: &'v [u8]) {
        let Ok(len) = c_int::try_from(value.len()) else {
            return self.record(ffi::SQLITE_TOOBIG);
        };
        // SAFETY: `value` is valid for 'v, longer than the step that reads it (see `execute`).
        let rc = unsafe {
            ffi::sqlite3_bind_text(
                self.stmt,
                self.next,
                value.as_ptr().cast(),
                len,
                ffi::SQLITE_STATIC(),
            )
        };
        self.record(rc);
    }
}

/// The connection's error for a failed call, with SQLite's message.
fn error(db: *mut ffi::sqlite3, rc: c_int) -> rusqlite::Error {
    // SAFETY: `db` is a valid connection; the message is copied before any other call.
    let message = unsafe { CStr::from_ptr(ffi::sqlite3_errmsg(db)) }
        .to_string_lossy()
        .into_owned();
    rusqlite::Error::SqliteFailure(ffi::Error::new(rc), Some(message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_statement_steps_only_with_every_parameter_bound() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (a TEXT, b INTEGER)")
            .unwrap();
        let mut insert = RowInsert::prepare(&conn, "INSERT INTO t VALUES (?1, ?2)").unwrap();
        let text = b"kept".to_vec();
        insert.execute(|b| b.text(&text)).unwrap_err();
        insert.execute(|b| b.integer(1)).unwrap_err();
        insert
            .execute(|b| {
                b.text(&text);
                b.integer(2);
            })
            .unwrap();
        let rows: Vec<(String, i64)> = conn
            .prepare("SELECT a, b FROM t")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(rows, [("kept".to_owned(), 2)]);
    }
}
