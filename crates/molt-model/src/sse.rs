//! A small incremental Server-Sent Events parser.
//!
//! Both provider APIs speak a tiny subset of SSE (`event:` and `data:` lines, blank-line
//! terminated), so a hand-written parser over the raw body chunks is less code and less
//! dependency than an SSE crate. It buffers bytes (not text) so a UTF-8 character split
//! across two network chunks decodes correctly, accepts `\n` and `\r\n` line ends, joins
//! multi-line `data:` with `\n`, and drops `:` comments and fields it does not use
//! (`id:`, `retry:`).

/// The longest line the parser buffers; a provider never sends one this long, so a longer
/// one means the stream is not SSE.
const MAX_LINE: usize = 16 * 1024 * 1024;

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SseEvent {
    /// The `event:` field, empty when absent.
    pub event: String,
    /// The `data:` lines joined with `\n`.
    pub data: String,
}

#[derive(Debug, Default)]
struct Pending {
    event: String,
    data: String,
    has_data: bool,
}

/// Feed it body chunks with [`SseParser::push`]; call [`SseParser::finish`] at EOF.
#[derive(Debug, Default)]
pub(crate) struct SseParser {
    buf: Vec<u8>,
    pending: Pending,
}

impl SseParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses `chunk`, appending every event it completes to `out`. `Err` when a line grows
    /// past [`MAX_LINE`].
    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<SseEvent>) -> Result<(), String> {
        self.buf.extend_from_slice(chunk);
        let mut start = 0;
        while let Some(pos) = self.buf[start..].iter().position(|&b| b == b'\n') {
            let end = start + pos;
            let line = strip_cr(&self.buf[start..end]);
            line_into(&mut self.pending, line, out);
            start = end + 1;
        }
        self.buf.drain(..start);
        if self.buf.len() > MAX_LINE {
            return Err(format!(
                "an event-stream line is longer than {MAX_LINE} bytes"
            ));
        }
        Ok(())
    }

    /// Ends the stream: a last line without its newline, and a last event without its blank
    /// line, still count.
    pub fn finish(&mut self, out: &mut Vec<SseEvent>) {
        if !self.buf.is_empty() {
            let rest = std::mem::take(&mut self.buf);
            line_into(&mut self.pending, strip_cr(&rest), out);
        }
        line_into(&mut self.pending, b"", out);
    }
}

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn line_into(p: &mut Pending, line: &[u8], out: &mut Vec<SseEvent>) {
    if line.is_empty() {
        if p.has_data {
            out.push(SseEvent {
                event: std::mem::take(&mut p.event),
                data: std::mem::take(&mut p.data),
            });
        }
        *p = Pending::default();
        return;
    }
    if line.first() == Some(&b':') {
        return;
    }
    let (field, value) = match line.iter().position(|&b| b == b':') {
        Some(i) => {
            let v = &line[i + 1..];
            (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
        }
        None => (line, &b""[..]),
    };
    match field {
        b"data" => {
            if p.has_data {
                p.data.push('\n');
            }
            p.data.push_str(&String::from_utf8_lossy(value));
            p.has_data = true;
        }
        b"event" => p.event = String::from_utf8_lossy(value).into_owned(),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_in_pieces(input: &[u8], piece: usize) -> Vec<SseEvent> {
        let mut p = SseParser::new();
        let mut out = Vec::new();
        for c in input.chunks(piece) {
            p.push(c, &mut out).unwrap();
        }
        p.finish(&mut out);
        out
    }

    fn ev(event: &str, data: &str) -> SseEvent {
        SseEvent {
            event: event.into(),
            data: data.into(),
        }
    }

    #[test]
    fn events_split_anywhere_parse_the_same() {
        let input = "event: a\r\ndata: {\"x\":1}\r\n\r\n: a comment\n\ndata: one\ndata:two\n\n\
                     id: 7\nretry: 10\nevent: b\ndata: h\u{e9}llo\n\ndata: [DONE]\n\n"
            .as_bytes();
        let want = vec![
            ev("a", "{\"x\":1}"),
            ev("", "one\ntwo"),
            ev("b", "h\u{e9}llo"),
            ev("", "[DONE]"),
        ];
        for piece in 1..input.len() {
            assert_eq!(parse_in_pieces(input, piece), want, "piece size {piece}");
        }
    }

    #[test]
    fn an_event_without_data_is_not_dispatched_and_the_last_one_needs_no_blank_line() {
        let out = parse_in_pieces(b"event: ping\n\nevent: x\ndata: 1", 4);
        assert_eq!(out, vec![ev("x", "1")]);
    }

    #[test]
    fn an_endless_line_is_an_error() {
        let mut p = SseParser::new();
        let mut out = Vec::new();
        let big = vec![b'a'; MAX_LINE + 1];
        assert!(p.push(&big, &mut out).is_err());
    }
}
