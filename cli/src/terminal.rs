//! Remote text made safe to print on a terminal.
//!
//! A peer chooses the bytes of the messages `dndm sub` and `dndm node --subscribe` print. Raw,
//! they could drive the operator's terminal (ESC and OSC sequences set the title, write the
//! clipboard, clear the screen) or forge message boundaries (an embedded newline or carriage
//! return). [`escape_line`] writes them with every such character escaped, so one message is
//! always one line of visible text.

use std::io::Write;

/// Writes `line` to `out` with control characters escaped, then a newline.
///
/// Escaped: C0 controls and DEL (`\n`, `\r`, `\x1b`...; a tab stays), C1 controls and the
/// Unicode marks that reorder or hide text (`\u{9b}`, `\u{202e}`...), and bytes that are not
/// UTF-8 (`\xff`). Everything else, backslashes included, is written as it is.
///
/// # Errors
/// What writing to `out` returns.
pub(crate) fn escape_line(out: &mut impl Write, line: &[u8]) -> std::io::Result<()> {
    let mut rest = line;
    while !rest.is_empty() {
        let (valid, invalid) = match std::str::from_utf8(rest) {
            Ok(text) => (text, &[][..]),
            Err(e) => {
                let (valid, after) = rest.split_at(e.valid_up_to());
                let bad = e.error_len().unwrap_or(after.len());
                // `valid_up_to` marks the end of valid UTF-8.
                let valid = std::str::from_utf8(valid).unwrap_or_default();
                (valid, &after[..bad])
            }
        };
        escape_text(out, valid)?;
        for byte in invalid {
            write!(out, "\\x{byte:02x}")?;
        }
        rest = &rest[valid.len() + invalid.len()..];
    }
    out.write_all(b"\n")
}

/// Writes valid UTF-8 `text`, its unsafe characters escaped.
fn escape_text(out: &mut impl Write, text: &str) -> std::io::Result<()> {
    let mut start = 0;
    for (i, c) in text.char_indices() {
        if !needs_escape(c) {
            continue;
        }
        out.write_all(&text.as_bytes()[start..i])?;
        match c {
            '\n' => out.write_all(b"\\n")?,
            '\r' => out.write_all(b"\\r")?,
            c if u32::from(c) < 0x80 => write!(out, "\\x{:02x}", u32::from(c))?,
            c => write!(out, "\\u{{{:x}}}", u32::from(c))?,
        }
        start = i + c.len_utf8();
    }
    out.write_all(&text.as_bytes()[start..])
}

/// Controls (but a tab), and the invisible marks that reorder or hide text.
fn needs_escape(c: char) -> bool {
    (c.is_control() && c != '\t')
        || matches!(
            c,
            '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}'
        )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn escaped(line: &[u8]) -> String {
        let mut out = Vec::new();
        escape_line(&mut out, line).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn terminal_sequences_and_forged_lines_are_escaped() {
        // The review's case: an OSC title sequence and a forged second message.
        let out = escaped("\x1b]0;pwned\x07a\nfake".as_bytes());
        assert_eq!(out, "\\x1b]0;pwned\\x07a\\nfake\n");
        assert!(!out.contains('\x1b'));
        assert_eq!(out.lines().count(), 1);
        // CR (overwrites the line), CSI in its 8-bit C1 form, DEL, a right-to-left override.
        assert_eq!(
            escaped("ok\rfake\u{9b}2J\x7f\u{202e}".as_bytes()),
            "ok\\rfake\\u{9b}2J\\x7f\\u{202e}\n"
        );
    }

    #[test]
    fn ordinary_text_is_printed_as_it_is() {
        for text in [
            "hello mesh",
            "ünïcode ✓ 日本語",
            "{\"a\":\"x\\ny\"}",
            "tab\tseparated",
            "",
        ] {
            assert_eq!(escaped(text.as_bytes()), format!("{text}\n"));
        }
    }

    #[test]
    fn bytes_that_are_not_utf8_are_shown_as_hex() {
        assert_eq!(escaped(b"a\xffb\xe2\x82"), "a\\xffb\\xe2\\x82\n");
        // A lone C1 byte (8-bit CSI) is not UTF-8 either.
        assert_eq!(escaped(b"\x9b31m"), "\\x9b31m\n");
    }
}
