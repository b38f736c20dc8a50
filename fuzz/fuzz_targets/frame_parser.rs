//! `parse_request` on arbitrary text, plus serde round trips of what it accepts.
//!
//! Asserts:
//! - `parse_request` never panics, on any input (bytes are read as UTF-8, lossily);
//! - an accepted frame has a non-empty `id` and `method` and a `traceparent` of at most 128
//!   bytes; a rejected one reports an `id` only when it is a non-empty string;
//! - round trip: an accepted frame serialised with serde_json (as text and as a `Value`) parses
//!   back to an equal frame, and serialising it again gives the same text;
//! - the same round trip for `ServerFrame` (what clients parse), when the text is one.
#![no_main]

use libfuzzer_sys::fuzz_target;
use molt_protocol::frame::{RequestFrame, ServerFrame, parse_request};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    check_request(&text);
    check_server_frame(&text);
});

fn check_request(text: &str) {
    match parse_request(text) {
        Ok(frame) => {
            assert!(!frame.id.is_empty(), "accepted an empty id: {text:?}");
            assert!(!frame.method.is_empty(), "accepted an empty method: {text:?}");
            assert!(
                frame.traceparent.as_ref().is_none_or(|t| t.len() <= 128),
                "accepted a traceparent over 128 bytes: {text:?}"
            );

            let json = serde_json::to_string(&frame).expect("a RequestFrame serialises");
            let back = parse_request(&json)
                .unwrap_or_else(|e| panic!("re-parse of {json:?} (from {text:?}) failed: {e:?}"));
            assert_eq!(back, frame, "text round trip changed the frame; input {text:?}, json {json:?}");
            let json2 = serde_json::to_string(&back).expect("a RequestFrame serialises");
            assert_eq!(json2, json, "serialisation is not stable; input {text:?}");

            let value = serde_json::to_value(&frame).expect("a RequestFrame serialises");
            let from_value: RequestFrame = serde_json::from_value(value)
                .unwrap_or_else(|e| panic!("from_value of {json:?} failed: {e}"));
            assert_eq!(from_value, frame, "value round trip changed the frame; input {text:?}");
        }
        Err(e) => {
            assert!(
                e.id.as_ref().is_none_or(|id| !id.is_empty()),
                "an error carried an empty id: {text:?}"
            );
            assert!(!e.message.is_empty());
        }
    }
}

fn check_server_frame(text: &str) {
    let Ok(frame) = serde_json::from_str::<ServerFrame>(text) else {
        return;
    };
    let json = frame.to_text();
    let back: ServerFrame = serde_json::from_str(&json)
        .unwrap_or_else(|e| panic!("server frame {json:?} (from {text:?}) does not re-parse: {e}"));
    assert_eq!(back, frame, "server frame round trip changed it; input {text:?}, json {json:?}");
}
