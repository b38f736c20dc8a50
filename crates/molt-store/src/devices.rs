//! Paired devices: pending until approved (or auto-approved on direct loopback).
//!
//! A device token is a bearer secret, so only its digest is stored: a copy of the database
//! does not let anyone connect as a paired device.

use molt_protocol::device::token_digest;
use molt_protocol::handshake::secret_eq;
pub use molt_protocol::methods::devices::{DeviceRecord, Pairing};
use rusqlite::{OptionalExtension, Row, params};

use crate::{Ctx, FromWord, Result, Store, StoreError, now_ms};

/// What a device asked for when it first connected.
#[derive(Debug, Clone)]
pub struct DeviceRequest<'a> {
    pub id: &'a str,
    pub public_key: &'a str,
    pub client_id: &'a str,
    pub platform: &'a str,
    pub role: &'a str,
    pub scopes: &'a [String],
    pub remote: &'a str,
}

const COLUMNS: &str = "id, public_key, client_id, platform, state, role, scopes, remote, \
                       created_at_ms, decided_at_ms, last_seen_ms";

fn from_row(r: &Row<'_>) -> rusqlite::Result<(DeviceRecord, String, String)> {
    Ok((
        DeviceRecord {
            id: r.get(0)?,
            public_key: r.get(1)?,
            client_id: r.get(2)?,
            platform: r.get(3)?,
            state: Pairing::Pending,
            role: r.get(5)?,
            scopes: Vec::new(),
            remote: r.get(7)?,
            created_at_ms: r.get(8)?,
            decided_at_ms: r.get(9)?,
            last_seen_ms: r.get(10)?,
        },
        r.get(4)?,
        r.get(6)?,
    ))
}

fn finish(row: (DeviceRecord, String, String)) -> Result<DeviceRecord> {
    let (mut d, state, scopes) = row;
    d.state = Pairing::from_word(&state)?;
    d.scopes = serde_json::from_str(&scopes)
        .map_err(|e| StoreError::Corrupt(format!("device {} scopes: {e}", d.id)))?;
    Ok(d)
}

impl Store {
    pub fn device(&self, id: &str) -> Result<Option<DeviceRecord>> {
        self.conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM devices WHERE id = ?1"),
                [id],
                from_row,
            )
            .optional()
            .ctx("reading device")?
            .map(finish)
            .transpose()
    }

    pub fn list_devices(&self) -> Result<Vec<DeviceRecord>> {
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT {COLUMNS} FROM devices ORDER BY created_at_ms"
            ))
            .ctx("preparing devices query")?;
        let rows = stmt.query_map([], from_row).ctx("listing devices")?;
        let mut out = Vec::new();
        for row in rows {
            out.push(finish(row.ctx("reading device")?)?);
        }
        Ok(out)
    }

    /// Records a pairing request (or refreshes a pending one). Decided devices are unchanged.
    pub fn request_pairing(&mut self, req: &DeviceRequest<'_>) -> Result<DeviceRecord> {
        let scopes = serde_json::to_string(req.scopes)
            .map_err(|e| StoreError::Corrupt(format!("cannot encode scopes: {e}")))?;
        self.conn
            .execute(
                "INSERT INTO devices(id, public_key, client_id, platform, state, role, scopes, remote, created_at_ms)
                 VALUES (?1, ?2, ?3, ?4, 'pending', ?5, ?6, ?7, ?8)
                 ON CONFLICT(id) DO UPDATE SET role = ?5, scopes = ?6, remote = ?7, last_seen_ms = ?8
                 WHERE state = 'pending'",
                params![req.id, req.public_key, req.client_id, req.platform, req.role, scopes, req.remote, now_ms()],
            )
            .ctx("recording pairing request")?;
        self.device(req.id)?
            .ok_or_else(|| StoreError::Corrupt(format!("device {} vanished", req.id)))
    }

    /// Approves a device. With `token`, the device gets it now (it is connected); without,
    /// it gets one when it next connects ([`Store::issue_device_token`]). Returns `None` for
    /// an unknown id.
    pub fn approve_device(
        &mut self,
        id: &str,
        token: Option<&str>,
    ) -> Result<Option<DeviceRecord>> {
        self.conn
            .execute(
                "UPDATE devices SET state = 'approved', token = ?2, decided_at_ms = ?3 WHERE id = ?1",
                params![id, token.map(token_digest), now_ms()],
            )
            .ctx("approving device")?;
        self.device(id)
    }

    /// Replaces an approved device's token. Only its digest is kept.
    pub fn issue_device_token(&mut self, id: &str, token: &str) -> Result<()> {
        self.conn
            .execute(
                "UPDATE devices SET token = ?2 WHERE id = ?1 AND state = 'approved'",
                params![id, token_digest(token)],
            )
            .ctx("issuing device token")?;
        Ok(())
    }

    /// Whether `given` is the token of an approved device `id` (compared by digest, in
    /// constant time).
    pub fn device_token_matches(&self, id: &str, given: &str) -> Result<bool> {
        let stored: Option<String> = self
            .conn
            .query_row(
                "SELECT token FROM devices WHERE id = ?1 AND state = 'approved'",
                [id],
                |r| r.get(0),
            )
            .optional()
            .ctx("reading device token")?
            .flatten();
        Ok(stored.is_some_and(|d| secret_eq(&d, &token_digest(given))))
    }

    /// Databases written before tokens were kept as digests hold them in plain text; this
    /// replaces each with its digest. Runs at every open: a read that finds nothing once done,
    /// so the write lock is taken only when there is something to digest.
    pub(crate) fn digest_plaintext_device_tokens(&mut self) -> Result<usize> {
        const PLAIN: &str = "token IS NOT NULL AND token NOT LIKE 'sha256:%'";
        let pending: i64 = self
            .conn
            .query_row(
                &format!("SELECT COUNT(*) FROM devices WHERE {PLAIN}"),
                [],
                |r| r.get(0),
            )
            .ctx("looking for plain device tokens")?;
        if pending == 0 {
            return Ok(0);
        }
        let tx = self.write_tx().ctx("starting token migration")?;
        let plain: Vec<(String, String)> = {
            let mut stmt = tx
                .prepare(&format!("SELECT id, token FROM devices WHERE {PLAIN}"))
                .ctx("preparing token migration")?;
            let rows = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .ctx("reading plain tokens")?;
            rows.collect::<rusqlite::Result<_>>()
                .ctx("reading plain tokens")?
        };
        for (id, token) in &plain {
            tx.execute(
                "UPDATE devices SET token = ?2 WHERE id = ?1",
                params![id, token_digest(token)],
            )
            .ctx("digesting a device token")?;
        }
        tx.commit().ctx("committing token migration")?;
        Ok(plain.len())
    }

    /// Rejects a device and forgets its token. Returns `None` for an unknown id.
    pub fn reject_device(&mut self, id: &str) -> Result<Option<DeviceRecord>> {
        self.conn
            .execute(
                "UPDATE devices SET state = 'rejected', token = NULL, decided_at_ms = ?2 WHERE id = ?1",
                params![id, now_ms()],
            )
            .ctx("rejecting device")?;
        self.device(id)
    }

    pub fn touch_device(&mut self, id: &str) -> Result<()> {
        self.conn
            .execute(
                "UPDATE devices SET last_seen_ms = ?2 WHERE id = ?1",
                params![id, now_ms()],
            )
            .ctx("touching device")?;
        Ok(())
    }
}
