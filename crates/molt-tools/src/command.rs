//! The program names a shell line runs, for `tools.exec.security = "allowlist"`.
//!
//! [`command_names`] reads a line the way a POSIX shell splits it into simple commands
//! (`;`, `&&`, `||`, `|`, `|&`, `&`, newlines, `( … )` groups, `if`/`while` bodies) and
//! returns the program name of each, so the allowlist can decide on every one of them.
//! Leading `VAR=value` assignments and redirections (`2>&1`, `> out`, `<<EOF` with its
//! here-document body) are skipped; quotes and backslashes are removed as the shell
//! would.
//!
//! It refuses, with a reason, what it cannot see through statically: command
//! substitution (`$(…)`, `` `…` ``, also inside double quotes and unquoted
//! here-documents), process substitution (`<(…)`, `>(…)`), arithmetic (`$((…))`, `((…))`),
//! a program name that comes from an expansion (`$CMD`) or a glob/brace pattern,
//! `eval` and `exec`, function definitions, and the compound commands whose words are
//! not commands (`for`, `case`, `select`, `coproc`, `function`). Nested shells such as
//! `bash -c '…'` are returned as `bash`: whether a shell is allowed is the allowlist's
//! decision, and allowing one allows everything.
//!
//! This is a gate in front of a shell, not a shell: when in doubt it refuses.

/// The basename of the program of every simple command in `line`, in order.
///
/// `/usr/bin/git status` gives `git`. An empty line (or one with only assignments or
/// comments) gives an empty list. `Err` carries a reason written for the model, e.g.
/// "command substitution `$(…)` cannot be checked against the allowlist".
///
/// Note that the basename of `./bin/ls` is `ls`: an allowlist that allows `ls` allows any
/// program named `ls`, including one the agent wrote into its workspace. Callers that
/// care use [`command_programs`], which gives the words as written.
pub fn command_names(line: &str) -> Result<Vec<String>, String> {
    Ok(command_programs(line)?
        .into_iter()
        .map(|p| match p.rsplit_once('/') {
            Some((_, base)) if !base.is_empty() => base.to_owned(),
            _ => p,
        })
        .collect())
}

/// The program word of every simple command in `line`, as written after quote removal
/// (`./bin/ls`, `/usr/bin/git`, `cargo`). Same rules and refusals as [`command_names`].
pub fn command_programs(line: &str) -> Result<Vec<String>, String> {
    let tokens = tokenize(line)?;
    parse(&tokens)
}

#[derive(Debug, PartialEq)]
enum Token {
    Word(Word),
    /// A separator between commands: `;`, `&`, `&&`, `||`, `|`, `|&`, newline, `(`, `)`.
    Op(&'static str),
    /// A redirection operator; the next word is its target, not a command.
    Redir,
}

#[derive(Debug, PartialEq, Default)]
struct Word {
    text: String,
    /// No unquoted or double-quoted `$` expansion in it.
    literal: bool,
    /// An unquoted glob or brace character in it.
    pattern: bool,
    /// Any part of it was quoted or escaped.
    quoted: bool,
    /// Byte index in `text` of the first quoted character, if any.
    first_quoted_at: Option<usize>,
}

struct WordBuf {
    word: Word,
    started: bool,
}

impl WordBuf {
    fn new() -> Self {
        Self {
            word: Word {
                literal: true,
                ..Word::default()
            },
            started: false,
        }
    }
    fn push(&mut self, c: char) {
        self.started = true;
        self.word.text.push(c);
    }
    fn push_quoted(&mut self, c: char) {
        self.mark_quoted();
        self.word.text.push(c);
    }
    fn mark_quoted(&mut self) {
        self.started = true;
        self.word.quoted = true;
        if self.word.first_quoted_at.is_none() {
            self.word.first_quoted_at = Some(self.word.text.len());
        }
    }
    fn take(&mut self) -> Option<Word> {
        if !self.started {
            return None;
        }
        let w = std::mem::replace(self, WordBuf::new());
        Some(w.word)
    }
}

const SUBSTITUTION: &str = "command substitution `$(…)` cannot be checked against the allowlist; run the inner command on its own first";
const BACKTICKS: &str =
    "command substitution with backticks cannot be checked against the allowlist";

/// A here-document whose body is still to be skipped at the next newline.
struct PendingHeredoc {
    delimiter: String,
    strip_tabs: bool,
    /// An unquoted delimiter means the body is expanded, so substitutions in it run.
    expands: bool,
}

fn tokenize(line: &str) -> Result<Vec<Token>, String> {
    let chars: Vec<char> = line.chars().collect();
    let mut tokens = Vec::new();
    let mut buf = WordBuf::new();
    let mut i = 0;
    // After `<<` or `<<-`: the next word is a here-document delimiter.
    let mut heredoc_next: Option<bool> = None;
    let mut pending: Vec<PendingHeredoc> = Vec::new();

    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        match c {
            ' ' | '\t' | '\r' => finish(&mut buf, &mut tokens, &mut heredoc_next, &mut pending),
            '\\' => match next {
                Some('\n') => i += 1,
                Some(n) => {
                    buf.push_quoted(n);
                    i += 1;
                }
                None => buf.push_quoted('\\'),
            },
            '\'' => {
                buf.mark_quoted();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err("a single quote is not closed".to_owned()),
                        Some('\'') => break,
                        Some(&ch) => buf.word.text.push(ch),
                    }
                    i += 1;
                }
            }
            '"' => {
                i = double_quoted(&chars, i + 1, &mut buf)?;
            }
            '`' => return Err(BACKTICKS.to_owned()),
            '$' => match next {
                Some('(') => return Err(SUBSTITUTION.to_owned()),
                Some('\'') => {
                    // ANSI-C quoting: $'…' with backslash escapes.
                    buf.mark_quoted();
                    i += 2;
                    loop {
                        match chars.get(i) {
                            None => return Err("a $'…' quote is not closed".to_owned()),
                            Some('\'') => break,
                            Some('\\') => {
                                i += 1;
                                match chars.get(i) {
                                    Some(&e) => buf.word.text.push(e),
                                    None => return Err("a $'…' quote is not closed".to_owned()),
                                }
                            }
                            Some(&ch) => buf.word.text.push(ch),
                        }
                        i += 1;
                    }
                }
                Some('"') => {
                    i = double_quoted(&chars, i + 2, &mut buf)?;
                }
                _ => {
                    buf.word.literal = false;
                    buf.push('$');
                }
            },
            '#' if !buf.started => {
                while i + 1 < chars.len() && chars[i + 1] != '\n' {
                    i += 1;
                }
            }
            '\n' => {
                finish(&mut buf, &mut tokens, &mut heredoc_next, &mut pending);
                tokens.push(Token::Op("\n"));
                if !pending.is_empty() {
                    i = skip_heredoc_bodies(&chars, i + 1, &mut pending)?;
                    continue;
                }
            }
            ';' => {
                finish(&mut buf, &mut tokens, &mut heredoc_next, &mut pending);
                if next == Some(';') || next == Some('&') {
                    return Err("`;;` belongs to `case`, which cannot be checked against the allowlist; write the commands out".to_owned());
                }
                tokens.push(Token::Op(";"));
            }
            '&' => {
                finish(&mut buf, &mut tokens, &mut heredoc_next, &mut pending);
                match next {
                    Some('&') => {
                        tokens.push(Token::Op("&&"));
                        i += 1;
                    }
                    Some('>') => {
                        // `&>file` and `&>>file`.
                        i += if chars.get(i + 2) == Some(&'>') { 2 } else { 1 };
                        tokens.push(Token::Redir);
                    }
                    _ => tokens.push(Token::Op("&")),
                }
            }
            '|' => {
                finish(&mut buf, &mut tokens, &mut heredoc_next, &mut pending);
                match next {
                    Some('|') => {
                        tokens.push(Token::Op("||"));
                        i += 1;
                    }
                    Some('&') => {
                        tokens.push(Token::Op("|&"));
                        i += 1;
                    }
                    _ => tokens.push(Token::Op("|")),
                }
            }
            '(' | ')' => {
                finish(&mut buf, &mut tokens, &mut heredoc_next, &mut pending);
                if c == '(' && next == Some('(') {
                    return Err(
                        "arithmetic `((…))` cannot be checked against the allowlist".to_owned()
                    );
                }
                tokens.push(Token::Op(if c == '(' { "(" } else { ")" }));
            }
            '<' | '>' => {
                if next == Some('(') {
                    return Err("process substitution `<(…)` / `>(…)` cannot be checked against the allowlist; write to a file first".to_owned());
                }
                // A file-descriptor number right before the operator (`2>`) is not a word.
                let fd_prefix = buf.started
                    && !buf.word.quoted
                    && !buf.word.text.is_empty()
                    && buf.word.text.chars().all(|d| d.is_ascii_digit());
                if fd_prefix {
                    buf = WordBuf::new();
                } else {
                    finish(&mut buf, &mut tokens, &mut heredoc_next, &mut pending);
                }
                let rest: String = chars[i..chars.len().min(i + 3)].iter().collect();
                let (len, heredoc) = if rest.starts_with("<<<") {
                    (3, None)
                } else if rest.starts_with("<<-") {
                    (3, Some(true))
                } else if rest.starts_with("<<") {
                    (2, Some(false))
                } else if rest.starts_with("<&")
                    || rest.starts_with("<>")
                    || rest.starts_with(">>")
                    || rest.starts_with(">&")
                    || rest.starts_with(">|")
                {
                    (2, None)
                } else {
                    (1, None)
                };
                i += len - 1;
                tokens.push(Token::Redir);
                heredoc_next = heredoc;
            }
            '*' | '?' | '[' | '{' => {
                buf.word.pattern = true;
                buf.push(c);
            }
            _ => buf.push(c),
        }
        i += 1;
    }
    finish(&mut buf, &mut tokens, &mut heredoc_next, &mut pending);
    Ok(tokens)
}

/// Ends the current word, if any; a word right after `<<` becomes a pending here-document.
fn finish(
    buf: &mut WordBuf,
    tokens: &mut Vec<Token>,
    heredoc_next: &mut Option<bool>,
    pending: &mut Vec<PendingHeredoc>,
) {
    if let Some(w) = buf.take() {
        if let Some(strip_tabs) = heredoc_next.take() {
            pending.push(PendingHeredoc {
                expands: !w.quoted,
                delimiter: w.text.clone(),
                strip_tabs,
            });
        }
        tokens.push(Token::Word(w));
    }
}

/// Reads a double-quoted part starting after the opening quote; returns the index of the
/// closing quote.
fn double_quoted(chars: &[char], mut i: usize, buf: &mut WordBuf) -> Result<usize, String> {
    buf.mark_quoted();
    loop {
        match chars.get(i) {
            None => return Err("a double quote is not closed".to_owned()),
            Some('"') => return Ok(i),
            Some('`') => return Err(BACKTICKS.to_owned()),
            Some('$') => {
                if chars.get(i + 1) == Some(&'(') {
                    return Err(SUBSTITUTION.to_owned());
                }
                buf.word.literal = false;
                buf.word.text.push('$');
            }
            Some('\\') => match chars.get(i + 1) {
                Some(&e @ ('$' | '`' | '"' | '\\')) => {
                    buf.word.text.push(e);
                    i += 1;
                }
                Some('\n') => i += 1,
                _ => buf.word.text.push('\\'),
            },
            Some(&ch) => buf.word.text.push(ch),
        }
        i += 1;
    }
}

/// Skips the bodies of pending here-documents starting at `i` (the start of the line after
/// the one that introduced them); returns the index after the last delimiter line.
fn skip_heredoc_bodies(
    chars: &[char],
    mut i: usize,
    pending: &mut Vec<PendingHeredoc>,
) -> Result<usize, String> {
    for doc in pending.drain(..) {
        loop {
            if i >= chars.len() {
                // Unterminated: the shell reads the body to the end of input.
                break;
            }
            let end = chars[i..]
                .iter()
                .position(|&c| c == '\n')
                .map_or(chars.len(), |p| i + p);
            let line: String = chars[i..end].iter().collect();
            i = end + 1;
            let compared = if doc.strip_tabs {
                line.trim_start_matches('\t')
            } else {
                line.as_str()
            };
            if compared == doc.delimiter {
                break;
            }
            if doc.expands && (line.contains("$(") || line.contains('`')) {
                return Err(format!(
                    "the here-document ending at {:?} contains a command substitution, which cannot be checked against the allowlist; quote the delimiter (<<'{}') to keep its text literal",
                    doc.delimiter, doc.delimiter
                ));
            }
        }
    }
    Ok(i.min(chars.len()))
}

fn is_assignment(w: &Word) -> bool {
    let Some(eq) = w.text.find('=') else {
        return false;
    };
    if w.first_quoted_at.is_some_and(|q| q < eq) || eq == 0 {
        return false;
    }
    let name = &w.text[..eq];
    let mut cs = name.chars();
    cs.next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && cs.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn parse(tokens: &[Token]) -> Result<Vec<String>, String> {
    let mut names = Vec::new();
    // True until the current simple command has its program word.
    let mut at_start = true;
    let mut skip_next_word = false;
    let mut in_test = false;
    for (idx, tok) in tokens.iter().enumerate() {
        match tok {
            Token::Op(op) => {
                if skip_next_word {
                    return Err(format!("a redirection has no target before `{op}`"));
                }
                if *op == "(" && !at_start {
                    return Err(
                        "function definitions cannot be checked against the allowlist".to_owned(),
                    );
                }
                at_start = true;
            }
            Token::Redir => {
                if skip_next_word {
                    return Err("two redirections in a row".to_owned());
                }
                skip_next_word = true;
            }
            Token::Word(w) => {
                if skip_next_word {
                    skip_next_word = false;
                    continue;
                }
                if in_test {
                    if w.text == "]]" && !w.quoted {
                        in_test = false;
                    }
                    continue;
                }
                if !at_start {
                    continue;
                }
                if is_assignment(w) {
                    continue;
                }
                if !w.quoted {
                    match w.text.as_str() {
                        "if" | "then" | "else" | "elif" | "do" | "while" | "until" | "!" | "{"
                        | "time" | "fi" | "done" | "}" => continue,
                        "[[" => {
                            in_test = true;
                            continue;
                        }
                        kw @ ("for" | "case" | "select" | "coproc" | "function" | "esac") => {
                            return Err(format!(
                                "`{kw}` cannot be checked against the allowlist; write the commands out one by one"
                            ));
                        }
                        _ => {}
                    }
                }
                if !w.literal {
                    return Err(format!(
                        "the program name {:?} comes from a variable expansion; name the program directly",
                        w.text
                    ));
                }
                if w.pattern {
                    return Err(format!(
                        "the program name {:?} is a glob or brace pattern; name the program directly",
                        w.text
                    ));
                }
                if w.text.is_empty() {
                    return Err("an empty program name".to_owned());
                }
                if matches!(w.text.as_str(), "eval" | "exec") && !w.quoted {
                    return Err(format!(
                        "`{}` runs code that cannot be checked against the allowlist; run the command directly",
                        w.text
                    ));
                }
                if matches!(tokens.get(idx + 1), Some(Token::Op("("))) {
                    return Err(
                        "function definitions cannot be checked against the allowlist".to_owned(),
                    );
                }
                names.push(w.text.clone());
                at_start = false;
            }
        }
    }
    if skip_next_word {
        return Err("a redirection at the end has no target".to_owned());
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(line: &str) -> Vec<String> {
        match command_names(line) {
            Ok(n) => n,
            Err(e) => panic!("{line:?} was refused: {e}"),
        }
    }

    fn refused(line: &str) -> String {
        match command_names(line) {
            Ok(n) => panic!("{line:?} was accepted as {n:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn simple_commands_and_separators() {
        assert_eq!(names("ls -la"), ["ls"]);
        assert_eq!(
            names("cd src && cargo build --release | tee log; echo done"),
            ["cd", "cargo", "tee", "echo"]
        );
        assert_eq!(names("false || true"), ["false", "true"]);
        assert_eq!(names("sleep 1 & wait"), ["sleep", "wait"]);
        assert_eq!(names("a\nb\n\nc"), ["a", "b", "c"]);
        assert_eq!(names("ls|&cat"), ["ls", "cat"]);
        assert_eq!(names("( cd x; make )"), ["cd", "make"]);
        assert_eq!(names("{ ls; pwd; }"), ["ls", "pwd"]);
        assert_eq!(names(""), Vec::<String>::new());
        assert_eq!(names("   \n  "), Vec::<String>::new());
    }

    #[test]
    fn basenames_and_programs_as_written() {
        assert_eq!(names("/usr/bin/git status"), ["git"]);
        assert_eq!(names("./bin/ls"), ["ls"]);
        assert_eq!(
            command_programs("./bin/ls && /usr/bin/git").ok(),
            Some(vec!["./bin/ls".to_owned(), "/usr/bin/git".to_owned()])
        );
    }

    #[test]
    fn assignments_are_skipped() {
        assert_eq!(names("FOO=1 BAR='x y' make test"), ["make"]);
        assert_eq!(names("x=1"), Vec::<String>::new());
        // A quoted `=` is not an assignment: the shell runs a program named `A=1`.
        assert_eq!(names("'A=1' x"), ["A=1"]);
        assert_eq!(names("PATH=/tmp:$PATH ls"), ["ls"]);
    }

    #[test]
    fn quotes_and_escapes_are_removed() {
        assert_eq!(names("echo 'a;b|c' \"d && e\""), ["echo"]);
        assert_eq!(names("\"e\"cho hi"), ["echo"]);
        assert_eq!(names("e\\cho hi"), ["echo"]);
        assert_eq!(names("echo '$(id)' '`id`'"), ["echo"]);
        assert_eq!(names("echo a\\;b; pwd"), ["echo", "pwd"]);
        assert_eq!(names("ls \\\n -l"), ["ls"]);
        assert_eq!(names("$'l\\s' x"), ["ls"]);
    }

    #[test]
    fn redirections_are_not_commands() {
        assert_eq!(names("2>&1 ls > out.txt"), ["ls"]);
        assert_eq!(names("ls 2>/dev/null"), ["ls"]);
        assert_eq!(names("> f echo hi"), ["echo"]);
        assert_eq!(names("cmd &>log; cat <in >>out"), ["cmd", "cat"]);
        assert_eq!(names("grep x <<< 'rm -rf /'"), ["grep"]);
        assert!(refused("ls >").contains("no target"));
    }

    #[test]
    fn heredoc_bodies_are_skipped_and_checked() {
        assert_eq!(names("cat <<EOF\nrm -rf /\nEOF\nls"), ["cat", "ls"]);
        assert_eq!(names("cat <<-END\n\trm x\n\tEND\npwd"), ["cat", "pwd"]);
        assert_eq!(names("cat <<'EOF'\n$(id)\nEOF"), ["cat"]);
        assert!(refused("cat <<EOF\n$(id)\nEOF").contains("here-document"));
    }

    #[test]
    fn compound_commands() {
        assert_eq!(
            names("if true; then echo y; else echo n; fi"),
            ["true", "echo", "echo"]
        );
        assert_eq!(
            names("while read l; do echo \"$l\"; done < f"),
            ["read", "echo"]
        );
        assert_eq!(names("! grep -q x f"), ["grep"]);
        assert_eq!(names("[[ -f x ]] && cat x"), ["cat"]);
        assert!(refused("for x in a b; do echo $x; done").contains("for"));
        assert!(refused("case $x in a) ls;; esac").contains("case"));
        assert!(refused("f() { rm -rf /; }; f").contains("function"));
        assert!(refused("((x = 1 + 2))").contains("arithmetic"));
    }

    #[test]
    fn substitutions_are_refused() {
        assert!(refused("echo $(whoami)").contains("substitution"));
        assert!(refused("echo \"$(whoami)\"").contains("substitution"));
        assert!(refused("echo `id`").contains("backticks"));
        assert!(refused("echo \"`id`\"").contains("backticks"));
        assert!(refused("diff <(ls a) <(ls b)").contains("process substitution"));
        assert!(refused("tee >(cat)").contains("process substitution"));
        assert!(refused("echo $((1+2))").contains("substitution"));
        assert!(refused("X=$(id) ls").contains("substitution"));
    }

    #[test]
    fn unanalysable_program_names_are_refused() {
        assert!(refused("$CMD arg").contains("variable"));
        assert!(refused("\"$CMD\" arg").contains("variable"));
        assert!(refused("${CMD} arg").contains("variable"));
        assert!(refused("l? -a").contains("glob"));
        assert!(refused("{ls,-la}").contains("brace"));
        assert!(refused("eval ls").contains("eval"));
        assert!(refused("exec ls").contains("exec"));
        assert!(refused("echo 'open").contains("not closed"));
        assert!(refused("echo \"open").contains("not closed"));
        assert!(refused("'' x").contains("empty"));
    }

    #[test]
    fn nested_shells_are_named_for_the_allowlist() {
        assert_eq!(names("bash -c 'rm -rf /'"), ["bash"]);
        assert_eq!(names("sh -c \"ls; id\""), ["sh"]);
        assert_eq!(names("env FOO=1 rm x"), ["env"]);
    }

    #[test]
    fn comments_end_at_the_line() {
        assert_eq!(names("ls # comment; rm -rf /"), ["ls"]);
        assert_eq!(names("# only a comment\npwd"), ["pwd"]);
        assert_eq!(names("echo a#b"), ["echo"]);
    }
}
