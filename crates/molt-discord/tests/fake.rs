//! The client against the fake Discord on loopback: identify, resume with replay after a
//! drop and after op 7, re-identify after op 9, the fatal close codes, 429s and nonces.

use std::sync::Arc;
use std::time::Duration;

use molt_discord::{Endpoint, Event, Gateway, INTENTS, Rest, intents};
use molt_fake_discord::{FakeDiscord, Inbound, Options};

const STEP: Duration = Duration::from_secs(20);

async fn fake() -> FakeDiscord {
    FakeDiscord::start(Options {
        heartbeat_interval_ms: 1000,
        ..Options::default()
    })
    .await
    .unwrap()
}

fn gateway(f: &FakeDiscord, token: &str, intents: u64) -> Gateway {
    let endpoint = Endpoint::parse(&f.api_url()).unwrap();
    let rest = Arc::new(Rest::new(&endpoint, token).unwrap());
    Gateway::new(endpoint, rest, token, intents, None)
}

/// The next event that is not a GUILD_CREATE.
async fn next(gw: &mut Gateway) -> Event {
    loop {
        let ev = tokio::time::timeout(STEP, gw.next())
            .await
            .expect("an event in time")
            .expect("no fatal error");
        match &ev {
            Event::Dispatch { kind, .. } if kind == "GUILD_CREATE" => continue,
            _ => return ev,
        }
    }
}

fn dm(f: &FakeDiscord, text: &str) -> String {
    f.send_message(Inbound {
        channel_id: f.dm_channel_for("300000000000000001"),
        guild_id: None,
        author_id: "300000000000000001".into(),
        author_name: "alice".into(),
        author_is_bot: false,
        content: text.into(),
        mentions_bot: false,
    })
}

fn message_id(ev: &Event) -> Option<String> {
    match ev {
        Event::Dispatch { kind, data, .. } if kind == "MESSAGE_CREATE" => {
            data["id"].as_str().map(str::to_owned)
        }
        _ => None,
    }
}

/// Reads events until RESUMED (at most 6): the ids of the messages seen on the way, and
/// whether RESUMED came.
async fn until_resumed(gw: &mut Gateway) -> (Vec<String>, bool) {
    let mut seen = Vec::new();
    for _ in 0..6 {
        let ev = next(gw).await;
        if let Some(id) = message_id(&ev) {
            seen.push(id);
        }
        if ev == Event::Resumed {
            return (seen, true);
        }
    }
    (seen, false)
}

#[tokio::test]
async fn a_dropped_connection_resumes_and_replays_what_was_missed() {
    let f = fake().await;
    let token = Options::default().token;
    let mut gw = gateway(&f, &token, INTENTS);
    assert!(matches!(next(&mut gw).await, Event::Ready { .. }));
    let first = dm(&f, "one");
    assert_eq!(message_id(&next(&mut gw).await), Some(first));

    f.disconnect_all();
    let missed = dm(&f, "two");
    let (seen, resumed) = until_resumed(&mut gw).await;
    assert!(resumed);
    assert_eq!(seen, vec![missed], "the missed message, once");
    assert_eq!((f.identify_count(), f.resume_count()), (1, 1));
    // Heartbeats keep going on the resumed connection.
    let beats = f.heartbeat_count();
    let after = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let _ = tokio::time::timeout(Duration::from_millis(200), gw.next()).await;
            if f.heartbeat_count() > beats {
                return;
            }
        }
    })
    .await;
    assert!(after.is_ok(), "a heartbeat after the resume");
}

#[tokio::test]
async fn op_7_resumes_and_op_9_identifies_again() {
    let f = fake().await;
    let token = Options::default().token;
    let mut gw = gateway(&f, &token, INTENTS);
    assert!(matches!(next(&mut gw).await, Event::Ready { .. }));
    f.request_reconnect();
    assert!(matches!(next(&mut gw).await, Event::Reconnecting { .. }));
    assert_eq!(next(&mut gw).await, Event::Resumed);
    assert_eq!(f.resume_count(), 1);

    f.invalidate_sessions();
    f.disconnect_all();
    let mut ready = false;
    for _ in 0..6 {
        if let Event::Ready { .. } = next(&mut gw).await {
            ready = true;
            break;
        }
    }
    assert!(ready, "a new session after INVALID_SESSION(false)");
    assert_eq!(f.identify_count(), 2);
}

#[tokio::test]
async fn missing_intents_and_a_bad_token_are_fatal_with_the_fix() {
    let f = fake().await;
    let token = Options::default().token;
    let mut gw = gateway(&f, &token, intents::GUILDS | intents::GUILD_MESSAGES);
    let err = loop {
        match tokio::time::timeout(STEP, gw.next())
            .await
            .expect("in time")
        {
            Err(e) => break e,
            Ok(Event::Reconnecting { reason, .. }) => panic!("retried: {reason}"),
            Ok(_) => {}
        }
    };
    assert_eq!(err.code, Some(4014));
    assert!(err.message.contains("Message Content"), "{err}");

    let mut gw = gateway(&f, "wrong-token", INTENTS);
    let err = tokio::time::timeout(STEP, gw.next())
        .await
        .expect("in time")
        .expect_err("a bad token is fatal");
    assert!(err.message.contains("token"), "{err}");
    assert!(!err.message.contains("wrong-token"), "{err}");
}

#[tokio::test]
async fn posts_wait_out_429s_and_a_repeated_nonce_creates_nothing() {
    let f = fake().await;
    let endpoint = Endpoint::parse(&f.api_url()).unwrap();
    let rest = Rest::new(&endpoint, &Options::default().token).unwrap();
    f.add_guild_channel("200000000000000001", "210000000000000001");
    f.fail_next_posts_with_429(2, 150);
    let a = rest
        .create_message("210000000000000001", "hello", Some("n-1.0"))
        .await
        .unwrap();
    assert_eq!(f.early_retries(), 0, "retry_after honoured");
    assert_eq!(f.post_attempts(), 3);
    let b = rest
        .create_message("210000000000000001", "hello", Some("n-1.0"))
        .await
        .unwrap();
    assert_eq!(a.id, b.id, "the same message comes back");
    assert_eq!(f.posted().len(), 1);
    assert_eq!(
        rest.open_dm("300000000000000001").await.unwrap(),
        f.dm_channel_for("300000000000000001")
    );
    let info = rest.channel("210000000000000001").await.unwrap();
    assert_eq!(info.guild_id.as_deref(), Some("200000000000000001"));
    rest.typing("210000000000000001").await.unwrap();
    assert_eq!(f.typing_count("210000000000000001"), 1);
}

#[tokio::test]
async fn a_zombie_connection_is_dropped_and_resumed_without_losing_a_message() {
    let f = fake().await;
    let token = Options::default().token;
    let mut gw = gateway(&f, &token, INTENTS);
    assert!(matches!(next(&mut gw).await, Event::Ready { .. }));
    let first = dm(&f, "before");
    assert_eq!(message_id(&next(&mut gw).await), Some(first));

    // The path goes half-dead: the socket stays open, but heartbeats are no longer ACKed.
    f.set_heartbeat_acks(false);
    let beats = f.heartbeat_count();
    let reason = loop {
        match next(&mut gw).await {
            Event::Reconnecting { reason, .. } => break reason,
            other => assert!(message_id(&other).is_none(), "unexpected {other:?}"),
        }
    };
    assert!(reason.contains("heartbeat ACK"), "{reason}");
    assert!(
        f.heartbeat_count() > beats,
        "it waited for an unanswered heartbeat before giving up"
    );

    // Sent while the client is between sockets: the RESUME must replay it, once.
    f.set_heartbeat_acks(true);
    let missed = dm(&f, "during");
    let (seen, resumed) = until_resumed(&mut gw).await;
    assert!(resumed, "the session was resumed");
    // Either replayed on RESUME or dispatched live right after it; exactly once in all.
    if seen.is_empty() {
        assert_eq!(message_id(&next(&mut gw).await), Some(missed));
    } else {
        assert_eq!(seen, vec![missed], "the missed message, once");
    }
    assert_eq!(
        (f.identify_count(), f.resume_count()),
        (1, 1),
        "a zombie is resumed, not identified again"
    );
}
