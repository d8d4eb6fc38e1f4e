//! Escaping user text for terminals and logs: control characters as `\u{..}`.
//!
//! Step errors, execution ids, saga names and contexts come from users and
//! from the services their steps call. Printed raw, an ESC sequence in one
//! of them can recolour, move or clear an operator's terminal, and a
//! newline can forge a line of output or a log record. Everything that
//! shows such text to a person passes it through [`user_text`] first (the
//! `saga` CLI does, and so do the log records' key-values).
//!
//! What is escaped: every character of Unicode's control category (C0,
//! DEL and C1, so ESC, CR, LF and TAB too) and the bidirectional
//! formatting characters (U+061C, U+200E, U+200F, U+202A to U+202E, U+2066
//! to U+2069), which reorder what a reader sees. Each becomes Rust's
//! `\u{..}` notation in lowercase hex: ESC is `\u{1b}`, a newline
//! `\u{a}`. Everything else, non-ASCII letters included, is kept as it is.
//! A backslash is not escaped, so the output is for reading, not for
//! decoding back.

use std::borrow::Cow;
use std::fmt;

/// `text` with its control and bidirectional formatting characters written
/// as `\u{..}`; borrowed, with no allocation, when there are none.
///
/// ```
/// use saga_core::escape::user_text;
///
/// assert_eq!(user_text("card declined"), "card declined");
/// assert_eq!(user_text("\u{1b}[2Jgone\nforged"), "\\u{1b}[2Jgone\\u{a}forged");
/// ```
pub fn user_text(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    Cow::Owned(Escaped(text).to_string())
}

/// Displays its text as [`user_text`] returns it, without an intermediate
/// `String`: for a `format!` argument or a log value.
///
/// ```
/// use saga_core::escape::Escaped;
///
/// assert_eq!(format!("id `{}`", Escaped("a\u{7}b")), "id `a\\u{7}b`");
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some((at, c)) = rest.char_indices().find(|&(_, c)| needs_escape(c)) {
            f.write_str(&rest[..at])?;
            write!(f, "\\u{{{:x}}}", u32::from(c))?;
            rest = &rest[at + c.len_utf8()..];
        }
        f.write_str(rest)
    }
}

/// Whether `c` is escaped: a control character or a bidirectional
/// formatting character.
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fmt::Write as _;

    #[test]
    fn plain_text_is_borrowed_unchanged() {
        let text = "réservation échouée: 402 ✓";
        assert!(matches!(user_text(text), Cow::Borrowed(t) if t == text));
    }

    #[test]
    fn control_and_bidi_characters_are_written_as_escapes() {
        assert_eq!(
            user_text("a\u{1b}[31mred\r\n\tend\u{7f}\u{9b}"),
            "a\\u{1b}[31mred\\u{d}\\u{a}\\u{9}end\\u{7f}\\u{9b}"
        );
        assert_eq!(user_text("\u{202e}txt.exe"), "\\u{202e}txt.exe");
        assert_eq!(user_text("\u{1b}"), "\\u{1b}");
        let mut out = String::new();
        write!(out, "{}", Escaped("x\u{0}y")).unwrap();
        assert_eq!(out, "x\\u{0}y");
    }
}
