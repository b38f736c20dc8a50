//! What the fake model answers with: [`Reply`] and its builders.

use std::time::Duration;

use serde_json::Value;

/// The text of the initial default reply (see [`crate::FakeModel::set_default`]).
pub const DEFAULT_TEXT: &str = "Hello from the fake model.";

/// One tool call in a streamed reply.
///
/// The id is sent verbatim in both APIs (`tool_calls[].id` for OpenAI, the `tool_use`
/// block's `id` for Anthropic), so a test can match it against the tool result the client
/// sends back.
#[derive(Clone, Debug, PartialEq)]
pub struct ToolCall {
    /// The call's id, such as `call_1` or `toolu_1`.
    pub id: String,
    /// The tool's name, such as `exec`.
    pub name: String,
    /// The arguments; streamed as its compact JSON text, split into at least two pieces.
    pub input: Value,
}

impl ToolCall {
    /// A tool call with this id, tool name and arguments.
    pub fn new(id: impl Into<String>, name: impl Into<String>, input: Value) -> ToolCall {
        ToolCall {
            id: id.into(),
            name: name.into(),
            input,
        }
    }
}

/// What a reply does, apart from its modifiers.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Kind {
    /// A complete stream: text deltas, then tool calls.
    Stream {
        text: Vec<String>,
        tool_calls: Vec<ToolCall>,
    },
    /// A JSON error body with this status, in the API's shape.
    Status(u16),
    /// 400 with the API's context-length error.
    ContextLength,
    /// The default text stream with its second data chunk replaced by `{not json`.
    Malformed,
    /// A text stream cut off (connection aborted) after this many data chunks.
    DisconnectAfter(usize),
}

/// One scripted answer to one request; the same reply works for both APIs.
///
/// Build one with a constructor ([`Reply::text`], [`Reply::tool_call`], [`Reply::status`],
/// ...) and adjust it with the modifiers ([`Reply::interval`], [`Reply::usage`],
/// [`Reply::retry_after_secs`], ...). Replies compare equal when built the same way, so a
/// test can check which reply a recorded request got.
#[derive(Clone, Debug, PartialEq)]
pub struct Reply {
    pub(crate) kind: Kind,
    pub(crate) interval: Duration,
    pub(crate) usage: Option<(u64, u64)>,
    pub(crate) retry_after: Option<u64>,
    pub(crate) message: Option<String>,
}

impl Default for Reply {
    /// The initial default reply: [`DEFAULT_TEXT`] in three chunks.
    fn default() -> Reply {
        Reply::text(DEFAULT_TEXT)
    }
}

impl Reply {
    fn of(kind: Kind) -> Reply {
        Reply {
            kind,
            interval: Duration::ZERO,
            usage: None,
            retry_after: None,
            message: None,
        }
    }

    /// A streamed text reply, split into up to three chunks (fewer for very short text; an
    /// empty text streams no content at all).
    pub fn text(text: impl AsRef<str>) -> Reply {
        Reply::text_chunks(split_chars(text.as_ref(), 3))
    }

    /// A streamed text reply with exactly one delta per chunk, in order.
    pub fn text_chunks<I, S>(chunks: I) -> Reply
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Reply::of(Kind::Stream {
            text: chunks.into_iter().map(Into::into).collect(),
            tool_calls: Vec::new(),
        })
    }

    /// A streamed reply with one tool call and no text (finish reason `tool_calls` /
    /// stop reason `tool_use`). Add leading text with [`Reply::with_text`] and more calls
    /// with [`Reply::and_tool_call`].
    pub fn tool_call(id: impl Into<String>, name: impl Into<String>, input: Value) -> Reply {
        Reply::tool_calls([ToolCall::new(id, name, input)])
    }

    /// A streamed reply with these tool calls, in order, and no text.
    pub fn tool_calls(calls: impl IntoIterator<Item = ToolCall>) -> Reply {
        Reply::of(Kind::Stream {
            text: Vec::new(),
            tool_calls: calls.into_iter().collect(),
        })
    }

    /// An error with this HTTP status and a JSON body in the API's shape: 400
    /// `invalid_request_error`, 401 authentication, 429 rate limit, 529 overloaded
    /// (Anthropic), 5xx server error. Add a `retry-after` header with
    /// [`Reply::retry_after_secs`].
    pub fn status(code: u16) -> Reply {
        Reply::of(Kind::Status(code))
    }

    /// 400 with the API's context-length error (`context_length_exceeded` for OpenAI,
    /// `prompt is too long: ...` for Anthropic).
    pub fn context_length() -> Reply {
        Reply::of(Kind::ContextLength)
    }

    /// The default text stream with its second SSE data chunk replaced by `{not json`;
    /// everything else is sent as usual.
    pub fn malformed() -> Reply {
        Reply::of(Kind::Malformed)
    }

    /// A text stream that sends `n_chunks` SSE data chunks and then aborts the connection
    /// without finishing the response (no final chunk, no `[DONE]` / `message_stop`).
    pub fn disconnect_after(n_chunks: usize) -> Reply {
        Reply::of(Kind::DisconnectAfter(n_chunks))
    }

    /// Waits this long before every SSE chunk but the first, so a test can act mid-stream.
    pub fn interval(mut self, interval: Duration) -> Reply {
        self.interval = interval;
        self
    }

    /// Reports these token counts instead of the derived ones (prompt ≈ request body bytes
    /// / 4, completion ≈ bytes of streamed text and arguments / 4, each at least 1).
    pub fn usage(mut self, prompt_tokens: u64, completion_tokens: u64) -> Reply {
        self.usage = Some((prompt_tokens, completion_tokens));
        self
    }

    /// Adds a `retry-after: <secs>` header to an error reply.
    pub fn retry_after_secs(mut self, secs: u64) -> Reply {
        self.retry_after = Some(secs);
        self
    }

    /// Replaces the error message of an error reply.
    pub fn message(mut self, message: impl Into<String>) -> Reply {
        self.message = Some(message.into());
        self
    }

    /// Sets the text streamed before the tool calls, split as [`Reply::text`] does.
    ///
    /// # Panics
    /// If this is not a text or tool-call reply: that is a mistake in the test's script.
    pub fn with_text(mut self, text: impl AsRef<str>) -> Reply {
        match &mut self.kind {
            Kind::Stream { text: chunks, .. } => *chunks = split_chars(text.as_ref(), 3),
            other => {
                panic!("Reply::with_text applies to text and tool-call replies, not {other:?}")
            }
        }
        self
    }

    /// Appends one more tool call.
    ///
    /// # Panics
    /// If this is not a text or tool-call reply: that is a mistake in the test's script.
    pub fn and_tool_call(
        mut self,
        id: impl Into<String>,
        name: impl Into<String>,
        input: Value,
    ) -> Reply {
        match &mut self.kind {
            Kind::Stream { tool_calls, .. } => tool_calls.push(ToolCall::new(id, name, input)),
            other => {
                panic!("Reply::and_tool_call applies to text and tool-call replies, not {other:?}")
            }
        }
        self
    }

    /// The HTTP status this reply answers with (200 for every streamed reply).
    pub fn status_code(&self) -> u16 {
        match self.kind {
            Kind::Status(code) => code,
            Kind::ContextLength => 400,
            Kind::Stream { .. } | Kind::Malformed | Kind::DisconnectAfter(_) => 200,
        }
    }

    /// The streamed text, concatenated (empty for error replies).
    pub fn text_content(&self) -> String {
        match &self.kind {
            Kind::Stream { text, .. } => text.concat(),
            Kind::Malformed => DEFAULT_TEXT.to_owned(),
            Kind::DisconnectAfter(n) => disconnect_chunks(*n).concat(),
            Kind::Status(_) | Kind::ContextLength => String::new(),
        }
    }
}

/// The text chunks a [`Reply::disconnect_after`] stream is cut from: more than it will send,
/// so the cut always falls before the end.
pub(crate) fn disconnect_chunks(n_chunks: usize) -> Vec<String> {
    (1..=n_chunks + 1).map(|i| format!("chunk {i} ")).collect()
}

/// Splits `s` into up to `parts` pieces of nearly equal length, on char boundaries.
pub(crate) fn split_chars(s: &str, parts: usize) -> Vec<String> {
    let chars: Vec<char> = s.chars().collect();
    let n = chars.len();
    let parts = parts.min(n);
    (0..parts)
        .map(|i| chars[i * n / parts..(i + 1) * n / parts].iter().collect())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_keeps_all_text() {
        assert_eq!(split_chars("", 3), Vec::<String>::new());
        assert_eq!(split_chars("ab", 3), vec!["a", "b"]);
        let parts = split_chars("héllo wörld", 3);
        assert_eq!(parts.len(), 3);
        assert_eq!(parts.concat(), "héllo wörld");
    }

    #[test]
    fn default_is_three_chunks() {
        match Reply::default().kind {
            Kind::Stream { text, tool_calls } => {
                assert_eq!(text.len(), 3);
                assert_eq!(text.concat(), DEFAULT_TEXT);
                assert!(tool_calls.is_empty());
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
