//! Paired devices: pending until approved (or auto-approved on direct loopback).

use rusqlite::{OptionalExtension, Row, params};
use serde::Serialize;

use crate::{Ctx, Result, Store, StoreError, now_ms};

/// A device's pairing state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Pairing {
    Pending,
    Approved,
    Rejected,
}

impl Pairing {
    fn parse(s: &str) -> Result<Self> {
        match s {
            "pending" => Ok(Self::Pending),
            "approved" => Ok(Self::Approved),
            "rejected" => Ok(Self::Rejected),
            o => Err(StoreError::Corrupt(format!("unknown pairing state {o:?}"))),
        }
    }
}

/// A device as stored. `token` is the device token handed out at approval; the database is
/// 0600 in a 0700 directory, like every credential molt keeps.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceRecord {
    pub id: String,
    pub public_key: String,
    pub client_id: Option<String>,
    pub platform: Option<String>,
    pub state: Pairing,
    pub role: String,
    pub scopes: Vec<String>,
    #[serde(skip)]
    pub token: Option<String>,
    pub remote: Option<String>,
    pub created_at_ms: i64,
    pub decided_at_ms: Option<i64>,
    pub last_seen_ms: Option<i64>,
}

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

const COLUMNS: &str = "id, public_key, client_id, platform, state, role, scopes, token, remote, \
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
            token: r.get(7)?,
            remote: r.get(8)?,
            created_at_ms: r.get(9)?,
            decided_at_ms: r.get(10)?,
            last_seen_ms: r.get(11)?,
        },
        r.get(4)?,
        r.get(6)?,
    ))
}

fn finish(row: (DeviceRecord, String, String)) -> Result<DeviceRecord> {
    let (mut d, state, scopes) = row;
    d.state = Pairing::parse(&state)?;
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

    /// Approves a device and stores its device token. Returns `None` for an unknown id.
    pub fn approve_device(&mut self, id: &str, token: &str) -> Result<Option<DeviceRecord>> {
        self.conn
            .execute(
                "UPDATE devices SET state = 'approved', token = ?2, decided_at_ms = ?3 WHERE id = ?1",
                params![id, token, now_ms()],
            )
            .ctx("approving device")?;
        self.device(id)
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
