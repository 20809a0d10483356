//! Splitting NDJSON input into lines: the one splitter every reader of NDJSON uses.
//!
//! The runtime's file/stdin source and the server's HTTP ingest both receive NDJSON as byte
//! chunks of arbitrary size (a read buffer, a body frame). They must agree on what a line is,
//! how long it may be, how lines are numbered and what invalid UTF-8 is reported as — the same
//! bad input must get the same answer whichever way it arrives. So the splitting lives here:
//! pure, synchronous, fed one chunk at a time, and never holding more than one line of input.
//!
//! Rules:
//!
//! - A line ends at `\n`; one `\r` before it is dropped (CRLF input). The last line needs no
//!   newline: [`LineSplitter::finish`] yields it.
//! - Lines are numbered from 1, blank lines included, so numbers match what an editor shows.
//! - A line (without its `\n`, with any `\r`) longer than the limit is an error as soon as the
//!   limit is passed, before the rest of it is buffered: memory stays bounded by the limit.
//! - A line that is not UTF-8 is an error naming the 1-based byte of the first bad sequence.
//!
//! After an error the input cannot be trusted to resynchronise, so the splitter stays failed:
//! every later call reports the same error.

/// Why NDJSON input could not be split into lines.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NdjsonError {
    /// A line is longer than the limit.
    #[error("line {line}: longer than {limit} bytes")]
    LineTooLong {
        /// 1-based line number.
        line: usize,
        /// The limit in bytes.
        limit: usize,
    },
    /// A line is not valid UTF-8.
    #[error("line {line}: invalid UTF-8 at byte {byte}")]
    InvalidUtf8 {
        /// 1-based line number.
        line: usize,
        /// 1-based position in the line of the first byte that is not valid UTF-8.
        byte: usize,
    },
}

impl NdjsonError {
    /// The 1-based number of the offending line.
    pub fn line(&self) -> usize {
        match self {
            NdjsonError::LineTooLong { line, .. } | NdjsonError::InvalidUtf8 { line, .. } => *line,
        }
    }
}

/// One line of input, without its line ending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Line<'a> {
    /// 1-based line number, blank lines included.
    pub number: usize,
    /// The line's text, without `\n` and without a `\r` before it.
    pub text: &'a str,
}

impl Line<'_> {
    /// Whether the line holds only whitespace (such lines carry no event and are skipped).
    pub fn is_blank(&self) -> bool {
        self.text.bytes().all(|b| b.is_ascii_whitespace())
    }
}

/// Splits NDJSON byte chunks into numbered, UTF-8-checked lines of bounded length.
///
/// ```
/// use liveresults_core::ndjson::LineSplitter;
///
/// let mut splitter = LineSplitter::new(1024);
/// let mut texts = Vec::new();
/// for chunk in [&b"{\"a\":"[..], b"1}\r\n\n{\"b\"", b":2}"] {
///     let mut lines = splitter.push(chunk);
///     while let Some(line) = lines.next_line() {
///         texts.push(line?.text.to_owned());
///     }
/// }
/// if let Some(line) = splitter.finish()? {
///     texts.push(line.text.to_owned());
/// }
/// assert_eq!(texts, ["{\"a\":1}", "", "{\"b\":2}"]);
/// # Ok::<(), liveresults_core::ndjson::NdjsonError>(())
/// ```
#[derive(Debug, Clone)]
pub struct LineSplitter {
    max_line_bytes: usize,
    /// The start of a line whose end has not arrived yet — or, while `carry_is_line`, the
    /// last line handed out from it.
    carry: Vec<u8>,
    /// `carry` holds a line already handed out: clear it before anything else.
    carry_is_line: bool,
    /// Lines completed so far.
    lines: usize,
    /// The first error; every later call repeats it.
    failed: Option<NdjsonError>,
}

impl LineSplitter {
    /// A splitter accepting lines of up to `max_line_bytes` bytes (line ending excluded).
    pub fn new(max_line_bytes: usize) -> Self {
        LineSplitter {
            max_line_bytes,
            carry: Vec::new(),
            carry_is_line: false,
            lines: 0,
            failed: None,
        }
    }

    /// Lines completed so far, blank ones included: the number of the last complete line.
    pub fn lines(&self) -> usize {
        self.lines
    }

    /// Feeds the next chunk of input. Take every line from the returned [`Lines`] before
    /// pushing again: bytes of `chunk` not yet taken when it is dropped are lost.
    pub fn push<'s>(&'s mut self, chunk: &'s [u8]) -> Lines<'s> {
        self.release_carry();
        let done = self.failed.is_some();
        Lines {
            splitter: self,
            rest: chunk,
            error_pending: done,
            done,
        }
    }

    /// Ends the input: the last line when it had no trailing newline, else `None`.
    pub fn finish(&mut self) -> Result<Option<Line<'_>>, NdjsonError> {
        self.release_carry();
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        if self.carry.is_empty() {
            return Ok(None);
        }
        self.carry_is_line = true;
        let number = self.lines.saturating_add(1);
        self.lines = number;
        let line = line_of(number, &self.carry);
        if let Err(e) = &line {
            self.failed = Some(e.clone());
        }
        line.map(Some)
    }

    fn release_carry(&mut self) {
        if self.carry_is_line {
            self.carry.clear();
            self.carry_is_line = false;
        }
    }

    /// Checks that a line of `len` bytes so far (it may grow) is within the limit.
    fn check_length(&mut self, len: usize) -> Result<(), NdjsonError> {
        if len <= self.max_line_bytes {
            return Ok(());
        }
        let error = NdjsonError::LineTooLong {
            line: self.lines.saturating_add(1),
            limit: self.max_line_bytes,
        };
        self.failed = Some(error.clone());
        Err(error)
    }
}

/// Line `number`, checked: its bytes without a final `\r`, as UTF-8.
fn line_of(number: usize, bytes: &[u8]) -> Result<Line<'_>, NdjsonError> {
    let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
    match std::str::from_utf8(bytes) {
        Ok(text) => Ok(Line { number, text }),
        Err(e) => Err(NdjsonError::InvalidUtf8 {
            line: number,
            byte: e.valid_up_to().saturating_add(1),
        }),
    }
}

/// The lines completed by one pushed chunk, taken one at a time with [`Lines::next_line`]
/// (each borrows the splitter, so a caller may await between lines without copying them).
#[derive(Debug)]
pub struct Lines<'s> {
    splitter: &'s mut LineSplitter,
    rest: &'s [u8],
    /// The splitter had failed before this push: report that once.
    error_pending: bool,
    done: bool,
}

impl Lines<'_> {
    /// The next complete line, `None` once the chunk is used up (its unfinished last line is
    /// kept for the next push), or the error that stops the input.
    pub fn next_line(&mut self) -> Option<Result<Line<'_>, NdjsonError>> {
        if self.error_pending {
            self.error_pending = false;
            return self.splitter.failed.clone().map(Err);
        }
        if self.done {
            return None;
        }
        let splitter = &mut *self.splitter;
        splitter.release_carry();
        let rest = self.rest;
        let Some(at) = rest.iter().position(|&b| b == b'\n') else {
            // No line end in the rest of the chunk: keep it as the start of the next line.
            self.rest = &[];
            self.done = true;
            if let Err(e) = splitter.check_length(splitter.carry.len().saturating_add(rest.len())) {
                return Some(Err(e));
            }
            splitter.carry.extend_from_slice(rest);
            return None;
        };
        let (piece, after) = (&rest[..at], &rest[at + 1..]);
        self.rest = after;
        if let Err(e) = splitter.check_length(splitter.carry.len().saturating_add(piece.len())) {
            self.done = true;
            return Some(Err(e));
        }
        let number = splitter.lines.saturating_add(1);
        splitter.lines = number;
        let bytes: &[u8] = if splitter.carry.is_empty() {
            piece // the whole line is in this chunk: no copy
        } else {
            splitter.carry.extend_from_slice(piece);
            splitter.carry_is_line = true;
            &splitter.carry
        };
        let line = line_of(number, bytes);
        if let Err(e) = &line {
            splitter.failed = Some(e.clone());
            self.done = true;
        }
        Some(line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Splits `chunks` completely: every line's (number, text), or the first error.
    fn split(limit: usize, chunks: &[&[u8]]) -> Result<Vec<(usize, String)>, NdjsonError> {
        let mut splitter = LineSplitter::new(limit);
        let mut out = Vec::new();
        for chunk in chunks {
            let mut lines = splitter.push(chunk);
            while let Some(line) = lines.next_line() {
                let line = line?;
                out.push((line.number, line.text.to_owned()));
            }
        }
        if let Some(line) = splitter.finish()? {
            out.push((line.number, line.text.to_owned()));
        }
        Ok(out)
    }

    fn owned(lines: &[(usize, &str)]) -> Vec<(usize, String)> {
        lines.iter().map(|(n, t)| (*n, (*t).to_owned())).collect()
    }

    #[test]
    fn lines_are_numbered_across_chunks_with_blank_lines_and_crlf() {
        let expected = owned(&[(1, "ab"), (2, ""), (3, "  "), (4, "cd"), (5, "e")]);
        let input = b"ab\r\n\n  \ncd\ne";
        // Every way of cutting the input in two, and byte by byte.
        for cut in 0..=input.len() {
            let (a, b) = input.split_at(cut);
            assert_eq!(split(16, &[a, b]), Ok(expected.clone()), "cut at {cut}");
        }
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(split(16, &bytes), Ok(expected));
        // A trailing newline ends the last line; nothing is left for `finish`.
        assert_eq!(split(16, &[b"x\n"]), Ok(owned(&[(1, "x")])));
        assert_eq!(split(16, &[]), Ok(vec![]));
    }

    #[test]
    fn blank_means_whitespace_only() {
        let line = |text| Line { number: 1, text };
        assert!(line("").is_blank());
        assert!(line(" \t\r").is_blank());
        assert!(!line(" {} ").is_blank());
    }

    #[test]
    fn the_length_limit_excludes_the_newline_and_applies_before_the_line_ends() {
        assert_eq!(
            split(3, &[b"abc\nabc"]),
            Ok(owned(&[(1, "abc"), (2, "abc")]))
        );
        let too_long = NdjsonError::LineTooLong { line: 2, limit: 3 };
        assert_eq!(split(3, &[b"abc\nabcd\n"]), Err(too_long.clone()));
        assert_eq!(split(3, &[b"abc\nab", b"cd"]), Err(too_long.clone()));
        // Unterminated: detected while the line is still arriving, not at its end.
        let mut splitter = LineSplitter::new(3);
        let mut lines = splitter.push(b"abc\nabcdefgh");
        assert_eq!(
            lines.next_line().map(|l| l.map(|l| l.text)),
            Some(Ok("abc"))
        );
        assert_eq!(lines.next_line(), Some(Err(too_long.clone())));
        assert_eq!(lines.next_line(), None);
        // The splitter stays failed.
        assert_eq!(
            splitter.push(b"x\n").next_line(),
            Some(Err(too_long.clone()))
        );
        assert_eq!(splitter.finish(), Err(too_long));
    }

    #[test]
    fn invalid_utf8_names_the_line_and_byte() {
        let bad = NdjsonError::InvalidUtf8 { line: 2, byte: 3 };
        assert_eq!(split(64, &[b"ok\nab\xffc\nnext\n"]), Err(bad.clone()));
        // Split across chunks, and as the unterminated last line.
        assert_eq!(split(64, &[b"ok\nab", b"\xffc\n"]), Err(bad.clone()));
        assert_eq!(split(64, &[b"ok\nab\xff"]), Err(bad.clone()));
        // A multi-byte character cut between chunks is fine.
        let e_acute = "\u{e9}".as_bytes();
        assert_eq!(
            split(64, &[b"a", &e_acute[..1], &e_acute[1..], b"\n"]),
            Ok(owned(&[(1, "a\u{e9}")]))
        );
        assert_eq!(bad.line(), 2);
        assert_eq!(bad.to_string(), "line 2: invalid UTF-8 at byte 3");
        assert_eq!(
            NdjsonError::LineTooLong { line: 4, limit: 9 }.to_string(),
            "line 4: longer than 9 bytes"
        );
    }

    #[test]
    fn memory_is_bounded_by_one_line() {
        let mut splitter = LineSplitter::new(8);
        for _ in 0..1000 {
            let mut lines = splitter.push(b"1234\n12");
            while let Some(line) = lines.next_line() {
                assert!(line.is_ok());
            }
        }
        assert!(
            splitter.carry.capacity() <= 64,
            "{}",
            splitter.carry.capacity()
        );
        assert_eq!(splitter.lines(), 1000);
    }
}
