//! What both stream decoders share: the caller's event sink, the assistant message being
//! built, and the internal failure type that carries retry facts.

use std::time::Duration;

use molt_protocol::transcript::{ContentBlock, StopReason, Usage};
use serde_json::Value;

use crate::sse::SseEvent;
use crate::{ModelErrorKind, StreamEvent};

/// Forwards events to the caller and remembers whether output (text or a tool call) went
/// out: after that a retry would show the caller the same output twice. `Usage` snapshots
/// do not count, since a repeat of one replaces the last.
pub(crate) struct Emitter<'a> {
    sink: &'a mut (dyn FnMut(StreamEvent) + Send),
    pub output: bool,
}

impl<'a> Emitter<'a> {
    pub fn new(sink: &'a mut (dyn FnMut(StreamEvent) + Send)) -> Self {
        Self {
            sink,
            output: false,
        }
    }

    pub fn emit(&mut self, ev: StreamEvent) {
        if matches!(
            ev,
            StreamEvent::TextDelta(_) | StreamEvent::ToolCallStarted { .. }
        ) {
            self.output = true;
        }
        (self.sink)(ev);
    }
}

/// An attempt's failure, before it becomes a [`crate::ModelError`].
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Failure {
    pub kind: ModelErrorKind,
    pub message: String,
    pub http_status: Option<u16>,
    /// 429, 5xx, connection errors, Anthropic `overloaded_error`: worth another attempt
    /// if nothing was output yet.
    pub retryable: bool,
    /// The provider's `retry-after`, when it sent one.
    pub retry_after: Option<Duration>,
}

impl Failure {
    pub fn new(kind: ModelErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            http_status: None,
            retryable: false,
            retry_after: None,
        }
    }

    pub fn malformed(message: impl Into<String>) -> Self {
        Self::new(ModelErrorKind::Malformed, message)
    }
}

/// A finished stream's parts; the caller adds api, provider, model and timestamp.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Parts {
    pub content: Vec<ContentBlock>,
    pub usage: Usage,
    pub stop_reason: StopReason,
    pub response_id: Option<String>,
}

/// Whether the decoder saw the stream's end marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flow {
    More,
    Done,
}

/// One API's stream semantics over SSE events.
pub(crate) trait Decoder {
    /// Handles one event; `Done` at the API's end marker.
    fn on_event(&mut self, ev: &SseEvent, out: &mut Emitter<'_>) -> Result<Flow, Failure>;
    /// The message, once the end marker arrived (`ended`) or the body ended without it.
    fn finish(self, ended: bool) -> Result<Parts, Failure>;
}

#[derive(Debug)]
enum Partial {
    Text(String),
    Tool {
        id: String,
        name: String,
        args: String,
        /// `input` of an Anthropic `tool_use` start, used when no argument pieces follow.
        initial: Option<Value>,
        announced: bool,
    },
}

/// The assistant content as it streams in, in arrival order.
#[derive(Debug, Default)]
pub(crate) struct Blocks {
    blocks: Vec<Partial>,
}

impl Blocks {
    /// Appends text to block `slot` (Anthropic's indexed blocks), or to the last block when
    /// it is text, else to a new text block (OpenAI's one running text).
    pub fn text(&mut self, slot: Option<usize>, piece: &str, out: &mut Emitter<'_>) {
        if piece.is_empty() {
            return;
        }
        let target = match slot {
            Some(i) => self.blocks.get_mut(i),
            None => match self.blocks.last_mut() {
                Some(b @ Partial::Text(_)) => Some(b),
                _ => None,
            },
        };
        match target {
            Some(Partial::Text(t)) => t.push_str(piece),
            _ => self.blocks.push(Partial::Text(piece.to_owned())),
        }
        out.emit(StreamEvent::TextDelta(piece.to_owned()));
    }

    /// Opens an empty text block and returns its slot.
    pub fn open_text(&mut self) -> usize {
        self.blocks.push(Partial::Text(String::new()));
        self.blocks.len() - 1
    }

    /// Opens a tool call and returns its slot; announces it once it has a name.
    pub fn open_tool(
        &mut self,
        id: String,
        name: String,
        initial: Option<Value>,
        out: &mut Emitter<'_>,
    ) -> usize {
        self.blocks.push(Partial::Tool {
            id,
            name,
            args: String::new(),
            initial,
            announced: false,
        });
        let slot = self.blocks.len() - 1;
        self.announce(slot, out);
        slot
    }

    /// Adds to tool call `slot`: an id or name that arrives late, and an argument piece.
    pub fn tool_update(
        &mut self,
        slot: usize,
        id: Option<&str>,
        name: Option<&str>,
        args_piece: &str,
        out: &mut Emitter<'_>,
    ) {
        if let Some(Partial::Tool {
            id: i,
            name: n,
            args,
            ..
        }) = self.blocks.get_mut(slot)
        {
            if let Some(v) = id.filter(|v| !v.is_empty() && i.is_empty()) {
                *i = v.to_owned();
            }
            if let Some(v) = name.filter(|v| !v.is_empty()) {
                // Some servers repeat the name in every piece: replace, never append.
                *n = v.to_owned();
            }
            args.push_str(args_piece);
        }
        self.announce(slot, out);
    }

    fn announce(&mut self, slot: usize, out: &mut Emitter<'_>) {
        // No let-chains: the workspace's rust-version is 1.85.
        if let Some(Partial::Tool {
            id,
            name,
            announced,
            ..
        }) = self.blocks.get_mut(slot)
        {
            if !*announced && !name.is_empty() {
                *announced = true;
                out.emit(StreamEvent::ToolCallStarted {
                    id: id.clone(),
                    name: name.clone(),
                });
            }
        }
    }

    pub fn has_tool_calls(&self) -> bool {
        self.blocks
            .iter()
            .any(|b| matches!(b, Partial::Tool { .. }))
    }

    /// The finished blocks: empty text dropped, arguments parsed (empty means `{}`).
    pub fn into_content(self) -> Result<Vec<ContentBlock>, Failure> {
        let mut content = Vec::with_capacity(self.blocks.len());
        for (n, b) in self.blocks.into_iter().enumerate() {
            match b {
                Partial::Text(text) if text.is_empty() => {}
                Partial::Text(text) => content.push(ContentBlock::Text { text }),
                Partial::Tool {
                    id,
                    name,
                    args,
                    initial,
                    ..
                } => {
                    let arguments = if args.trim().is_empty() {
                        initial.unwrap_or_else(|| Value::Object(Default::default()))
                    } else {
                        serde_json::from_str(&args).map_err(|e| {
                            Failure::malformed(format!(
                                "the arguments of tool call {name:?} are not valid JSON ({e}): {}",
                                preview(&args, 200)
                            ))
                        })?
                    };
                    // A call without an id could not be answered; give it a stable one.
                    let id = if id.is_empty() {
                        format!("call_{n}")
                    } else {
                        id
                    };
                    content.push(ContentBlock::ToolCall {
                        id,
                        name,
                        arguments,
                    });
                }
            }
        }
        Ok(content)
    }
}

/// At most `max` chars of `s`, with `…` when cut.
pub(crate) fn preview(s: &str, max: usize) -> String {
    let s = s.trim();
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

/// Reads a JSON number as u64 (absent or negative → 0).
pub(crate) fn num(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

/// Runs `body` through the SSE parser and `dec` in `piece`-byte chunks, as a stream would
/// arrive: the decoded parts, the events emitted, and whether output was emitted.
#[cfg(test)]
pub(crate) fn decode_in_pieces<D: Decoder>(
    mut dec: D,
    body: &str,
    piece: usize,
) -> (Result<Parts, Failure>, Vec<StreamEvent>, bool) {
    let mut events = Vec::new();
    let mut sink = |e: StreamEvent| events.push(e);
    let mut out = Emitter::new(&mut sink);
    let mut parser = crate::sse::SseParser::new();
    let mut ended = false;
    let mut failed = None;
    let mut evs = Vec::new();
    'outer: for c in body.as_bytes().chunks(piece) {
        parser.push(c, &mut evs).unwrap();
        for ev in evs.drain(..) {
            match dec.on_event(&ev, &mut out) {
                Ok(Flow::Done) => {
                    ended = true;
                    break 'outer;
                }
                Ok(Flow::More) => {}
                Err(f) => {
                    failed = Some(f);
                    break 'outer;
                }
            }
        }
    }
    let output = out.output;
    let r = match failed {
        Some(f) => Err(f),
        None => dec.finish(ended),
    };
    (r, events, output)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preview_cuts_on_char_boundaries() {
        assert_eq!(preview("  héllo ", 3), "hél…");
        assert_eq!(preview("abc", 3), "abc");
    }
}
