//! Small text helpers shared by the parsers.

/// Splits `line` into words at ASCII whitespace, honouring double and single quotes and
/// backslash escapes (as sshd's `argv_split` and `iptables -S` quoting do). Quotes are removed.
/// `None` when a quote is left open.
pub fn split_args(line: &str) -> Option<Vec<String>> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) if c == '\\' => match chars.next() {
                Some(next) => cur.push(next),
                None => return None,
            },
            Some(_) => cur.push(c),
            None if c == '"' || c == '\'' => {
                quote = Some(c);
                in_word = true;
            }
            None if c == '\\' => {
                if let Some(next) = chars.next() {
                    cur.push(next);
                }
                in_word = true;
            }
            None if c.is_ascii_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            None => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if quote.is_some() {
        return None;
    }
    if in_word {
        words.push(cur);
    }
    Some(words)
}

/// `line` without a trailing `# comment` (a `#` outside double quotes).
pub(crate) fn strip_comment(line: &str) -> &str {
    let mut in_quote = false;
    for (i, c) in line.char_indices() {
        match c {
            '"' => in_quote = !in_quote,
            '#' if !in_quote => return line.get(..i).unwrap_or(line),
            _ => {}
        }
    }
    line
}

/// Parses a port or a port range: `"22"`, `"8000-8002"`, `"8000:8002"` (iptables).
/// Rejects port 0 only as a range start/end mismatch; `end >= start` is required.
pub(crate) fn parse_port_range(s: &str) -> Option<(u16, u16)> {
    let s = s.trim();
    let (a, b) = match s.split_once(['-', ':']) {
        Some((a, b)) => (a, b),
        None => (s, s),
    };
    let start: u16 = a.parse().ok()?;
    let end: u16 = b.parse().ok()?;
    (end >= start).then_some((start, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_args_handles_quotes() {
        assert_eq!(
            split_args(r#"-A INPUT -m comment --comment "a b" -j ACCEPT"#),
            Some(
                [
                    "-A",
                    "INPUT",
                    "-m",
                    "comment",
                    "--comment",
                    "a b",
                    "-j",
                    "ACCEPT"
                ]
                .map(String::from)
                .to_vec()
            )
        );
        assert_eq!(split_args("a \"b"), None);
        assert_eq!(split_args(""), Some(vec![]));
        assert_eq!(
            split_args(r#"x "" y"#),
            Some(["x", "", "y"].map(String::from).to_vec())
        );
    }

    #[test]
    fn strip_comment_respects_quotes() {
        assert_eq!(strip_comment(r##"a "#b" # c"##), r##"a "#b" "##);
        assert_eq!(strip_comment("abc"), "abc");
    }

    #[test]
    fn port_ranges() {
        assert_eq!(parse_port_range("22"), Some((22, 22)));
        assert_eq!(parse_port_range("8000-8002"), Some((8000, 8002)));
        assert_eq!(parse_port_range("8000:8002"), Some((8000, 8002)));
        assert_eq!(parse_port_range("9-1"), None);
        assert_eq!(parse_port_range("70000"), None);
        assert_eq!(parse_port_range("x"), None);
    }
}
