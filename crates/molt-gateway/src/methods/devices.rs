//! Device pairing: `device.pair.list`, `device.pair.approve`, `device.pair.reject`.

use std::sync::Arc;

use molt_protocol::frame::ErrorShape;
use molt_protocol::method::NoParams;
use molt_protocol::methods::devices::{
    Decision, PairApprove, PairDecision, PairList, PairListResult, PairReject, RequestIdParams,
};
use molt_store::Pairing;
use serde_json::json;

use crate::app::{App, now_ms};
use crate::router::{Caller, Router};
use crate::store_handle::to_error_shape;

pub fn register(r: &mut Router, app: &Arc<App>) {
    r.with(app)
        .on::<PairList>(list)
        .on::<PairApprove>(|app, _, p: RequestIdParams| {
            decide(app, p.request_id, Decision::Approved)
        })
        .on::<PairReject>(|app, _, p: RequestIdParams| {
            decide(app, p.request_id, Decision::Rejected)
        });
}

async fn list(app: Arc<App>, _: Caller, _: NoParams) -> Result<PairListResult, ErrorShape> {
    let devices = app
        .store
        .call(|s| s.list_devices())
        .await
        .map_err(to_error_shape)?;
    let (pending, paired) = devices
        .into_iter()
        .partition(|d| d.state == Pairing::Pending);
    Ok(PairListResult { pending, paired })
}

/// An approved device gets its device token when it next connects: only the token's digest
/// is stored, so none is made here.
async fn decide(
    app: Arc<App>,
    device: String,
    decision: Decision,
) -> Result<PairDecision, ErrorShape> {
    let d = device.clone();
    let rec = app
        .store
        .call(move |s| match decision {
            Decision::Approved => s.approve_device(&d, None),
            Decision::Rejected => s.reject_device(&d),
        })
        .await
        .map_err(to_error_shape)?
        .ok_or_else(|| ErrorShape::invalid(format!("no pairing request for device {device}")))?;
    let out = PairDecision {
        request_id: rec.id.clone(),
        device_id: rec.id,
        decision,
    };
    app.broadcast(
        "device.pair.resolved",
        json!({
            "requestId": out.request_id, "deviceId": out.device_id,
            "decision": out.decision, "ts": now_ms(),
        }),
    );
    Ok(out)
}
