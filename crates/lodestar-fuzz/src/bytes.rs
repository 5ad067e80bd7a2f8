//! Reading structured values off the front of a fuzz input, with defaults when it runs out.

/// The unread part of an input.
#[derive(Debug)]
pub(crate) struct Bytes<'a>(pub(crate) &'a [u8]);

impl<'a> Bytes<'a> {
    /// The next byte, or `None` at the end.
    pub(crate) fn next(&mut self) -> Option<u8> {
        let (b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(*b)
    }

    /// The next byte, or 0 at the end.
    pub(crate) fn u8(&mut self) -> u8 {
        self.next().unwrap_or(0)
    }

    pub(crate) fn i64(&mut self) -> i64 {
        let mut buf = [0u8; 8];
        for b in &mut buf {
            *b = self.u8();
        }
        i64::from_le_bytes(buf)
    }
}

/// Splits an input at its first NUL byte: text before (invalid UTF-8 replaced), bytes after.
/// Seeds can then be plain text, and the fuzzer can still drive the structured part.
pub(crate) fn text_then_bytes(data: &[u8]) -> (String, Bytes<'_>) {
    let (text, rest) = match data.iter().position(|b| *b == 0) {
        Some(nul) => (&data[..nul], &data[nul + 1..]),
        None => (data, &[][..]),
    };
    (String::from_utf8_lossy(text).into_owned(), Bytes(rest))
}
