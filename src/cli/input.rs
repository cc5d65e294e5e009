//! Input formats of `build`, `check` and `admin`: number lists, CSV files, the US National
//! Do-Not-Call flat file, and registry change lists.
//!
//! Owns reading large files line by line without an allocation per line, and turning one
//! record into a [`Number`] (plus an expiry or a change action) or a [`LineError`] that says
//! what is wrong with it. Line errors never hold a number in the clear: their reasons are fixed
//! texts or the engine's masked [`NumberError`] messages. This module never decides what to do
//! with a bad line (skip or fail); the command does.
//!
//! Formats:
//!
//! - `lines`: one number per line in any format (`+48600100200`, `600 100 200` with a region);
//!   blank lines and lines starting with `#` are skipped.
//! - `csv`: a header row; the number is in a named column, an optional column holds a consent
//!   expiry day (`YYYY-MM-DD`, the first day the consent no longer counts; empty = never).
//! - `us-registry`: `AREA,NUMBER` per line, e.g. `201,5550123` for +1 201 555 0123: a 3-digit
//!   area code and a 7-digit number, digits only, both starting with 2-9 (NANP rules).
//!
//! Change lists (`build --base --changes`) add an action field, `A` (add) or `D` (delete):
//! `AREA,NUMBER,A|D` for `us-registry` and `NUMBER,A|D` for `lines`.
//!
//! Numbers sent to a daemon (`check --server`, `admin`) are read by [`read_numbers`] as texts,
//! not parsed here: the daemon parses and answers each one.

use crate::engine::number::{Number, NumberError, NumberParser};
use clap::ValueEnum;
use std::io::Read;
use std::path::Path;

/// Input file formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum InputFormat {
    /// One number per line, any format (national formats need --region)
    Lines,
    /// A CSV file with a header row; the number in --column
    Csv,
    /// The US National Do-Not-Call flat file: AREA,NUMBER per line
    UsRegistry,
}

impl InputFormat {
    pub fn name(self) -> &'static str {
        match self {
            InputFormat::Lines => "lines",
            InputFormat::Csv => "csv",
            InputFormat::UsRegistry => "us-registry",
        }
    }

    /// Rough bytes per record, to size buffers from a file's length.
    pub fn bytes_per_record(self) -> u64 {
        match self {
            InputFormat::Lines => 13,
            InputFormat::Csv => 20,
            InputFormat::UsRegistry => 12,
        }
    }
}

/// What is wrong with one input record. `kind` is a stable code; `reason` is for people.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LineError {
    pub kind: &'static str,
    pub reason: String,
}

impl LineError {
    pub fn new(kind: &'static str, reason: impl Into<String>) -> LineError {
        LineError {
            kind,
            reason: reason.into(),
        }
    }
}

impl From<NumberError> for LineError {
    fn from(error: NumberError) -> LineError {
        // NumberError's Display is masked by contract, so it is safe to keep.
        LineError {
            kind: error.kind(),
            reason: error.to_string(),
        }
    }
}

/// A change-list action.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Add,
    Delete,
}

/// Longest line kept whole; longer ones are reported as bad lines, never buffered entirely.
pub const MAX_LINE: usize = 64 * 1024;
const READ_CHUNK: usize = 4 * 1024 * 1024;

/// One line of a file: its 1-based number and bytes without the line ending.
#[derive(Debug)]
pub struct Line<'a> {
    pub number: u64,
    pub bytes: &'a [u8],
    /// The line was longer than [`MAX_LINE`]; `bytes` holds only its start.
    pub too_long: bool,
}

/// Reads byte lines out of a large buffer, finding line ends with `memchr`.
///
/// Lines are slices into the buffer, so reading a 100 M-line file allocates nothing per line.
pub struct LineReader<R> {
    inner: R,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    eof: bool,
    line_number: u64,
    consumed: u64,
    /// The kept start of an over-long line (rare, so it may allocate).
    long_head: Vec<u8>,
}

impl<R: Read> LineReader<R> {
    pub fn new(inner: R) -> LineReader<R> {
        LineReader {
            inner,
            buf: vec![0; READ_CHUNK],
            start: 0,
            end: 0,
            eof: false,
            line_number: 0,
            consumed: 0,
            long_head: Vec::new(),
        }
    }

    /// Bytes of the input handed out as lines so far (for progress).
    pub fn consumed(&self) -> u64 {
        self.consumed
    }

    /// Moves unread bytes to the front and reads more; false at end of input.
    fn fill(&mut self) -> std::io::Result<bool> {
        if self.eof {
            return Ok(false);
        }
        debug_assert!(
            self.end - self.start < self.buf.len(),
            "no room to read into"
        );
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        loop {
            match self.inner.read(&mut self.buf[self.end..]) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(false);
                }
                Ok(n) => {
                    self.end += n;
                    return Ok(true);
                }
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        }
    }

    /// The next line, or `None` at the end of the input.
    pub fn next_line(&mut self) -> std::io::Result<Option<Line<'_>>> {
        // Search only bytes not yet searched, so a long line is not rescanned on every refill.
        let mut searched = 0;
        loop {
            let pending = &self.buf[self.start + searched..self.end];
            if let Some(at) = memchr::memchr(b'\n', pending) {
                let line_end = self.start + searched + at;
                return Ok(Some(self.take(line_end, line_end + 1)));
            }
            searched = self.end - self.start;
            if searched >= MAX_LINE {
                return self.skip_long_line().map(Some);
            }
            // The buffer is far larger than MAX_LINE, so `fill` always finds room to read into.
            if !self.fill()? {
                if self.end > self.start {
                    let end = self.end;
                    return Ok(Some(self.take(end, end)));
                }
                return Ok(None);
            }
        }
    }

    /// Hands out the first `MAX_LINE` bytes of an over-long line and drops the rest of it.
    fn skip_long_line(&mut self) -> std::io::Result<Line<'_>> {
        self.long_head.clear();
        self.long_head
            .extend_from_slice(&self.buf[self.start..self.start + MAX_LINE]);
        let mut dropped = (self.end - self.start) as u64;
        self.start = self.end;
        while self.fill()? {
            match memchr::memchr(b'\n', &self.buf[self.start..self.end]) {
                Some(at) => {
                    dropped += at as u64 + 1;
                    self.start += at + 1;
                    break;
                }
                None => {
                    dropped += (self.end - self.start) as u64;
                    self.start = self.end;
                }
            }
        }
        self.line_number += 1;
        self.consumed += dropped;
        Ok(Line {
            number: self.line_number,
            bytes: &self.long_head,
            too_long: true,
        })
    }

    fn take(&mut self, line_end: usize, next_start: usize) -> Line<'_> {
        let start = self.start;
        self.consumed += (next_start - start) as u64;
        self.start = next_start;
        self.line_number += 1;
        let mut bytes = &self.buf[start..line_end];
        if let [rest @ .., b'\r'] = bytes {
            bytes = rest;
        }
        // Same answer whether a long line arrived in one read or across several.
        let too_long = bytes.len() > MAX_LINE;
        Line {
            number: self.line_number,
            bytes: &bytes[..bytes.len().min(MAX_LINE)],
            too_long,
        }
    }
}

/// Trims ASCII whitespace at both ends.
pub fn trim(bytes: &[u8]) -> &[u8] {
    bytes.trim_ascii()
}

/// Whether a `lines` or change-list line carries no record (blank or a `#` comment).
pub fn is_skipped(line: &[u8]) -> bool {
    let line = trim(line);
    line.is_empty() || line[0] == b'#'
}

/// Parses one number in any format: `+digits` fast unless `validate`, otherwise libphonenumber.
pub fn parse_number(
    parser: &NumberParser,
    text: &[u8],
    validate: bool,
) -> Result<Number, LineError> {
    let text = std::str::from_utf8(trim(text))
        .map_err(|_| LineError::new("not_utf8", "line is not valid UTF-8"))?;
    let parsed = if validate {
        parser.parse(text)
    } else {
        parser.parse_fast(text)
    };
    parsed.map_err(LineError::from)
}

/// Parses the digits-only field `text` of exactly `len` digits.
fn fixed_digits(text: &[u8], len: usize) -> Option<u64> {
    if text.len() != len || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        text.iter()
            .fold(0u64, |value, digit| value * 10 + u64::from(digit - b'0')),
    )
}

/// Parses a US registry record's `AREA,NUMBER` fields into +1 AREA NUMBER.
pub fn parse_us_fields(area: &[u8], number: &[u8]) -> Result<Number, LineError> {
    let shape = || LineError::new("bad_record", "expected AREA,NUMBER with 3 and 7 digits");
    let area_code = fixed_digits(trim(area), 3).ok_or_else(shape)?;
    let subscriber = fixed_digits(trim(number), 7).ok_or_else(shape)?;
    if area_code < 200 {
        return Err(LineError::new(
            "bad_area_code",
            "area code must start with 2-9",
        ));
    }
    if subscriber < 2_000_000 {
        return Err(LineError::new(
            "bad_exchange",
            "exchange code must start with 2-9",
        ));
    }
    Number::from_u64(10_000_000_000 + area_code * 10_000_000 + subscriber).map_err(LineError::from)
}

/// Parses a `us-registry` full-list line: `AREA,NUMBER`.
pub fn parse_us_record(line: &[u8]) -> Result<Number, LineError> {
    let line = trim(line);
    let comma = memchr::memchr(b',', line)
        .ok_or_else(|| LineError::new("bad_record", "expected AREA,NUMBER with 3 and 7 digits"))?;
    parse_us_fields(&line[..comma], &line[comma + 1..])
}

/// Splits the trailing `,A` / `,D` action off a change-list line.
fn split_action(line: &[u8]) -> Result<(&[u8], Action), LineError> {
    let line = trim(line);
    let missing = || LineError::new("bad_action", "expected a trailing ,A (add) or ,D (delete)");
    let comma = memchr::memrchr(b',', line).ok_or_else(missing)?;
    let action = match trim(&line[comma + 1..]) {
        b"A" | b"a" => Action::Add,
        b"D" | b"d" => Action::Delete,
        _ => return Err(missing()),
    };
    Ok((&line[..comma], action))
}

/// Parses a `us-registry` change-list line: `AREA,NUMBER,A|D`.
pub fn parse_us_change(line: &[u8]) -> Result<(Number, Action), LineError> {
    let (record, action) = split_action(line)?;
    Ok((parse_us_record(record)?, action))
}

/// Parses a `lines` change-list line: `NUMBER,A|D`.
pub fn parse_lines_change(
    parser: &NumberParser,
    line: &[u8],
    validate: bool,
) -> Result<(Number, Action), LineError> {
    let (record, action) = split_action(line)?;
    Ok((parse_number(parser, record, validate)?, action))
}

/// Numbers for a daemon: those given as arguments, then one per line of `input` (`-` for
/// stdin), trimmed, blank lines and `#` comments skipped. Texts are kept as given; the error
/// (the file cannot be read, or is not UTF-8) names the file, never a line's content.
pub fn read_numbers(arguments: &[String], input: Option<&Path>) -> Result<Vec<String>, String> {
    let mut numbers = arguments.to_vec();
    let Some(path) = input else {
        return Ok(numbers);
    };
    let text = if path.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).map_err(|e| format!("stdin: {e}"))?
    } else {
        std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?
    };
    numbers.extend(
        text.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_owned),
    );
    Ok(numbers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines_of(input: &[u8]) -> Vec<(u64, Vec<u8>, bool)> {
        let mut reader = LineReader::new(input);
        let mut out = Vec::new();
        while let Some(line) = reader.next_line().unwrap() {
            out.push((line.number, line.bytes.to_vec(), line.too_long));
        }
        assert_eq!(reader.consumed(), input.len() as u64);
        out
    }

    #[test]
    fn splits_lines_with_and_without_final_newline() {
        assert_eq!(
            lines_of(b"a\r\nbb\n\nccc"),
            vec![
                (1, b"a".to_vec(), false),
                (2, b"bb".to_vec(), false),
                (3, b"".to_vec(), false),
                (4, b"ccc".to_vec(), false),
            ]
        );
        assert!(lines_of(b"").is_empty());
        assert_eq!(lines_of(b"x\n"), vec![(1, b"x".to_vec(), false)]);
    }

    #[test]
    fn reads_lines_across_buffer_refills() {
        let mut input = Vec::new();
        for i in 0..600_000u32 {
            input.extend_from_slice(format!("{i}\n").as_bytes());
        }
        let lines = lines_of(&input);
        assert_eq!(lines.len(), 600_000);
        for (i, (number, bytes, _)) in lines.iter().enumerate() {
            assert_eq!(*number, i as u64 + 1);
            assert_eq!(bytes, i.to_string().as_bytes());
        }
    }

    #[test]
    fn cuts_over_long_lines_and_goes_on() {
        let mut input = vec![b'7'; MAX_LINE * 3];
        input.extend_from_slice(b"\nnext\n");
        let lines = lines_of(&input);
        assert_eq!(lines.len(), 2);
        assert!(lines[0].2);
        assert_eq!(lines[0].1.len(), MAX_LINE);
        assert_eq!(lines[1], (2, b"next".to_vec(), false));
        let mut tail = b"ok\n".to_vec();
        tail.extend(vec![b'8'; MAX_LINE + 5]);
        let lines = lines_of(&tail);
        assert_eq!(lines.len(), 2);
        assert!(lines[1].2);
    }

    #[test]
    fn parses_us_registry_records() {
        let number = parse_us_record(b"201,5550123").unwrap();
        assert_eq!(number.get(), 12_015_550_123);
        assert_eq!(parse_us_record(b" 201 , 5550123\r").unwrap(), number);
        for (bad, kind) in [
            (&b"2015550123"[..], "bad_record"),
            (b"20,5550123", "bad_record"),
            (b"201,555012", "bad_record"),
            (b"201,55501x3", "bad_record"),
            (b"101,5550123", "bad_area_code"),
            (b"201,1550123", "bad_exchange"),
            (b"201,0550123", "bad_exchange"),
        ] {
            assert_eq!(parse_us_record(bad).unwrap_err().kind, kind, "{bad:?}");
        }
    }

    #[test]
    fn parses_change_actions() {
        let (number, action) = parse_us_change(b"201,5550123,D").unwrap();
        assert_eq!((number.get(), action), (12_015_550_123, Action::Delete));
        assert_eq!(parse_us_change(b"201,5550123,A").unwrap().1, Action::Add);
        assert_eq!(
            parse_us_change(b"201,5550123").unwrap_err().kind,
            "bad_action"
        );
        assert_eq!(
            parse_us_change(b"201,5550123,X").unwrap_err().kind,
            "bad_action"
        );
        let parser = NumberParser::new(None);
        let (number, action) = parse_lines_change(&parser, b"+48601234567, d", false).unwrap();
        assert_eq!((number.get(), action), (48_601_234_567, Action::Delete));
    }

    #[test]
    fn line_errors_never_hold_the_number() {
        let parser = NumberParser::new(None);
        for bad in [&b"+4860123456789012345"[..], b"601234567", b"+48 60x234567"] {
            let error = parse_number(&parser, bad, true).unwrap_err();
            assert!(!error.reason.contains("601234567"), "{}", error.reason);
            assert!(!error.reason.contains("1234567"), "{}", error.reason);
        }
    }

    #[test]
    fn numbers_for_a_daemon_come_from_arguments_then_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("numbers.txt");
        std::fs::write(&path, "# opt-outs\n +48600100200 \n\n600 100 200\r\n").unwrap();
        let given = vec!["+12015550123".to_owned()];
        assert_eq!(
            read_numbers(&given, Some(&path)).unwrap(),
            ["+12015550123", "+48600100200", "600 100 200"]
        );
        assert_eq!(read_numbers(&given, None).unwrap(), given);
        let missing = dir.path().join("missing.txt");
        let error = read_numbers(&[], Some(&missing)).unwrap_err();
        assert!(error.starts_with(&missing.display().to_string()), "{error}");
    }
}
