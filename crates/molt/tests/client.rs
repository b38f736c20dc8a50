//! The client module and the connection-level rules: reconnect after 1012, the handshake
//! timeout, and pairing of a device that is not on direct loopback.

mod common;

use std::time::{Duration, Instant};

use common::*;
use futures_util::{SinkExt, StreamExt};
use molt_client::{Client, ClientOptions};
use molt_protocol::connect::ConnectParams;
use molt_protocol::device::DeviceKey;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn opts(home: &Home) -> ClientOptions {
    let mut o = home.client_options();
    o.identity_file = Some(home.path().join("client-identity.json"));
    o.reconnect_for = Duration::from_secs(20);
    o
}

#[test]
fn client_reconnects_after_1012() {
    let home = Home::new(MOLT, "");
    let mut gw = home.start();
    rt().block_on(async {
        let mut c = Client::connect(opts(&home)).await.unwrap();
        let first = c.call("status", None).await.unwrap();
        gw.signal(libc::SIGTERM);
        // The gateway says why it closes, then closes with 1012.
        let (event, payload) = c.next_event().await.unwrap();
        assert_eq!(
            (event.as_str(), payload["reason"].as_str()),
            ("shutdown", Some("stop"))
        );
        let err = c.next_event().await.unwrap_err();
        assert!(err.is_restart(), "{err}");
        gw.wait_exit(Duration::from_secs(15));
        let gw2 = home.spawn(&[]);
        // The next call reconnects with backoff and lands on the new process.
        let second = c.call("status", None).await.unwrap();
        assert_eq!(second["pid"], gw2.pid());
        assert_eq!(
            second["bootEpoch"],
            first["bootEpoch"].as_i64().unwrap() + 1
        );
        drop(gw2);
    });
}

#[test]
fn handshake_times_out_after_15s() {
    let home = Home::new(MOLT, "");
    let _gw = home.start();
    rt().block_on(async {
        let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{}", home.port))
            .await
            .unwrap();
        let t0 = Instant::now();
        let challenge = ws.next().await.unwrap().unwrap();
        assert!(challenge.to_text().unwrap().contains("connect.challenge"));
        let close = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                match ws.next().await {
                    Some(Ok(Message::Close(f))) => return f.map(|f| u16::from(f.code)),
                    Some(Ok(_)) => continue,
                    _ => return None,
                }
            }
        })
        .await
        .expect("closed within 20 s");
        let took = t0.elapsed();
        assert_eq!(close, Some(1008));
        assert!(
            took >= Duration::from_secs(14) && took < Duration::from_secs(17),
            "{took:?}"
        );
    });
}

/// Connects through a (pretend) local proxy, so the device is not on direct loopback.
async fn proxied_connect(home: &Home, key: &DeviceKey, device_token: Option<&str>) -> Value {
    let mut req = format!("ws://127.0.0.1:{}", home.port)
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("x-forwarded-for", "203.0.113.7".parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    let challenge: Value =
        serde_json::from_str(ws.next().await.unwrap().unwrap().to_text().unwrap()).unwrap();
    let nonce = challenge["payload"]["nonce"].as_str().unwrap().to_owned();
    let mut params: ConnectParams = serde_json::from_value(json!({
        "minProtocol": 4, "maxProtocol": 4,
        "client": {"id": "openclaw-control-ui", "version": "1", "platform": "web", "mode": "ui"},
        "role": "operator", "scopes": ["operator.read"],
    }))
    .unwrap();
    // The shared token, unless the device token stands in for it.
    params.auth = Some(match device_token {
        Some(t) => molt_protocol::connect::ConnectAuth {
            device_token: Some(t.into()),
            ..Default::default()
        },
        None => molt_protocol::connect::ConnectAuth {
            token: Some(home.token()),
            ..Default::default()
        },
    });
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    key.sign_connect(&mut params, &nonce, now);
    let frame = json!({"type": "req", "id": "c", "method": "connect", "params": params});
    ws.send(Message::Text(frame.to_string().into()))
        .await
        .unwrap();
    let res: Value =
        serde_json::from_str(ws.next().await.unwrap().unwrap().to_text().unwrap()).unwrap();
    let _ = ws.close(None).await;
    res
}

#[test]
fn remote_device_waits_for_approval() {
    let home = Home::new(MOLT, "");
    let _gw = home.start();
    let key = DeviceKey::from_secret([42; 32]);
    rt().block_on(async {
        let res = proxied_connect(&home, &key, None).await;
        assert_eq!(res["ok"], false, "{res}");
        assert_eq!(res["error"]["code"], "NOT_PAIRED");
        assert_eq!(res["error"]["details"]["code"], "PAIRING_REQUIRED");
        assert_eq!(res["error"]["details"]["deviceId"], key.id());
    });
    let listed = home.cli_json(&["devices", "list", "--json"]);
    assert!(
        listed["pending"].to_string().contains(&key.id()),
        "{listed}"
    );
    home.cli_ok(&["devices", "approve", &key.id()]);
    rt().block_on(async {
        let res = proxied_connect(&home, &key, None).await;
        assert_eq!(res["ok"], true, "{res}");
        let token = res["payload"]["auth"]["deviceToken"]
            .as_str()
            .expect("device token issued")
            .to_owned();
        assert_eq!(res["payload"]["auth"]["scopes"], json!(["operator.read"]));
        // The token works on its own; a wrong one is refused.
        assert_eq!(proxied_connect(&home, &key, Some(&token)).await["ok"], true);
        let bad = proxied_connect(&home, &key, Some("not-the-token")).await;
        assert_eq!(
            bad["error"]["details"]["code"],
            "AUTH_DEVICE_TOKEN_MISMATCH"
        );
    });
    home.cli_ok(&["devices", "reject", &key.id()]);
    rt().block_on(async {
        assert_eq!(
            proxied_connect(&home, &key, None).await["error"]["code"],
            "NOT_PAIRED"
        );
    });
}

#[test]
fn cli_device_identity_file_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let home = Home::new(MOLT, "");
    let _gw = home.start();
    home.cli_ok(&["status"]);
    let id_file = home.state_dir().join("identity/device.json");
    let mode = std::fs::metadata(&id_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let saved: Value = serde_json::from_str(&std::fs::read_to_string(&id_file).unwrap()).unwrap();
    assert!(
        saved["deviceToken"].is_string(),
        "loopback CLI got a device token: {saved}"
    );
    for f in [
        "molt.db",
        "gateway.lock",
        "identity/gateway.key",
        "logs/gateway.log",
    ] {
        let mode = std::fs::metadata(home.state_dir().join(f))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{f}");
    }
    let mode = std::fs::metadata(home.state_dir())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o700);
}
