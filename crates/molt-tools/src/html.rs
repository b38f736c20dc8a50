//! HTML to readable text, for `web_fetch`.
//!
//! A small single-pass converter rather than a full HTML5 parser: the model needs the
//! words, the structure (paragraphs, headings, list items, line breaks) and the links,
//! not a DOM. It drops `script`, `style`, `noscript`, `template`, `svg`, `iframe`,
//! `object` and comments; turns block elements into line breaks; decodes character
//! references; collapses whitespace outside `pre`; keeps the `<title>` as a first line;
//! and, in Markdown mode, writes headings as `#`, list items as `-`/`1.`, preformatted
//! text in fences and links as `[text](absolute url)`. Malformed markup degrades to
//! text, never to an error. (A full parser crate, html5ever with its tree, would add a
//! dozen crates and a large build for little gain on this job.)

use reqwest::Url;

/// Converts `html` to text; `markdown` keeps headings, lists and links as Markdown.
/// Relative links are resolved against `base`.
pub fn to_text(html: &str, markdown: bool, base: Option<&Url>) -> String {
    let mut c = Converter {
        out: Out::default(),
        markdown,
        base,
        title: None,
        in_title: false,
        skip_depth: 0,
        pre_depth: 0,
        lists: Vec::new(),
        link: None,
    };
    c.run(html);
    let body = normalize(&c.out.s);
    match c.title.map(|t| collapse_ws(&t)).filter(|t| !t.is_empty()) {
        Some(t) if !body.starts_with(&t) && !body.starts_with(&format!("# {t}")) => {
            if markdown {
                format!("# {t}\n\n{body}")
            } else {
                format!("{t}\n\n{body}")
            }
        }
        _ => body,
    }
}

#[derive(Default)]
struct Out {
    s: String,
    /// Line breaks owed before the next text (1 = new line, 2 = new paragraph).
    pending_breaks: u8,
    /// A space is owed before the next text.
    pending_space: bool,
    /// Written right before the next text (a list bullet, a heading mark, a link's `[`).
    prefix: String,
}

impl Out {
    fn block(&mut self, breaks: u8) {
        self.pending_breaks = self.pending_breaks.max(breaks);
        self.pending_space = false;
    }

    fn flush(&mut self) {
        if !self.s.is_empty() {
            let have = self.s.chars().rev().take_while(|&c| c == '\n').count() as u8;
            for _ in have..self.pending_breaks {
                self.s.push('\n');
            }
            if self.pending_breaks == 0 && self.pending_space && !self.s.ends_with([' ', '\n']) {
                self.s.push(' ');
            }
        }
        self.pending_breaks = 0;
        self.pending_space = false;
        if !self.prefix.is_empty() {
            let p = std::mem::take(&mut self.prefix);
            self.s.push_str(&p);
        }
    }

    /// Text with whitespace collapsed.
    fn text(&mut self, t: &str) {
        for (i, word) in t.split(|c: char| c.is_whitespace()).enumerate() {
            if i > 0 {
                self.pending_space = true;
            }
            if word.is_empty() {
                continue;
            }
            self.flush();
            self.s.push_str(word);
        }
    }

    /// Text kept as it is (inside `pre`).
    fn raw(&mut self, t: &str) {
        if t.is_empty() {
            return;
        }
        self.flush();
        self.s.push_str(t);
    }

    fn line_break(&mut self) {
        self.pending_breaks = 0;
        self.pending_space = false;
        self.s.push('\n');
    }
}

struct Link {
    url: Option<String>,
    /// Where the link's text starts in the output, once some was written.
    opened: bool,
}

struct Converter<'a> {
    out: Out,
    markdown: bool,
    base: Option<&'a Url>,
    title: Option<String>,
    in_title: bool,
    /// Inside elements whose content is not text (`svg`, `template`, …).
    skip_depth: u32,
    pre_depth: u32,
    /// Open lists: `None` for `ul`, `Some(next number)` for `ol`.
    lists: Vec<Option<u32>>,
    link: Option<Link>,
}

/// Elements whose content is raw text up to the matching end tag.
const RAW_TEXT: &[&str] = &["script", "style", "textarea", "xmp", "iframe", "noembed"];
/// Elements whose content is dropped.
const SKIPPED: &[&str] = &["noscript", "template", "svg", "object", "canvas", "select"];

impl Converter<'_> {
    fn run(&mut self, html: &str) {
        let mut i = 0;
        while i < html.len() {
            let Some(lt) = html[i..].find('<').map(|p| i + p) else {
                self.text(&html[i..]);
                break;
            };
            if lt > i {
                self.text(&html[i..lt]);
            }
            let rest = &html[lt..];
            i = if rest.starts_with("<!--") {
                rest.find("-->").map_or(html.len(), |p| lt + p + 3)
            } else if rest.starts_with("<![CDATA[") {
                let body_start = lt + 9;
                let end = html[body_start..]
                    .find("]]>")
                    .map_or(html.len(), |p| body_start + p);
                self.emit_text(&html[body_start..end]);
                (end + 3).min(html.len())
            } else if rest.starts_with("<!") || rest.starts_with("<?") {
                rest.find('>').map_or(html.len(), |p| lt + p + 1)
            } else if rest.starts_with("</") {
                let name_start = lt + 2;
                let name = tag_name(&html[name_start..]);
                let end = rest.find('>').map_or(html.len(), |p| lt + p + 1);
                if !name.is_empty() {
                    self.end_tag(&name);
                }
                end
            } else if rest[1..].starts_with(|c: char| c.is_ascii_alphabetic()) {
                let (tag, end) = parse_start_tag(html, lt + 1);
                if RAW_TEXT.contains(&tag.name.as_str()) {
                    let close = format!("</{}", tag.name);
                    let body_end = find_ci(&html[end..], &close).map_or(html.len(), |p| end + p);
                    if tag.name == "textarea" {
                        self.text(&html[end..body_end]);
                    }
                    html[body_end..]
                        .find('>')
                        .map_or(html.len(), |p| body_end + p + 1)
                } else {
                    self.start_tag(&tag);
                    end
                }
            } else {
                self.text("<");
                lt + 1
            };
        }
    }

    fn text(&mut self, t: &str) {
        let decoded = decode_entities(t);
        self.emit_text(&decoded);
    }

    fn emit_text(&mut self, t: &str) {
        if self.in_title {
            self.title.get_or_insert_with(String::new).push_str(t);
            return;
        }
        if self.skip_depth > 0 {
            return;
        }
        if let Some(link) = &mut self.link
            && !link.opened
            && !t.trim().is_empty()
        {
            link.opened = true;
            if self.markdown && link.url.is_some() {
                self.out.flush();
                self.out.prefix.push('[');
            }
        }
        if self.pre_depth > 0 {
            self.out.raw(t);
        } else {
            self.out.text(t);
        }
    }

    fn start_tag(&mut self, tag: &Tag) {
        let name = tag.name.as_str();
        if SKIPPED.contains(&name) {
            if !tag.self_closing {
                self.skip_depth += 1;
            }
            return;
        }
        let md = self.markdown;
        match name {
            "title" => self.in_title = true,
            "br" => self.out.line_break(),
            "hr" => {
                self.out.block(2);
                if md {
                    self.out.flush();
                    self.out.s.push_str("---");
                    self.out.block(2);
                }
            }
            "p" | "table" | "blockquote" | "dl" | "figure" => self.out.block(2),
            "ul" | "ol" => {
                self.out.block(if self.lists.is_empty() { 2 } else { 1 });
                self.lists.push((name == "ol").then(|| {
                    tag.attr("start")
                        .and_then(|s| s.trim().parse().ok())
                        .unwrap_or(1)
                }));
            }
            "li" => {
                self.out.block(1);
                let depth = self.lists.len().saturating_sub(1);
                let marker = match self.lists.last_mut() {
                    Some(Some(n)) => {
                        let m = format!("{n}. ");
                        *n += 1;
                        m
                    }
                    _ => "- ".to_owned(),
                };
                self.out.prefix = format!("{}{marker}", "  ".repeat(depth));
            }
            "h1" | "h2" | "h3" | "h4" | "h5" | "h6" => {
                self.out.block(2);
                if md {
                    let level = usize::from(name.as_bytes()[1] - b'0');
                    self.out.prefix = format!("{} ", "#".repeat(level));
                }
            }
            "pre" => {
                self.out.block(2);
                if md && self.pre_depth == 0 {
                    self.out.flush();
                    self.out.s.push_str("```\n");
                }
                self.pre_depth += 1;
            }
            "div" | "section" | "article" | "header" | "footer" | "nav" | "aside" | "main"
            | "tr" | "dt" | "dd" | "form" | "figcaption" | "details" | "summary" | "address"
            | "fieldset" | "legend" | "caption" | "body" | "center" | "option" => self.out.block(1),
            "td" | "th" => self.out.pending_space = true,
            "a" => {
                let url = tag.attr("href").and_then(|h| self.resolve(h));
                self.link = Some(Link { url, opened: false });
            }
            "img" => {
                if let Some(alt) = tag.attr("alt").map(str::trim).filter(|a| !a.is_empty()) {
                    self.out.pending_space = true;
                    self.emit_text(&decode_entities(alt));
                    self.out.pending_space = true;
                }
            }
            _ => {}
        }
    }

    fn end_tag(&mut self, name: &str) {
        if SKIPPED.contains(&name) {
            self.skip_depth = self.skip_depth.saturating_sub(1);
            return;
        }
        match name {
            "title" => self.in_title = false,
            "p" | "table" | "blockquote" | "dl" | "figure" | "h1" | "h2" | "h3" | "h4" | "h5"
            | "h6" => {
                self.out.prefix.clear();
                self.out.block(2);
            }
            "ul" | "ol" => {
                self.lists.pop();
                self.out.block(if self.lists.is_empty() { 2 } else { 1 });
            }
            "pre" => {
                self.pre_depth = self.pre_depth.saturating_sub(1);
                if self.markdown && self.pre_depth == 0 {
                    if !self.out.s.ends_with('\n') {
                        self.out.s.push('\n');
                    }
                    self.out.s.push_str("```");
                }
                self.out.block(2);
            }
            "li" | "div" | "section" | "article" | "header" | "footer" | "nav" | "aside"
            | "main" | "tr" | "dt" | "dd" | "form" | "figcaption" | "details" | "summary"
            | "address" | "fieldset" | "legend" | "caption" | "center" | "option" => {
                self.out.prefix.clear();
                self.out.block(1)
            }
            "td" | "th" => self.out.pending_space = true,
            "a" => {
                if let Some(link) = self.link.take()
                    && link.opened
                    && self.markdown
                    && let Some(url) = link.url
                {
                    self.out.s.push_str(&format!("]({url})"));
                }
            }
            _ => {}
        }
    }

    /// An absolute link target, or `None` for fragments and script URLs.
    fn resolve(&self, href: &str) -> Option<String> {
        let href = decode_entities(href.trim());
        if href.is_empty() || href.starts_with('#') {
            return None;
        }
        let url = match self.base {
            Some(b) => b.join(&href).ok()?,
            None => Url::parse(&href).ok()?,
        };
        matches!(url.scheme(), "http" | "https" | "mailto" | "ftp").then(|| url.to_string())
    }
}

struct Tag {
    name: String,
    attrs: Vec<(String, String)>,
    self_closing: bool,
}

impl Tag {
    fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The lowercase tag name at the start of `s`.
fn tag_name(s: &str) -> String {
    s.chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == ':')
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// Parses a start tag whose name begins at `at`; returns it and the index after its `>`.
fn parse_start_tag(html: &str, at: usize) -> (Tag, usize) {
    let name = tag_name(&html[at..]);
    let b = html.as_bytes();
    let mut i = at + name.len();
    let mut attrs = Vec::new();
    let mut self_closing = false;
    while i < b.len() {
        match b[i] {
            b'>' => {
                return (
                    Tag {
                        name,
                        attrs,
                        self_closing,
                    },
                    i + 1,
                );
            }
            b'/' => {
                self_closing = true;
                i += 1;
            }
            c if c.is_ascii_whitespace() => i += 1,
            _ => {
                self_closing = false;
                let start = i;
                while i < b.len() && !b[i].is_ascii_whitespace() && !matches!(b[i], b'=' | b'>') {
                    i += 1;
                }
                let attr_name = html[start..i].to_ascii_lowercase();
                while i < b.len() && b[i].is_ascii_whitespace() {
                    i += 1;
                }
                let mut value = String::new();
                if i < b.len() && b[i] == b'=' {
                    i += 1;
                    while i < b.len() && b[i].is_ascii_whitespace() {
                        i += 1;
                    }
                    if i < b.len() && (b[i] == b'"' || b[i] == b'\'') {
                        let q = b[i];
                        let vstart = i + 1;
                        let vend = b[vstart..]
                            .iter()
                            .position(|&c| c == q)
                            .map_or(b.len(), |p| vstart + p);
                        value = html[vstart..vend].to_owned();
                        i = (vend + 1).min(b.len());
                    } else {
                        let vstart = i;
                        while i < b.len() && !b[i].is_ascii_whitespace() && b[i] != b'>' {
                            i += 1;
                        }
                        value = html[vstart..i].to_owned();
                    }
                }
                attrs.push((attr_name, value));
            }
        }
    }
    (
        Tag {
            name,
            attrs,
            self_closing,
        },
        b.len(),
    )
}

/// Finds `needle` (ASCII) in `hay`, ignoring ASCII case.
fn find_ci(hay: &str, needle: &str) -> Option<usize> {
    let n = needle.as_bytes();
    hay.as_bytes()
        .windows(n.len())
        .position(|w| w.eq_ignore_ascii_case(n))
}

const ENTITIES: &[(&str, char)] = &[
    ("amp", '&'),
    ("lt", '<'),
    ("gt", '>'),
    ("quot", '"'),
    ("apos", '\''),
    ("nbsp", ' '),
    ("ensp", ' '),
    ("emsp", ' '),
    ("thinsp", ' '),
    ("shy", '\u{ad}'),
    ("copy", '©'),
    ("reg", '®'),
    ("trade", '™'),
    ("hellip", '…'),
    ("mdash", '—'),
    ("ndash", '–'),
    ("lsquo", '‘'),
    ("rsquo", '’'),
    ("sbquo", '‚'),
    ("ldquo", '“'),
    ("rdquo", '”'),
    ("bdquo", '„'),
    ("laquo", '«'),
    ("raquo", '»'),
    ("bull", '•'),
    ("middot", '·'),
    ("times", '×'),
    ("divide", '÷'),
    ("minus", '−'),
    ("plusmn", '±'),
    ("deg", '°'),
    ("micro", 'µ'),
    ("para", '¶'),
    ("sect", '§'),
    ("euro", '€'),
    ("pound", '£'),
    ("yen", '¥'),
    ("cent", '¢'),
    ("larr", '←'),
    ("rarr", '→'),
    ("uarr", '↑'),
    ("darr", '↓'),
    ("harr", '↔'),
    ("le", '≤'),
    ("ge", '≥'),
    ("ne", '≠'),
    ("asymp", '≈'),
    ("infin", '∞'),
    ("frac12", '½'),
    ("frac14", '¼'),
    ("frac34", '¾'),
    ("sup2", '²'),
    ("sup3", '³'),
    ("iexcl", '¡'),
    ("iquest", '¿'),
    ("zwj", '\u{200d}'),
    ("zwnj", '\u{200c}'),
];

/// The Latin-1 named references, in code point order from U+00A0.
const LATIN1: [&str; 96] = [
    "nbsp", "iexcl", "cent", "pound", "curren", "yen", "brvbar", "sect", "uml", "copy", "ordf",
    "laquo", "not", "shy", "reg", "macr", "deg", "plusmn", "sup2", "sup3", "acute", "micro",
    "para", "middot", "cedil", "sup1", "ordm", "raquo", "frac14", "frac12", "frac34", "iquest",
    "Agrave", "Aacute", "Acirc", "Atilde", "Auml", "Aring", "AElig", "Ccedil", "Egrave", "Eacute",
    "Ecirc", "Euml", "Igrave", "Iacute", "Icirc", "Iuml", "ETH", "Ntilde", "Ograve", "Oacute",
    "Ocirc", "Otilde", "Ouml", "times", "Oslash", "Ugrave", "Uacute", "Ucirc", "Uuml", "Yacute",
    "THORN", "szlig", "agrave", "aacute", "acirc", "atilde", "auml", "aring", "aelig", "ccedil",
    "egrave", "eacute", "ecirc", "euml", "igrave", "iacute", "icirc", "iuml", "eth", "ntilde",
    "ograve", "oacute", "ocirc", "otilde", "ouml", "divide", "oslash", "ugrave", "uacute", "ucirc",
    "uuml", "yacute", "thorn", "yuml",
];

/// Decodes character references: named ones from a common set, decimal and hex ones.
/// Unknown references are left as written.
pub fn decode_entities(s: &str) -> String {
    if !s.contains('&') {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let after = &rest[amp + 1..];
        let end = after
            .char_indices()
            .take(32)
            .find(|&(_, c)| !(c.is_ascii_alphanumeric() || c == '#'))
            .map_or(after.len().min(32), |(p, _)| p);
        let name = &after[..end];
        let has_semi = after[end..].starts_with(';');
        let decoded = if let Some(num) = name.strip_prefix('#') {
            let code = match num.strip_prefix(['x', 'X']) {
                Some(hex) => u32::from_str_radix(hex, 16).ok(),
                None => num.parse::<u32>().ok(),
            };
            code.map(|c| match char::from_u32(c) {
                Some(ch) if c != 0 => ch,
                _ => '\u{fffd}',
            })
        } else if has_semi || matches!(name, "amp" | "lt" | "gt" | "quot" | "nbsp") {
            ENTITIES
                .iter()
                .find(|(n, _)| *n == name)
                .map(|&(_, c)| c)
                .or_else(|| {
                    let i = LATIN1.iter().position(|n| *n == name)?;
                    char::from_u32(0xA0 + i as u32)
                })
        } else {
            None
        };
        match decoded {
            Some(c) if !name.is_empty() => {
                out.push(c);
                rest = &after[end + usize::from(has_semi)..];
            }
            _ => {
                out.push('&');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

fn collapse_ws(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Trims line ends and keeps at most one empty line in a row.
fn normalize(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut empty_run = 0;
    for line in s.lines() {
        let line = line.trim_end();
        if line.is_empty() {
            empty_run += 1;
            if empty_run > 1 {
                continue;
            }
        } else {
            empty_run = 0;
        }
        out.push_str(line);
        out.push('\n');
    }
    out.trim_matches('\n').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(html: &str) -> String {
        to_text(html, false, None)
    }

    #[test]
    fn scripts_styles_and_comments_are_dropped() {
        let html = "<html><head><title>T</title><style>p{color:red}</style>\
            <script>var x = '<p>no</p>';</script></head><body><!-- hidden -->\
            <p>Shown</p><noscript>enable js</noscript><SCRIPT type=x>alert(1)</SCRIPT>\
            <svg><text>vector</text></svg>after</body></html>";
        assert_eq!(text(html), "T\n\nShown\n\nafter");
    }

    #[test]
    fn blocks_become_lines_and_whitespace_collapses() {
        let html = "<h1>Title</h1><p>one\n   two</p><div>three</div>four<br>five<br/><br>six\
            <ul><li>a</li><li>b <b>bold</b></li></ul><pre>  keep\n    this</pre>end";
        assert_eq!(
            text(html),
            "Title\n\none two\n\nthree\nfour\nfive\n\nsix\n\n- a\n- b bold\n\n  keep\n    this\n\nend"
        );
    }

    #[test]
    fn markdown_keeps_headings_lists_and_links() {
        let base = Url::parse("https://example.com/docs/page").ok();
        let html = "<h2>Intro</h2><p>See <a href=\"/guide?a=1&amp;b=2\">the guide</a> and \
            <a href='#top'>top</a> and <a href=\"javascript:x()\">js</a>.</p>\
            <ol start=3><li>x</li><li>y</li></ol><pre><code>fn main() {}</code></pre>";
        assert_eq!(
            to_text(html, true, base.as_ref()),
            "## Intro\n\nSee [the guide](https://example.com/guide?a=1&b=2) and top and js.\n\n3. x\n4. y\n\n```\nfn main() {}\n```"
        );
    }

    #[test]
    fn entities_are_decoded() {
        assert_eq!(
            decode_entities("a &amp; b &lt;c&gt; &#65;&#x42; &copy; &bogus; & x &nbsp;y &amp"),
            "a & b <c> AB © &bogus; & x  y &"
        );
        assert_eq!(decode_entities("&#0; &#xD800;"), "\u{fffd} \u{fffd}");
        assert_eq!(
            text("<p>caf&eacute; &mdash; &Uuml;ber &yuml; &zzz;</p>"),
            "café — Über ÿ &zzz;"
        );
    }

    #[test]
    fn malformed_markup_degrades_to_text() {
        assert_eq!(text("a < b and c > d"), "a < b and c > d");
        assert_eq!(text("<p>unclosed <b>bold"), "unclosed bold");
        assert_eq!(text("<a href=\"x>broken"), "");
        assert_eq!(text("x<!-- never closed"), "x");
        assert_eq!(text("<script>never closed"), "");
        assert_eq!(text("<p title='a > b'>ok</p>"), "ok");
        assert_eq!(text("<img alt=\"A cat\" src=c.png>"), "A cat");
    }
}
