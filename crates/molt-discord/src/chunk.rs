//! Splitting a reply into messages Discord accepts.

/// The most characters one Discord message may hold.
pub const MESSAGE_LIMIT: usize = 2000;

/// Splits `text` into pieces of at most `limit` characters, in order. A piece ends after the
/// last newline within the limit, else after the last space, else at the limit; so the
/// pieces concatenate back to `text`. Pieces that are only whitespace are dropped (Discord
/// refuses an empty message).
pub fn chunk_text(text: &str, limit: usize) -> Vec<String> {
    let limit = limit.max(1);
    let mut out = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        // Byte offset just past `limit` characters (or the whole rest).
        let end = rest
            .char_indices()
            .nth(limit)
            .map(|(i, _)| i)
            .unwrap_or(rest.len());
        let cut = if end == rest.len() {
            end
        } else {
            let window = &rest[..end];
            // A break keeps at least a quarter of the limit, so a leading newline does not
            // produce a flood of tiny messages.
            let min = window
                .char_indices()
                .nth(limit / 4)
                .map(|(i, _)| i)
                .unwrap_or(0);
            match window.rfind('\n').filter(|&i| i >= min) {
                Some(i) => i + 1,
                None => match window.rfind(' ').filter(|&i| i >= min) {
                    Some(i) => i + 1,
                    None => end,
                },
            }
        };
        let (piece, tail) = rest.split_at(cut);
        if !piece.trim().is_empty() {
            out.push(piece.to_owned());
        }
        rest = tail;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_one_piece() {
        assert_eq!(chunk_text("hello", 2000), vec!["hello".to_owned()]);
        assert!(chunk_text("", 2000).is_empty());
        assert!(chunk_text("  \n ", 2000).is_empty());
    }

    #[test]
    fn pieces_respect_the_limit_and_concatenate_back() {
        let text: String = (0..900).map(|i| format!("word{i} ")).collect();
        let pieces = chunk_text(&text, 2000);
        assert!(pieces.len() >= 3, "{}", pieces.len());
        assert!(pieces.iter().all(|p| p.chars().count() <= 2000));
        assert_eq!(pieces.concat(), text);
        // Split on spaces: no word is cut.
        assert!(pieces.iter().all(|p| p.ends_with(' ')));
    }

    #[test]
    fn newlines_are_preferred_over_spaces() {
        let line = "a ".repeat(40) + "\n";
        let text = line.repeat(60);
        let pieces = chunk_text(&text, 2000);
        assert!(pieces.iter().all(|p| p.ends_with('\n')), "{pieces:?}");
        assert_eq!(pieces.concat(), text);
    }

    #[test]
    fn a_long_word_is_cut_at_the_limit_and_multibyte_text_stays_whole() {
        let text = "é".repeat(4500);
        let pieces = chunk_text(&text, 2000);
        assert_eq!(
            pieces.iter().map(|p| p.chars().count()).collect::<Vec<_>>(),
            vec![2000, 2000, 500]
        );
        assert_eq!(pieces.concat(), text);
    }
}
