//! Reading OpenClaw's SQLite files without touching them.
//!
//! Even a read-only open of a WAL database can create `-wal` and `-shm` files next to it, and
//! a live OpenClaw may hold uncheckpointed pages in its `-wal`. So the importer copies the
//! database and its `-wal` into a private temporary directory and reads the copy: the source
//! directory is never written, and the copy sees every committed transaction.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags, Row, ToSql};

use crate::ImportError;

/// A private copy of one OpenClaw database, deleted on drop.
pub struct Db {
    conn: Connection,
    /// The source file, for messages.
    source: PathBuf,
    _dir: tempfile::TempDir,
}

impl Db {
    /// Copies `path` (and its `-wal`) aside and opens the copy.
    pub fn open_copy(path: &Path) -> Result<Self, ImportError> {
        // A 0700 directory of our own, removed on drop.
        let dir = tempfile::Builder::new()
            .prefix("molt-import-")
            .tempdir()
            .map_err(|e| ImportError::io(path, "cannot make a temporary copy of", &e))?;
        let copy = dir.path().join("copy.sqlite");
        std::fs::copy(path, &copy)
            .map_err(|e| ImportError::io(path, "cannot read the database", &e))?;
        let wal = sibling(path, "-wal");
        if wal.exists() {
            std::fs::copy(&wal, sibling(&copy, "-wal"))
                .map_err(|e| ImportError::io(&wal, "cannot read the database's WAL", &e))?;
        }
        let conn = Connection::open_with_flags(
            &copy,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| ImportError::at(path, format!("cannot open as SQLite: {e}")))?;
        let check: String = conn
            .query_row("PRAGMA quick_check", [], |r| r.get(0))
            .map_err(|e| ImportError::at(path, format!("not a readable SQLite database: {e}")))?;
        if check != "ok" {
            return Err(ImportError::at(
                path,
                format!(
                    "the database is damaged or was being written while it was copied \
                     ({check}); stop OpenClaw's gateway and import again"
                ),
            ));
        }
        Ok(Self {
            conn,
            source: path.to_owned(),
            _dir: dir,
        })
    }

    /// Refuses a database that is not OpenClaw's `role` store, or is newer than `max`.
    pub fn check_schema(&self, role: &str, max: i64) -> Result<i64, ImportError> {
        let found: Result<(String, i64, Option<String>), _> = self.conn.query_row(
            "SELECT role, schema_version, app_version FROM schema_meta WHERE meta_key = 'primary'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        );
        let (found_role, version, app) = found.map_err(|e| {
            ImportError::at(
                &self.source,
                format!("not an OpenClaw {role} database (no schema_meta: {e})"),
            )
        })?;
        if found_role != role {
            return Err(ImportError::at(
                &self.source,
                format!("an OpenClaw {found_role} database where the {role} database belongs"),
            ));
        }
        if version > max {
            return Err(ImportError::at(
                &self.source,
                format!(
                    "schema version {version} (OpenClaw {}) is newer than this molt knows \
                     ({max}, OpenClaw 2026.9); update molt, or export from OpenClaw first",
                    app.as_deref().unwrap_or("unknown")
                ),
            ));
        }
        Ok(version)
    }

    /// Every row of `sql`, mapped.
    pub fn rows<T>(
        &self,
        sql: &str,
        params: &[&dyn ToSql],
        map: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>, ImportError> {
        let fail = |e: rusqlite::Error| {
            ImportError::at(
                &self.source,
                format!("cannot read ({e}); is it OpenClaw's?"),
            )
        };
        let mut stmt = self.conn.prepare(sql).map_err(fail)?;
        let rows = stmt.query_map(params, map).map_err(fail)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(fail)
    }

    /// One value.
    pub fn one(&self, sql: &str, params: &[&dyn ToSql]) -> Result<i64, ImportError> {
        self.conn
            .query_row(sql, params, |r| r.get(0))
            .map_err(|e| ImportError::at(&self.source, format!("cannot read ({e})")))
    }
}

/// Decompresses a zstd-packed transcript event.
pub fn unzstd(packed: &[u8]) -> Result<String, String> {
    let bytes = zstd::decode_all(packed).map_err(|e| e.to_string())?;
    String::from_utf8(bytes).map_err(|e| e.to_string())
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}
