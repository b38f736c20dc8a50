//! fail2ban status and OpenClaw config parsing on fixtures, and on bad input.

mod common;

use common::fixture;
use molt_audit::agents::{self, TokenStrength};
use molt_audit::fail2ban;

#[test]
fn fail2ban_jails_from_fixtures() {
    let s = fail2ban::parse_status(&fixture("fail2ban_status")).expect("a jail list");
    assert_eq!(s.jails, ["sshd", "recidive"]);
    assert!(s.guards_sshd());
    let s = fail2ban::parse_status(&fixture("fail2ban_status_no_sshd")).expect("a jail list");
    assert!(!s.guards_sshd());
}

#[test]
fn fail2ban_bad_input_is_noted_not_fatal() {
    // Truncated in the middle of the jail list, then garbage.
    let text = fixture("fail2ban_status");
    let cut = &text[..text.len() - 10];
    let s = fail2ban::parse_status(cut).expect("the list line is still there");
    assert_eq!(s.jails, ["sshd"]);
    let s = fail2ban::parse_status(
        "Status\n\u{0}\u{1}junk\n|- Number of jail:\tmany\n`- Jail list:\t$(rm -rf /), sshd\n",
    )
    .expect("a jail list");
    assert_eq!(s.jails, ["sshd"], "names with shell characters are dropped");
    assert_eq!(s.notes.total, 2, "{:?}", s.notes);
    assert!(fail2ban::parse_status("\u{fffd}\u{fffd}").is_none());
}

#[test]
fn openclaw_config_from_fixture() {
    let a = agents::openclaw_auth(&fixture("openclaw_json5"));
    assert_eq!(a.mode.as_deref(), Some("token"));
    assert!(a.token && a.is_configured());
    assert_eq!(a.bind.as_deref(), Some("lan"));
}

#[test]
fn openclaw_config_bad_input() {
    let text = fixture("openclaw_json5");
    // Truncated before the token: no auth is seen, and nothing panics.
    let cut = text.find("token: \"8c1f").expect("fixture has a token");
    let a = agents::openclaw_auth(&text[..cut]);
    assert!(!a.is_configured(), "{a:?}");
    for junk in [
        "",
        "}}}}",
        "{'",
        "/*",
        "{gateway:{auth:{token:",
        "\u{0}{[:,]}",
    ] {
        assert!(!agents::openclaw_auth(junk).is_configured(), "{junk:?}");
    }
}

#[test]
fn token_strength_examples() {
    assert_eq!(
        agents::token_strength("8c1f0e2d9b7a4c3e5f6a7b8c9d0e1f2a"),
        TokenStrength::Strong
    );
    for weak in [
        "",
        "changeme",
        "A-Long-Random-String",
        "0123456789",
        "abababababababababababababab",
    ] {
        assert!(
            matches!(agents::token_strength(weak), TokenStrength::Weak { .. }),
            "{weak:?}"
        );
    }
}
