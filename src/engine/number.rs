//! Phone numbers as 64-bit keys.
//!
//! This module owns:
//! - [`Number`]: an E.164 number stored as the integer of its digits (`+48 601 234 567` is
//!   `48601234567`), the key every set is built from and looked up by;
//! - the hot parser ([`Number::parse_e164`], [`Number::parse_e164_bytes`]): exactly `+` and 8 to
//!   15 ASCII digits with an assigned country calling code, checked against a const table so it
//!   never touches libphonenumber (tens of nanoseconds, no allocation on success);
//! - the full parser ([`NumberParser`]): national and formatted input with a default
//!   [`Region`], through rlibphonenumber, accepting only numbers it calls valid;
//! - masking ([`Number::masked`], [`mask_input`]): the only forms a number may take in an error or
//!   a log line.
//!
//! It must never do I/O, never log, and never put a number in the clear into an error message or
//! a `Display`/`Debug` output: clear text needs an explicit [`Number::to_e164_string`]. The hot
//! path must never call libphonenumber (its regexes cost microseconds).
//!
//! rlibphonenumber itself emits `log` records at trace level that contain the numbers it parses;
//! nothing here installs a logger, and the daemon must not enable trace for that crate.
//!
//! # What the full parser accepts
//!
//! Whatever rlibphonenumber parses into a number it calls valid, as long as that number also has
//! 8 to 15 digits. Checked forms (see the tests):
//! - national numbers of the default region: `601 234 567` (PL), `(201) 555-0123` (US),
//!   `020 7183 8750` (GB: the trunk prefix 0 is removed);
//! - the default region's international prefix: `0048 601 234 567` (PL), `00 44 20 7183 8750` (GB),
//!   `011 48 601 234 567` (US);
//! - `+` with any punctuation, `tel:` URIs, fullwidth and other-script digits, and US vanity
//!   letters (`1-800-FLOWERS`); no default region is needed for these.
//!
//! An extension (`601 234 567 ext. 12`) is dropped: the key is the line itself. Rejected:
//! - a trunk prefix where the country has none: `0601 234 567` with PL is the 10-digit
//!   `+480601234567`, which is invalid ([`NumberError::InvalidNumber`]);
//! - a bare `+digits` input that rlibphonenumber would silently rewrite (`+4402071838750` loses
//!   its 0): in that form the digits are the key, so they must be valid as they stand;
//! - valid numbers shorter than 8 digits (Niue `+683 4002`, Tokelau `+690 3010`):
//!   [`NumberError::TooShort`], because [`Number`] holds 8 to 15 digits;
//! - input over 64 bytes ([`NumberError::TooLong`]), before the library sees it.

use std::fmt;
use std::str::FromStr;

use rlibphonenumber::enums::Region as LibRegion;
use rlibphonenumber::{PHONE_NUMBER_UTIL, ParseError, PhoneNumberFormat};

mod bulk;

/// Assigned country calling codes, as rlibphonenumber knows them (a unit test keeps the two
/// equal). Kept here as a const so the hot path needs no library call and no lazy init.
const ASSIGNED_CALLING_CODES: [u16; 215] = [
    1, 7, 20, 27, 30, 31, 32, 33, 34, 36, 39, 40, 41, 43, 44, 45, 46, 47, 48, 49, 51, 52, 53, 54,
    55, 56, 57, 58, 60, 61, 62, 63, 64, 65, 66, 81, 82, 84, 86, 90, 91, 92, 93, 94, 95, 98, 211,
    212, 213, 216, 218, 220, 221, 222, 223, 224, 225, 226, 227, 228, 229, 230, 231, 232, 233, 234,
    235, 236, 237, 238, 239, 240, 241, 242, 243, 244, 245, 246, 247, 248, 249, 250, 251, 252, 253,
    254, 255, 256, 257, 258, 260, 261, 262, 263, 264, 265, 266, 267, 268, 269, 290, 291, 297, 298,
    299, 350, 351, 352, 353, 354, 355, 356, 357, 358, 359, 370, 371, 372, 373, 374, 375, 376, 377,
    378, 380, 381, 382, 383, 385, 386, 387, 389, 420, 421, 423, 500, 501, 502, 503, 504, 505, 506,
    507, 508, 509, 590, 591, 592, 593, 594, 595, 596, 597, 598, 599, 670, 672, 673, 674, 675, 676,
    677, 678, 679, 680, 681, 682, 683, 685, 686, 687, 688, 689, 690, 691, 692, 800, 808, 850, 852,
    853, 855, 856, 870, 878, 880, 881, 882, 883, 886, 888, 960, 961, 962, 963, 964, 965, 966, 967,
    968, 970, 971, 972, 973, 974, 975, 976, 977, 979, 992, 993, 994, 995, 996, 998,
];

/// Bit `c` is set when `c` is an assigned calling code: one load and a shift per probe.
const CALLING_CODE_BITMAP: [u64; 16] = build_bitmap(&ASSIGNED_CALLING_CODES);

const fn build_bitmap(codes: &[u16]) -> [u64; 16] {
    let mut bitmap = [0u64; 16];
    let mut i = 0;
    while i < codes.len() {
        let code = codes[i] as usize;
        assert!(code > 0 && code < 1000, "calling codes have 1 to 3 digits");
        bitmap[code / 64] |= 1 << (code % 64);
        i += 1;
    }
    bitmap
}

#[inline(always)]
const fn is_assigned(code: u64) -> bool {
    code < 1000 && CALLING_CODE_BITMAP[(code / 64) as usize] & (1 << (code % 64)) != 0
}

/// Bit `p` is set when the three leading digits `p` start with an assigned calling code; never
/// for `p` under 100 (a leading 0). The hot path checks both with this one lookup.
const PREFIX_BITMAP: [u64; 16] = {
    let mut bitmap = [0u64; 16];
    let mut prefix = 100;
    while prefix < 1000 {
        if is_assigned(prefix / 100) || is_assigned(prefix / 10) || is_assigned(prefix) {
            bitmap[(prefix / 64) as usize] |= 1 << (prefix % 64);
        }
        prefix += 1;
    }
    bitmap
};

/// Whether three leading digits (0..=999) start a number with an assigned calling code.
#[inline(always)]
const fn has_calling_code(prefix: u64) -> bool {
    PREFIX_BITMAP[(prefix / 64 % 16) as usize] & (1 << (prefix % 64)) != 0
}

/// The three leading digits of a `digits`-digit value (3..=15 digits). Each arm divides by a
/// constant, which compiles to a multiply and a shift; the arm follows the digit count, the
/// same for every number of one country.
#[inline(always)]
const fn leading_three(value: u64, digits: u32) -> u64 {
    match digits {
        3 => value,
        4 => value / 10,
        5 => value / 100,
        6 => value / 1_000,
        7 => value / 10_000,
        8 => value / 100_000,
        9 => value / 1_000_000,
        10 => value / 10_000_000,
        11 => value / 100_000_000,
        12 => value / 1_000_000_000,
        13 => value / 10_000_000_000,
        14 => value / 100_000_000_000,
        15 => value / 1_000_000_000_000,
        _ => value / POW10[digits.saturating_sub(3) as usize % 20],
    }
}

/// `POW10[i]` = 10^i (every power of ten a u64 holds).
pub const POW10: [u64; 20] = {
    let mut table = [1u64; 20];
    let mut i = 1;
    while i < 20 {
        table[i] = table[i - 1] * 10;
        i += 1;
    }
    table
};

/// Longest input the full parser hands to the library: far above any formatted number, and it
/// bounds the library's regex work on hostile input.
const MAX_INPUT_BYTES: usize = 64;

/// Digits left visible at the end of a masked number or input: enough to tell two apart in a
/// log, too few to dial.
const VISIBLE_DIGITS: usize = 3;

/// Characters of user input kept in an error message.
const MASK_MAX_CHARS: usize = 32;

/// Digit count of `value` (1 for 0), without `ilog10`'s panic on 0.
#[inline]
const fn count_digits(value: u64) -> u32 {
    match value.checked_ilog10() {
        Some(log) => log + 1,
        None => 1,
    }
}

/// The calling code prefix of a `digits`-digit `value`, or 0 when none is assigned. Codes are
/// prefix-free, so the first match of 1, 2 and 3 leading digits is the only one.
const fn calling_code_of(value: u64, digits: u32) -> u16 {
    let mut len = 1;
    while len <= 3 && len < digits {
        let prefix = value / POW10[(digits - len) as usize];
        if is_assigned(prefix) {
            return prefix as u16;
        }
        len += 1;
    }
    0
}

/// Whether `value` is a [`Number`]: 8 to 15 digits with an assigned calling code.
const fn is_number_value(value: u64) -> bool {
    let digits = count_digits(value);
    digits >= Number::MIN_DIGITS
        && digits <= Number::MAX_DIGITS
        && calling_code_of(value, digits) != 0
}

/// An E.164 number (country code + national number, at most 15 digits) stored as the integer of
/// its digits: +48 601 234 567 -> 48601234567. Leading digit is never 0, so the integer is unique.
///
/// `Display` and `Debug` print the masked form, so `{}`/`{:?}` in a log can never leak it.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(transparent)]
pub struct Number(u64);

impl Number {
    /// The integers of a slice of numbers, without copying (batched lookups of plain sets).
    #[inline]
    pub fn as_u64_slice(numbers: &[Number]) -> &[u64] {
        // SAFETY: `Number` is `repr(transparent)` over `u64`: same size, alignment and validity,
        // and the shared borrow keeps the numbers alive and unchanged for the result's lifetime.
        unsafe { std::slice::from_raw_parts(numbers.as_ptr().cast::<u64>(), numbers.len()) }
    }

    /// E.164's maximum length, country code included.
    pub const MAX_DIGITS: u32 = 15;
    /// Shortest number accepted, country code included.
    pub const MIN_DIGITS: u32 = 8;

    /// Hot path: exactly '+' followed by 8..=15 ASCII digits, first digit 1-9, with an assigned
    /// country calling code. Never calls libphonenumber. Target: tens of nanoseconds.
    #[inline]
    pub fn parse_e164(input: &str) -> Result<Number, NumberError> {
        // Everything before the first rejected byte is ASCII, so byte positions in errors are
        // also character positions.
        Self::parse_e164_bytes(input.as_bytes())
    }

    /// Same on bytes (used by file readers): error positions are byte offsets.
    #[inline]
    pub fn parse_e164_bytes(input: &[u8]) -> Result<Number, NumberError> {
        match parse_e164_fast(input) {
            Some(number) => Ok(number),
            None => Err(e164_error(input)),
        }
    }

    /// The digits as an integer (8..=15 digits, assigned country code), e.g. from a packed
    /// fixed64 field. 0 is [`NumberError::Empty`] (an unset field); values of 16 digits or more
    /// are [`NumberError::Overflow`].
    ///
    /// Inlined with the refusals out of line: a batch converts every number with it, and a
    /// call returning the 56-byte `Result` through memory cost 14 % of the daemon's CheckStream
    /// profile (BENCHMARKS.md, issue 18).
    #[inline]
    pub fn from_u64(value: u64) -> Result<Number, NumberError> {
        let in_range = (POW10[Self::MIN_DIGITS as usize - 1]..POW10[Self::MAX_DIGITS as usize])
            .contains(&value);
        // In range, the number has 8 to 15 digits and its three leading digits decide.
        if in_range && has_calling_code(leading_three(value, count_digits(value))) {
            return Ok(Number(value));
        }
        Number::refuse_u64(value)
    }

    /// Why [`Number::from_u64`] refuses `value`.
    #[cold]
    #[inline(never)]
    fn refuse_u64(value: u64) -> Result<Number, NumberError> {
        if value == 0 {
            return Err(NumberError::Empty);
        }
        if value >= POW10[Self::MAX_DIGITS as usize] {
            return Err(NumberError::Overflow);
        }
        let digits = count_digits(value);
        if digits < Self::MIN_DIGITS {
            return Err(NumberError::TooShort {
                digits: digits as usize,
                min: Self::MIN_DIGITS as usize,
            });
        }
        // 8 to 15 digits and refused: its leading digits start no assigned calling code.
        Err(NumberError::UnknownCountryCode {
            input: Number(value).masked().to_string(),
        })
    }

    /// Trusted constructor for values already validated (e.g. read back from our own files);
    /// debug_assert only.
    pub const fn from_u64_unchecked(value: u64) -> Number {
        debug_assert!(
            is_number_value(value),
            "Number::from_u64_unchecked: not an 8 to 15 digit number with an assigned country code"
        );
        Number(value)
    }

    /// The digits as an integer: the set key.
    #[inline]
    pub const fn get(self) -> u64 {
        self.0
    }

    /// The 1 to 3 digit country calling code (1, 48, 880...), from the const table. 0 only for
    /// a value that bypassed validation through [`Number::from_u64_unchecked`].
    pub fn country_code(self) -> u16 {
        calling_code_of(self.0, self.digit_count())
    }

    /// Number of digits, country code included (8..=15 for any validated number).
    pub fn digit_count(self) -> u32 {
        count_digits(self.0)
    }

    /// "+48601234567" — the clear text. Only for explicit user requests (e.g. --show-numbers).
    pub fn to_e164_string(self) -> String {
        format!("+{}", self.0)
    }

    /// Masked form for logs/errors: country code kept, all but the last 3 digits replaced:
    /// "+48******567".
    pub fn masked(self) -> MaskedNumber {
        MaskedNumber(self)
    }
}

impl fmt::Display for Number {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.masked(), f)
    }
}

impl fmt::Debug for Number {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.masked(), f)
    }
}

impl TryFrom<u64> for Number {
    type Error = NumberError;

    fn try_from(value: u64) -> Result<Number, NumberError> {
        Number::from_u64(value)
    }
}

/// A [`Number`] shown as "+48******567": the country code, one '*' per hidden digit, the last 3
/// digits. Display and Debug print the same text.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct MaskedNumber(Number);

impl fmt::Display for MaskedNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let value = self.0.get();
        let digits = count_digits(value) as usize;
        let mut text = [0u8; 21];
        text[0] = b'+';
        let mut rest = value;
        for slot in text[1..=digits].iter_mut().rev() {
            *slot = b'0' + (rest % 10) as u8;
            rest /= 10;
        }
        // Keep the country code only when at least the visible tail stays apart from it, so a
        // value that bypassed validation still never prints whole.
        let code = self.0.country_code();
        let code_len = if code == 0 {
            0
        } else {
            count_digits(u64::from(code)) as usize
        };
        let keep_front = if code_len + VISIBLE_DIGITS < digits {
            code_len
        } else {
            0
        };
        let keep_back = VISIBLE_DIGITS.min(digits.saturating_sub(1));
        for slot in &mut text[1 + keep_front..=digits - keep_back] {
            *slot = b'*';
        }
        // Only ASCII was written.
        f.write_str(std::str::from_utf8(&text[..=digits]).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for MaskedNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The success path of the hot parser: no allocation, no error construction, and no branch that
/// depends on the length or the digits, so a batch of mixed lengths does not mispredict.
#[inline(always)]
fn parse_e164_fast(input: &[u8]) -> Option<Number> {
    let (&plus, digits) = input.split_first()?;
    if plus != b'+'
        || digits.len() < Number::MIN_DIGITS as usize
        || digits.len() > Number::MAX_DIGITS as usize
    {
        return None;
    }
    // Two overlapping 8-byte loads cover all 8..=15 digits.
    let head = u64::from_le_bytes(*digits.first_chunk::<8>()?);
    let tail = u64::from_le_bytes(*digits.last_chunk::<8>()?);
    // The head shifted so that its digits not already in the tail fill the top of the chunk;
    // vacated bytes are 0, which counts as the digit 0. Two shifts, as 8 digits shift by 64.
    let shift = 8 * (2 * 8 - digits.len() as u32);
    let high = (head << (shift - 8)) << 8;
    let value = eight_digits(high) * 100_000_000 + eight_digits(tail);
    // The first three digits decide both "not 0" and "assigned country code".
    let prefix = (head & 0xF) * 100 + (head >> 8 & 0xF) * 10 + (head >> 16 & 0xF);
    let valid = all_digits(head) & all_digits(tail) & has_calling_code(prefix);
    valid.then_some(Number(value))
}

const ASCII_ZEROS: u64 = 0x3030_3030_3030_3030;

/// Whether all 8 bytes are ASCII digits: high nibble 3, and low nibble under 10 (adding 6
/// must not carry into the high nibble).
#[inline(always)]
const fn all_digits(chunk: u64) -> bool {
    const HIGH_NIBBLES: u64 = 0xF0F0_F0F0_F0F0_F0F0;
    (chunk & HIGH_NIBBLES == ASCII_ZEROS)
        & (chunk.wrapping_add(0x0606_0606_0606_0606) & HIGH_NIBBLES == ASCII_ZEROS)
}

/// The value of 8 digits loaded little-endian (first digit in the low byte), by combining
/// neighbours into pairs, quads, then all eight: three multiplications instead of eight.
/// Only low nibbles are read, so zero bytes count as the digit 0.
#[inline(always)]
const fn eight_digits(chunk: u64) -> u64 {
    let pairs = (chunk & 0x0F0F_0F0F_0F0F_0F0F).wrapping_mul(10 << 8 | 1) >> 8;
    let quads = (pairs & 0x00FF_00FF_00FF_00FF).wrapping_mul(100 << 16 | 1) >> 16;
    (quads & 0x0000_FFFF_0000_FFFF).wrapping_mul(10_000 << 32 | 1) >> 32
}

/// Why the hot parser refused `input`. Cold: only reached on bad input.
#[cold]
#[inline(never)]
fn e164_error(input: &[u8]) -> NumberError {
    let masked = || mask_input(&String::from_utf8_lossy(input));
    let Some((&first, digits)) = input.split_first() else {
        return NumberError::Empty;
    };
    if first != b'+' {
        return NumberError::NotANumber { input: masked() };
    }
    if let Some(index) = digits.iter().position(|byte| !byte.is_ascii_digit()) {
        return NumberError::NonDigit {
            position: index + 1,
            input: masked(),
        };
    }
    if digits.first() == Some(&b'0') {
        return NumberError::LeadingZero;
    }
    if digits.len() < Number::MIN_DIGITS as usize {
        return NumberError::TooShort {
            digits: digits.len(),
            min: Number::MIN_DIGITS as usize,
        };
    }
    if digits.len() > Number::MAX_DIGITS as usize {
        return NumberError::TooLong {
            digits: digits.len(),
            max: Number::MAX_DIGITS as usize,
        };
    }
    NumberError::UnknownCountryCode { input: masked() }
}

/// Mask arbitrary user input for error messages: every ASCII digit except the last 3 digits becomes
/// '*', the text is cut to at most 32 chars (append "…" when cut), control chars shown as '?'.
///
/// Digits of other scripts (fullwidth '３', Arabic-Indic '٣') count as digits too, since the full
/// parser accepts them. Invisible formatting characters (bidi overrides, zero-width) are shown as
/// '?' like control characters, so input cannot disguise itself in a log line.
pub fn mask_input(input: &str) -> String {
    let total = input.chars().filter(|c| c.is_numeric()).count();
    let first_visible = total.saturating_sub(VISIBLE_DIGITS);
    let mut out = String::with_capacity(MASK_MAX_CHARS + 3);
    let mut seen_digits = 0;
    for (index, c) in input.chars().enumerate() {
        if index == MASK_MAX_CHARS {
            out.push('…');
            break;
        }
        let shown = if c.is_numeric() {
            seen_digits += 1;
            if seen_digits > first_visible { c } else { '*' }
        } else if c.is_control() || is_invisible_format(c) {
            '?'
        } else {
            c
        };
        out.push(shown);
    }
    out
}

/// Unicode format characters that reorder or hide text.
fn is_invisible_format(c: char) -> bool {
    matches!(
        c,
        '\u{200B}'..='\u{200F}'
            | '\u{2028}'..='\u{202E}'
            | '\u{2060}'..='\u{2069}'
            | '\u{FEFF}'
            | '\u{061C}'
    )
}

/// A default region for national-format input ("PL", "US", "GB"...): one that rlibphonenumber
/// has metadata for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region(LibRegion);

impl Region {
    /// Case-insensitive two-letter code ("pl", "PL"); a code without metadata (including "ZZ"
    /// and the non-geographic "001") is [`NumberError::UnknownRegion`].
    pub fn parse(code: &str) -> Result<Region, NumberError> {
        let unknown = || NumberError::UnknownRegion {
            region: mask_input(code),
        };
        let region = LibRegion::from_code(code).map_err(|_| unknown())?;
        match PHONE_NUMBER_UTIL.get_country_code_for_region(region) {
            Some(_) if region != LibRegion::World => Ok(Region(region)),
            _ => Err(unknown()),
        }
    }

    /// The upper-case code, "PL".
    pub fn code(&self) -> String {
        self.0.to_string()
    }

    /// The region's country calling code, 48 for PL.
    pub fn calling_code(&self) -> u16 {
        // Region::parse only admits regions with metadata, so this is always Some.
        PHONE_NUMBER_UTIL
            .get_country_code_for_region(self.0)
            .and_then(|code| u16::try_from(code).ok())
            .unwrap_or(0)
    }
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl FromStr for Region {
    type Err = NumberError;

    fn from_str(code: &str) -> Result<Region, NumberError> {
        Region::parse(code)
    }
}

/// Full parser: national and formatted input with a default region, via rlibphonenumber.
/// See the module documentation for the forms accepted. Tries the hot path first when the input
/// is already '+digits'. Rejects numbers that are not valid (is_valid()) with InvalidNumber.
#[derive(Clone, Copy, Debug)]
pub struct NumberParser {
    default_region: Option<Region>,
}

impl NumberParser {
    /// A parser for national input of `default_region`; with `None`, only international input
    /// ('+', "tel:+") is accepted and national input is [`NumberError::NeedsRegion`].
    pub fn new(default_region: Option<Region>) -> NumberParser {
        NumberParser { default_region }
    }

    /// The region national input is read in.
    pub fn default_region(&self) -> Option<Region> {
        self.default_region
    }

    /// Parses any form rlibphonenumber accepts and returns the number only if it is valid.
    pub fn parse(&self, input: &str) -> Result<Number, NumberError> {
        self.parse_checked(input, true)
    }

    /// Like parse, but when the input is '+digits' only check syntax + country code (hot path,
    /// no validity check) — used for bulk loads of trusted registry data.
    pub fn parse_fast(&self, input: &str) -> Result<Number, NumberError> {
        self.parse_checked(input, false)
    }

    fn parse_checked(&self, input: &str, validate_e164: bool) -> Result<Number, NumberError> {
        if input.len() > MAX_INPUT_BYTES {
            return Err(input_too_long(input));
        }
        if is_plus_digits(input) {
            let number = Number::parse_e164(input)?;
            if validate_e164 {
                self.check_valid_e164(number, input)?;
            }
            return Ok(number);
        }
        self.parse_with_library(input)
    }

    /// Validity of a hot-path number. The library may rewrite bare digits (drop a national
    /// prefix after the country code); here the digits are the key, so a rewrite is a refusal.
    fn check_valid_e164(&self, number: Number, input: &str) -> Result<(), NumberError> {
        let parsed = PHONE_NUMBER_UTIL
            .parse(input, None)
            .map_err(|error| self.library_error(error, input))?;
        let same = PHONE_NUMBER_UTIL.format(&parsed, PhoneNumberFormat::E164) == input;
        if same && parsed.is_valid() {
            Ok(())
        } else {
            Err(NumberError::InvalidNumber {
                input: mask_input(input),
                region: self.region_label(u64::from(number.country_code())),
            })
        }
    }

    fn parse_with_library(&self, input: &str) -> Result<Number, NumberError> {
        if input.trim().is_empty() {
            return Err(NumberError::Empty);
        }
        let parsed = PHONE_NUMBER_UTIL
            .parse(input, self.default_region.map(|region| region.0))
            .map_err(|error| self.library_error(error, input))?;
        if !parsed.is_valid() {
            return Err(NumberError::InvalidNumber {
                input: mask_input(input),
                region: self.region_label(u64::try_from(parsed.country_code).unwrap_or(0)),
            });
        }
        // The E.164 text keeps leading zeros of the national number (Italy), which
        // country_code/national_number alone would lose.
        let e164 = PHONE_NUMBER_UTIL.format(&parsed, PhoneNumberFormat::E164);
        Number::parse_e164(&e164).map_err(|error| match error {
            // Only the user's own text may appear, masked, in errors.
            NumberError::UnknownCountryCode { .. } => NumberError::UnknownCountryCode {
                input: mask_input(input),
            },
            other => other,
        })
    }

    fn library_error(&self, error: ParseError, input: &str) -> NumberError {
        match error {
            ParseError::InvalidCountryCode
                if self.default_region.is_none() && !input.contains(['+', '＋']) =>
            {
                NumberError::NeedsRegion {
                    input: mask_input(input),
                }
            }
            ParseError::InvalidCountryCode => NumberError::UnknownCountryCode {
                input: mask_input(input),
            },
            ParseError::NotANumber(_) => NumberError::NotANumber {
                input: mask_input(input),
            },
            ParseError::TooShortAfterIdd | ParseError::TooShortNsn => NumberError::TooShort {
                digits: input.chars().filter(|c| c.is_numeric()).count(),
                min: Number::MIN_DIGITS as usize,
            },
            ParseError::TooLongNsn => NumberError::TooLong {
                digits: input.chars().filter(|c| c.is_numeric()).count(),
                max: Number::MAX_DIGITS as usize,
            },
        }
    }

    /// The region to name in an invalid-number error: the default region when the number is
    /// in its country, otherwise the main region of the calling code (none for "001" codes).
    fn region_label(&self, calling_code: u64) -> Option<String> {
        if let Some(region) = self.default_region
            && u64::from(region.calling_code()) == calling_code
        {
            return Some(region.code());
        }
        let code = i32::try_from(calling_code).ok()?;
        match PHONE_NUMBER_UTIL.get_region_for_country_code(code) {
            Some(LibRegion::World) | None => None,
            Some(region) => Some(region.to_string()),
        }
    }
}

fn is_plus_digits(input: &str) -> bool {
    match input.as_bytes().split_first() {
        Some((b'+', digits)) => !digits.is_empty() && digits.iter().all(u8::is_ascii_digit),
        _ => false,
    }
}

/// Over-long input: in digits when it holds too many, else in bytes.
#[cold]
fn input_too_long(input: &str) -> NumberError {
    let digits = input.chars().filter(|c| c.is_numeric()).count();
    if digits > Number::MAX_DIGITS as usize {
        NumberError::TooLong {
            digits,
            max: Number::MAX_DIGITS as usize,
        }
    } else {
        NumberError::TooLong {
            digits: input.len(),
            max: MAX_INPUT_BYTES,
        }
    }
}

/// Why a number was refused. Every message is short, lowercase, names what is wrong and never
/// contains the full number: user input appears only through [`mask_input`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NumberError {
    /// Nothing to parse (empty or blank input, or the value 0).
    #[error("empty number")]
    Empty,
    /// A character other than an ASCII digit after the '+' (hot path). `position` counts from
    /// 0 at the '+', in bytes, which equals characters since everything before it is ASCII.
    #[error("non-digit character at position {position} in '{input}'")]
    NonDigit { position: usize, input: String },
    /// Fewer digits than a [`Number`] holds.
    #[error("number too short: {digits} digits, at least {min}")]
    TooShort { digits: usize, min: usize },
    /// More digits than E.164 allows, or (when `max` is 64) more input bytes than the full
    /// parser reads.
    #[error("number too long: {digits} {unit}, at most {max}", unit = too_long_unit(*.max))]
    TooLong { digits: usize, max: usize },
    /// E.164 cannot start with 0.
    #[error("number starts with 0 after '+'")]
    LeadingZero,
    /// No assigned country calling code at the start of the number.
    #[error("unknown country calling code in '{input}'")]
    UnknownCountryCode { input: String },
    /// National format without a default region.
    #[error("national number '{input}' needs a default region")]
    NeedsRegion { input: String },
    /// A region code that rlibphonenumber has no metadata for (masked like input).
    #[error("unknown region '{region}'")]
    UnknownRegion { region: String },
    /// Parsed, but not a valid number for its region.
    #[error("invalid number '{input}'{}", for_region(.region))]
    InvalidNumber {
        input: String,
        region: Option<String>,
    },
    /// Not shaped like a phone number (for the hot path: no leading '+').
    #[error("not a phone number: '{input}'")]
    NotANumber { input: String },
    /// An integer of 16 or more digits.
    #[error("value too large for a 15-digit number")]
    Overflow,
}

fn too_long_unit(max: usize) -> &'static str {
    if max == MAX_INPUT_BYTES {
        "bytes"
    } else {
        "digits"
    }
}

fn for_region(region: &Option<String>) -> String {
    match region {
        Some(region) => format!(" for region {region}"),
        None => String::new(),
    }
}

impl NumberError {
    /// Stable short code for metrics and machine-readable output.
    pub fn kind(&self) -> &'static str {
        match self {
            NumberError::Empty => "empty",
            NumberError::NonDigit { .. } => "non_digit",
            NumberError::TooShort { .. } => "too_short",
            NumberError::TooLong { .. } => "too_long",
            NumberError::LeadingZero => "leading_zero",
            NumberError::UnknownCountryCode { .. } => "unknown_country_code",
            NumberError::NeedsRegion { .. } => "needs_region",
            NumberError::UnknownRegion { .. } => "unknown_region",
            NumberError::InvalidNumber { .. } => "invalid_number",
            NumberError::NotANumber { .. } => "not_a_number",
            NumberError::Overflow => "overflow",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rlibphonenumber::PhoneNumberType;
    use std::collections::BTreeSet;

    fn parser(code: &str) -> NumberParser {
        NumberParser::new(Some(Region::parse(code).unwrap()))
    }

    fn no_region() -> NumberParser {
        NumberParser::new(None)
    }

    fn n(value: u64) -> Number {
        Number::from_u64(value).unwrap()
    }

    // ---- calling code table ----

    #[test]
    fn calling_code_table_equals_rlibphonenumber() {
        let library: BTreeSet<u64> = PHONE_NUMBER_UTIL
            .get_supported_calling_codes()
            .map(|code| u64::try_from(code).unwrap())
            .collect();
        let ours: BTreeSet<u64> = (0..1024).filter(|&code| is_assigned(code)).collect();
        assert_eq!(ours, library);
        let listed: BTreeSet<u64> = ASSIGNED_CALLING_CODES.iter().map(|&c| c.into()).collect();
        assert_eq!(listed.len(), ASSIGNED_CALLING_CODES.len(), "no duplicates");
    }

    #[test]
    fn calling_codes_are_prefix_free() {
        for &code in &ASSIGNED_CALLING_CODES {
            let code = u64::from(code);
            let mut prefix = code / 10;
            while prefix > 0 {
                assert!(!is_assigned(prefix), "{prefix} is a prefix of {code}");
                prefix /= 10;
            }
        }
    }

    // ---- hot path ----

    #[test]
    fn hot_path_accepts_e164() {
        for (input, value, code) in [
            ("+48601234567", 48_601_234_567, 48),
            ("+12015550123", 12_015_550_123, 1),
            ("+442071838750", 442_071_838_750, 44),
            ("+79123456789", 79_123_456_789, 7),
            ("+8801712345678", 8_801_712_345_678, 880),
            ("+390669820000", 390_669_820_000, 39),
        ] {
            let number = Number::parse_e164(input).unwrap();
            assert_eq!(number.get(), value, "{input}");
            assert_eq!(number.country_code(), code, "{input}");
            assert_eq!(number.to_e164_string(), input);
            assert_eq!(Number::parse_e164_bytes(input.as_bytes()), Ok(number));
        }
    }

    #[test]
    fn hot_path_length_boundaries() {
        assert_eq!(Number::parse_e164("+48601234").unwrap().digit_count(), 8);
        assert_eq!(
            Number::parse_e164("+4860123"),
            Err(NumberError::TooShort { digits: 7, min: 8 })
        );
        let fifteen = Number::parse_e164("+486012345678901").unwrap();
        assert_eq!(fifteen.digit_count(), Number::MAX_DIGITS);
        assert_eq!(fifteen.get(), 486_012_345_678_901);
        assert_eq!(
            Number::parse_e164("+4860123456789012"),
            Err(NumberError::TooLong {
                digits: 16,
                max: 15
            })
        );
        assert_eq!(
            Number::parse_e164("+"),
            Err(NumberError::TooShort { digits: 0, min: 8 })
        );
    }

    #[test]
    fn hot_path_rejects_each_kind() {
        let cases: [(&str, &str); 12] = [
            ("", "empty"),
            ("48601234567", "not_a_number"),
            (" +48601234567", "not_a_number"),
            ("＋48601234567", "not_a_number"),
            ("+48 601234567", "non_digit"),
            ("+48601234567 ", "non_digit"),
            ("+48-601-234-567", "non_digit"),
            ("+048601234567", "leading_zero"),
            ("+0", "leading_zero"),
            ("+99912345678", "unknown_country_code"),
            ("+2812345678", "unknown_country_code"),
            ("+8091234567", "unknown_country_code"),
        ];
        for (input, kind) in cases {
            let error = Number::parse_e164(input).unwrap_err();
            assert_eq!(error.kind(), kind, "{input:?}: {error}");
        }
        assert_eq!(
            Number::parse_e164("+48 601234567"),
            Err(NumberError::NonDigit {
                position: 3,
                input: "+** ******567".into()
            })
        );
    }

    #[test]
    fn hot_path_rejects_unicode_digits() {
        for (input, position) in [
            ("+48٦٠١٢٣٤٥٦٧", 3),
            ("+48６０１２３４５６７", 3),
            ("+٤٨601234567", 1),
            ("+4860123456\u{0667}", 11),
        ] {
            match Number::parse_e164(input) {
                Err(NumberError::NonDigit { position: at, .. }) => {
                    assert_eq!(at, position, "{input}");
                    // Every byte before the offending one is ASCII: byte and char positions agree.
                    assert_eq!(input.chars().nth(at), input[at..].chars().next());
                }
                other => panic!("{input}: {other:?}"),
            }
        }
    }

    /// The word-at-a-time checks, byte by byte: any non-digit at any position of any accepted
    /// length is refused, and every digit position carries its weight.
    #[test]
    fn hot_path_checks_every_byte() {
        for len in 8..=15 {
            let base: Vec<u8> = std::iter::once(b'+')
                .chain(b"48".iter().copied())
                .chain((0..len - 2).map(|i| b'0' + (i % 10) as u8))
                .collect();
            let value: u64 = std::str::from_utf8(&base[1..]).unwrap().parse().unwrap();
            assert_eq!(Number::parse_e164_bytes(&base).map(Number::get), Ok(value));
            for position in 1..base.len() {
                for byte in (0..=255u8).filter(|b| !b.is_ascii_digit()) {
                    let mut bad = base.clone();
                    bad[position] = byte;
                    assert_eq!(
                        Number::parse_e164_bytes(&bad).unwrap_err().kind(),
                        "non_digit",
                        "{len} digits, {byte:#x} at {position}"
                    );
                }
                if position > 2 {
                    for digit in b'0'..=b'9' {
                        let mut other = base.clone();
                        other[position] = digit;
                        let expected: u64 =
                            std::str::from_utf8(&other[1..]).unwrap().parse().unwrap();
                        assert_eq!(Number::parse_e164_bytes(&other).unwrap().get(), expected);
                    }
                }
            }
        }
    }

    #[test]
    fn prefix_table_agrees_with_calling_codes() {
        for prefix in 0..1000u64 {
            let expected = prefix >= 100
                && (is_assigned(prefix / 100) || is_assigned(prefix / 10) || is_assigned(prefix));
            assert_eq!(has_calling_code(prefix), expected, "{prefix}");
        }
    }

    #[test]
    fn hot_path_never_overflows() {
        let forty_nines = format!("+{}", "9".repeat(40));
        assert_eq!(
            Number::parse_e164(&forty_nines),
            Err(NumberError::TooLong {
                digits: 40,
                max: 15
            })
        );
        assert_eq!(
            Number::parse_e164("+18446744073709551616")
                .unwrap_err()
                .kind(),
            "too_long"
        );
        assert_eq!(Number::from_u64(u64::MAX), Err(NumberError::Overflow));
        assert_eq!(
            Number::from_u64(1_000_000_000_000_000),
            Err(NumberError::Overflow)
        );
        assert_eq!(n(998_999_999_999_999).digit_count(), 15);
        // 15 nines: the largest 15-digit value, but 9, 99 and 999 are unassigned.
        assert_eq!(
            Number::from_u64(999_999_999_999_999).unwrap_err().kind(),
            "unknown_country_code"
        );
    }

    #[test]
    fn bytes_parser_reports_byte_offsets_and_survives_invalid_utf8() {
        assert_eq!(
            Number::parse_e164_bytes(b"+48601234567").unwrap().get(),
            48_601_234_567
        );
        let error = Number::parse_e164_bytes(b"+48\xff01234567").unwrap_err();
        assert_eq!(
            error,
            NumberError::NonDigit {
                position: 3,
                input: "+**\u{FFFD}*****567".into()
            }
        );
        assert_eq!(Number::parse_e164_bytes(b""), Err(NumberError::Empty));
        assert_eq!(
            Number::parse_e164_bytes(b"\xff").unwrap_err().kind(),
            "not_a_number"
        );
    }

    #[test]
    fn from_u64_checks_like_the_parser() {
        assert_eq!(Number::from_u64(0), Err(NumberError::Empty));
        assert_eq!(
            Number::from_u64(4_860_123),
            Err(NumberError::TooShort { digits: 7, min: 8 })
        );
        assert_eq!(Number::from_u64(48_601_234).unwrap().digit_count(), 8);
        assert_eq!(
            Number::from_u64(99_912_345_678),
            Err(NumberError::UnknownCountryCode {
                input: "+********678".into()
            })
        );
        assert_eq!(Number::try_from(48_601_234_567u64), Ok(n(48_601_234_567)));
        const KNOWN: Number = Number::from_u64_unchecked(48_601_234_567);
        assert_eq!(KNOWN, n(48_601_234_567));
        assert!(n(12_015_550_123) < n(48_601_234_567));
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "from_u64_unchecked")]
    fn from_u64_unchecked_asserts_in_debug_builds() {
        let _ = Number::from_u64_unchecked(1);
    }

    #[test]
    fn accessors() {
        let number = n(48_601_234_567);
        assert_eq!(number.country_code(), 48);
        assert_eq!(number.digit_count(), 11);
        assert_eq!(number.get(), 48_601_234_567);
        assert_eq!(number.to_e164_string(), "+48601234567");
        assert_eq!(n(18_003_569_377).country_code(), 1);
        assert_eq!(n(8_801_712_345_678).country_code(), 880);
        assert_eq!(n(88_212_345_678).country_code(), 882);
        assert_eq!(n(86_212_345_678).country_code(), 86);
    }

    // ---- masking ----

    #[test]
    fn numbers_print_masked() {
        let number = n(48_601_234_567);
        assert_eq!(number.masked().to_string(), "+48******567");
        assert_eq!(format!("{number}"), "+48******567");
        assert_eq!(format!("{number:?}"), "+48******567");
        assert_eq!(format!("{:?}", number.masked()), "+48******567");
        assert_eq!(format!("{:?}", Some(number)), "Some(+48******567)");
        assert_eq!(n(12_015_550_123).to_string(), "+1*******123");
        assert_eq!(n(48_601_234).to_string(), "+48***234");
        assert_eq!(n(8_801_712_345_678).to_string(), "+880*******678");
        assert_eq!(n(486_012_345_678_901).to_string(), "+48**********901");
    }

    #[test]
    fn masking_is_total_for_unvalidated_values() {
        // Values that only from_u64_unchecked in a release build could produce.
        for (value, shown) in [
            (0, "+*"),
            (1, "+*"),
            (12, "+*2"),
            (1234, "+*234"),
            (12_345, "+1*345"),
            (99_912_345_678, "+********678"),
            (u64::MAX, "+1****************615"),
        ] {
            let number = Number(value);
            assert_eq!(number.to_string(), shown, "{value}");
            let _ = (number.country_code(), number.digit_count());
        }
    }

    #[test]
    fn mask_input_hides_digits_cuts_and_neutralises() {
        assert_eq!(mask_input("+48 601 234 567"), "+** *** *** 567");
        assert_eq!(mask_input("abc"), "abc");
        assert_eq!(mask_input("12"), "12");
        assert_eq!(mask_input("\0+4\n8\u{7f}"), "?+4?8?");
        assert_eq!(mask_input("+48６０１２３４５６７"), "+********５６７");
        assert_eq!(mask_input("a\u{202E}b\u{200B}c"), "a?b?c");
        let long = "x".repeat(40);
        assert_eq!(mask_input(&long), format!("{}…", "x".repeat(32)));
        assert_eq!(mask_input(&"y".repeat(32)), "y".repeat(32));
        // Cutting happens after choosing the visible digits, so a cut may hide them too.
        let cut = mask_input(&format!("{}48601234567", "-".repeat(30)));
        assert_eq!(cut, format!("{}**…", "-".repeat(30)));
    }

    #[test]
    fn error_messages_are_short_and_masked() {
        let cases: Vec<(NumberError, &str)> = vec![
            (NumberError::Empty, "empty number"),
            (
                Number::parse_e164("+48 601234567").unwrap_err(),
                "non-digit character at position 3 in '+** ******567'",
            ),
            (
                Number::parse_e164("+4860123").unwrap_err(),
                "number too short: 7 digits, at least 8",
            ),
            (
                Number::parse_e164("+4860123456789012").unwrap_err(),
                "number too long: 16 digits, at most 15",
            ),
            (
                no_region().parse(&"-".repeat(65)).unwrap_err(),
                "number too long: 65 bytes, at most 64",
            ),
            (
                Number::parse_e164("+048601234567").unwrap_err(),
                "number starts with 0 after '+'",
            ),
            (
                Number::parse_e164("+99912345678").unwrap_err(),
                "unknown country calling code in '+********678'",
            ),
            (
                no_region().parse("601 234 567").unwrap_err(),
                "national number '*** *** 567' needs a default region",
            ),
            (Region::parse("X1").unwrap_err(), "unknown region 'X1'"),
            (
                parser("PL").parse("+48 601 234 56").unwrap_err(),
                "invalid number '+** *** **4 56' for region PL",
            ),
            (
                no_region().parse("+882 3420 0000").unwrap_err(),
                "invalid number '+*** **** *000'",
            ),
            (
                parser("PL").parse("abc").unwrap_err(),
                "not a phone number: 'abc'",
            ),
            (
                Number::from_u64(u64::MAX).unwrap_err(),
                "value too large for a 15-digit number",
            ),
        ];
        let mut kinds = BTreeSet::new();
        for (error, message) in &cases {
            assert_eq!(error.to_string(), *message);
            kinds.insert(error.kind());
        }
        assert_eq!(kinds.len(), 11, "every kind covered: {kinds:?}");
    }

    // ---- regions ----

    #[test]
    fn regions() {
        let pl = Region::parse("pl").unwrap();
        assert_eq!(pl, Region::parse("PL").unwrap());
        assert_eq!(pl, "Pl".parse::<Region>().unwrap());
        assert_eq!(pl.code(), "PL");
        assert_eq!(pl.to_string(), "PL");
        assert_eq!(pl.calling_code(), 48);
        assert_eq!(Region::parse("US").unwrap().calling_code(), 1);
        assert_eq!(Region::parse("gb").unwrap().calling_code(), 44);
        assert_eq!(Region::parse("CA").unwrap().calling_code(), 1);
        for bad in ["", "P", "POL", "ZZ", "QQ", "001", "p1", "ＰＬ", " PL"] {
            assert_eq!(
                Region::parse(bad).unwrap_err().kind(),
                "unknown_region",
                "{bad:?}"
            );
        }
        assert_eq!(
            Region::parse("48601234567"),
            Err(NumberError::UnknownRegion {
                region: "********567".into()
            })
        );
        assert_eq!(parser("PL").default_region(), Some(pl));
        assert_eq!(no_region().default_region(), None);
    }

    // ---- full parser ----

    #[test]
    fn full_parser_formatted_examples() {
        let cases: [(&str, Option<&str>, u64); 19] = [
            ("601 234 567", Some("PL"), 48_601_234_567),
            ("0048 601 234 567", Some("PL"), 48_601_234_567),
            ("+48 601-234-567", Some("PL"), 48_601_234_567),
            ("+48 601-234-567", None, 48_601_234_567),
            ("tel:+48601234567", None, 48_601_234_567),
            ("tel:+48601234567", Some("PL"), 48_601_234_567),
            ("tel:601234567;phone-context=+48", None, 48_601_234_567),
            ("601 234 567 ext. 12", Some("PL"), 48_601_234_567),
            ("+48 ６０１ ２３４ ５６７", None, 48_601_234_567),
            ("+48 ٦٠١٢٣٤٥٦٧", None, 48_601_234_567),
            ("(415) 555-0100", Some("US"), 14_155_550_100),
            ("(201) 555-0123", Some("US"), 12_015_550_123),
            ("011 48 601 234 567", Some("US"), 48_601_234_567),
            ("1-800-FLOWERS", Some("US"), 18_003_569_377),
            ("00 44 20 7183 8750", Some("GB"), 442_071_838_750),
            ("020 7183 8750", Some("GB"), 442_071_838_750),
            ("+44 (0)20 7183 8750", None, 442_071_838_750),
            ("+39 06 6982 0000", None, 390_669_820_000),
            ("\0+48601234567", None, 48_601_234_567),
        ];
        for (input, region, value) in cases {
            let parser = NumberParser::new(region.map(|code| Region::parse(code).unwrap()));
            assert_eq!(parser.parse(input), Ok(n(value)), "{input:?} {region:?}");
            assert_eq!(
                parser.parse_fast(input),
                Ok(n(value)),
                "{input:?} {region:?}"
            );
        }
    }

    #[test]
    fn full_parser_rejects_invalid_numbers() {
        for (input, region, label) in [
            ("0601 234 567", Some("PL"), Some("PL")),
            ("(0) 601 234 567", Some("PL"), Some("PL")),
            ("+48 601 234 56", None, Some("PL")),
            ("(415) 555-01", Some("US"), Some("US")),
            ("+1 415 555 01", Some("CA"), Some("CA")),
            ("+882 3420 0000", Some("PL"), None),
            ("+48 601 234 567 890 123", None, Some("PL")),
        ] {
            let parser = NumberParser::new(region.map(|code| Region::parse(code).unwrap()));
            for result in [parser.parse(input), parser.parse_fast(input)] {
                match result {
                    Err(NumberError::InvalidNumber { region, .. }) => {
                        assert_eq!(region.as_deref(), label, "{input:?}")
                    }
                    other => panic!("{input:?}: {other:?}"),
                }
            }
        }
    }

    #[test]
    fn bare_e164_is_validated_by_parse_but_not_by_parse_fast() {
        let parser = parser("PL");
        // Syntactically fine, but 8 national digits are not a Polish number.
        assert_eq!(
            parser.parse("+4860123456").unwrap_err().kind(),
            "invalid_number"
        );
        assert_eq!(parser.parse_fast("+4860123456"), Ok(n(4_860_123_456)));
        // The library would drop the 0; as bare digits that is a different key, so refuse.
        assert_eq!(
            parser.parse("+4402071838750").unwrap_err().kind(),
            "invalid_number"
        );
        assert_eq!(
            parser.parse_fast("+4402071838750"),
            Ok(n(4_402_071_838_750))
        );
        // Hot-path errors come back as they are, from both.
        for (input, kind) in [
            ("+999123456789", "unknown_country_code"),
            ("+0486012345", "leading_zero"),
            ("+48601", "too_short"),
            ("+4860123456789012", "too_long"),
        ] {
            assert_eq!(parser.parse(input).unwrap_err().kind(), kind, "{input}");
            assert_eq!(
                parser.parse_fast(input).unwrap_err().kind(),
                kind,
                "{input}"
            );
        }
        assert_eq!(parser.parse("+48601234567"), Ok(n(48_601_234_567)));
    }

    #[test]
    fn full_parser_needs_a_region_for_national_input() {
        for input in [
            "601 234 567",
            "0048 601 234 567",
            "48601234567",
            "tel:601234567",
        ] {
            assert_eq!(
                no_region().parse(input).unwrap_err().kind(),
                "needs_region",
                "{input}"
            );
        }
        assert_eq!(
            no_region().parse("+999 1234 5678").unwrap_err().kind(),
            "unknown_country_code"
        );
        assert_eq!(
            parser("PL").parse("00 999 1234 5678").unwrap_err().kind(),
            "unknown_country_code"
        );
    }

    #[test]
    fn full_parser_other_errors() {
        let pl = parser("PL");
        assert_eq!(pl.parse(""), Err(NumberError::Empty));
        assert_eq!(pl.parse(" \t "), Err(NumberError::Empty));
        assert_eq!(pl.parse("abc").unwrap_err().kind(), "not_a_number");
        assert_eq!(pl.parse("+").unwrap_err().kind(), "not_a_number");
        assert_eq!(pl.parse("+48 1").unwrap_err().kind(), "too_short");
        assert_eq!(pl.parse("0048").unwrap_err().kind(), "too_short");
        assert_eq!(
            pl.parse("6012345678901234567").unwrap_err().kind(),
            "too_long"
        );
        // Valid, but shorter than a Number holds.
        assert_eq!(
            no_region().parse("+683 4002"),
            Err(NumberError::TooShort { digits: 7, min: 8 })
        );
        assert_eq!(
            pl.parse(&format!("{}+48601234567", " ".repeat(53))),
            Err(NumberError::TooLong {
                digits: 65,
                max: 64
            })
        );
        assert_eq!(
            pl.parse(&"1".repeat(70)),
            Err(NumberError::TooLong {
                digits: 70,
                max: 15
            })
        );
        assert_eq!(
            pl.parse(&"1".repeat(10_000)).unwrap_err().kind(),
            "too_long"
        );
    }

    /// Every example number rlibphonenumber ships, in E.164 and in national format with its
    /// region, comes back as the same Number (or TooShort where it has under 8 digits).
    #[test]
    fn every_example_number_round_trips() {
        let types = [
            PhoneNumberType::FixedLine,
            PhoneNumberType::Mobile,
            PhoneNumberType::TollFree,
            PhoneNumberType::PremiumRate,
            PhoneNumberType::SharedCost,
            PhoneNumberType::VoIP,
            PhoneNumberType::PersonalNumber,
            PhoneNumberType::Pager,
            PhoneNumberType::UAN,
            PhoneNumberType::VoiceMail,
        ];
        let (mut checked, mut short) = (0, 0);
        let mut check = |example: &rlibphonenumber::PhoneNumber, region: Option<LibRegion>| {
            let e164 = PHONE_NUMBER_UTIL.format(example, PhoneNumberFormat::E164);
            let digits = e164.len() - 1;
            let expected: Result<u64, NumberError> = if digits < 8 {
                short += 1;
                Err(NumberError::TooShort { digits, min: 8 })
            } else {
                Ok(e164[1..].parse().unwrap())
            };
            let got = no_region().parse(&e164).map(Number::get);
            assert_eq!(got, expected, "{e164}");
            if let Some(region) = region {
                let national = PHONE_NUMBER_UTIL.format(example, PhoneNumberFormat::National);
                let got = NumberParser::new(Some(Region(region)))
                    .parse(&national)
                    .map(Number::get);
                assert_eq!(got, expected, "{national} in {region}");
            }
            checked += 1;
        };
        for region in PHONE_NUMBER_UTIL.get_supported_regions() {
            for &kind in &types {
                if let Ok(example) =
                    PHONE_NUMBER_UTIL.get_example_number_for_type_and_region(region, kind)
                {
                    check(&example, Some(region));
                }
            }
        }
        for code in PHONE_NUMBER_UTIL.get_supported_global_network_calling_codes() {
            if let Ok(example) = PHONE_NUMBER_UTIL.get_example_number_for_non_geo_entity(code) {
                check(&example, None);
            }
        }
        assert!(checked > 1000, "only {checked} examples");
        assert!(short < 20, "{short} examples under 8 digits");
    }

    // ---- properties ----

    /// Any Number: an assigned calling code followed by random digits, 8 to 15 in all.
    fn any_number() -> impl Strategy<Value = Number> {
        (0..ASSIGNED_CALLING_CODES.len(), 8u32..=15, any::<u64>()).prop_map(
            |(index, total, noise)| {
                let code = u64::from(ASSIGNED_CALLING_CODES[index]);
                let rest = total - count_digits(code);
                Number::from_u64(code * POW10[rest as usize] + noise % POW10[rest as usize])
                    .unwrap()
            },
        )
    }

    /// Text that looks like phone numbers often enough to reach every branch.
    fn phoneish() -> impl Strategy<Value = String> {
        prop_oneof![
            "[+0-9]{0,20}",
            "(\\+|00|0|tel:\\+)?[1-9][0-9 ()./-]{5,22}",
            "[0-9+ ()\\-#*;=:a-zA-Z\\x00-\\x1f٠-٩０-９＋]{0,70}",
            any_number().prop_map(|n| n.to_e164_string()),
            (any_number(), "[ ()./-]{1,3}", 0usize..10).prop_map(|(n, sep, at)| {
                let mut text = n.to_e164_string();
                text.insert_str(at.min(text.len() - 1) + 1, &sep);
                text
            }),
            // Extensions and RFC 3966 parameters: the library's rarer branches.
            "(tel:)?(\\+|00)?[0-9 ]{1,20}(;ext=[0-9]{0,5}|;phone-context=[+a-z0-9.-]{0,12}|;isub=[0-9]{0,4}| ext\\.? ?[0-9]{1,6}| x[0-9]{1,4}| #[0-9]{0,4})*",
            "\\PC{0,80}",
            ".{0,40}",
        ]
    }

    fn parsers() -> [NumberParser; 4] {
        [no_region(), parser("PL"), parser("US"), parser("GB")]
    }

    /// The contract every parser result must meet, for any input.
    fn check_result(input: &str, result: &Result<Number, NumberError>) {
        let digits: String = input.chars().filter(char::is_ascii_digit).collect();
        match result {
            Ok(number) => assert!(is_number_value(number.get()), "{input:?}"),
            Err(error) => {
                let message = error.to_string();
                if digits.len() > VISIBLE_DIGITS {
                    assert!(!message.contains(&digits), "{input:?} leaks: {message}");
                }
                assert!(message.chars().count() < 120, "{message}");
                assert!(!message.chars().any(char::is_control), "{message:?}");
            }
        }
    }

    proptest! {
        #[test]
        fn valid_numbers_round_trip(number in any_number()) {
            let text = number.to_e164_string();
            prop_assert_eq!(Number::parse_e164(&text), Ok(number));
            prop_assert_eq!(Number::parse_e164_bytes(text.as_bytes()), Ok(number));
            prop_assert_eq!(Number::from_u64(number.get()), Ok(number));
            prop_assert_eq!(Number::from_u64_unchecked(number.get()), number);
            prop_assert_eq!(no_region().parse_fast(&text), Ok(number));
            prop_assert_eq!(number.digit_count() as usize, text.len() - 1);
            // Country code agrees with the library's reading of the same text.
            let parsed = PHONE_NUMBER_UTIL.parse(&text, None).unwrap();
            prop_assert_eq!(i32::from(number.country_code()), parsed.country_code);
            // Masked: code, stars, last three digits; same length as the clear text.
            let masked = number.masked().to_string();
            let code = number.country_code().to_string();
            prop_assert_eq!(masked.len(), text.len());
            let prefix = format!("+{code}*");
            prop_assert!(masked.starts_with(&prefix));
            prop_assert_eq!(&masked[masked.len() - 3..], &text[text.len() - 3..]);
            prop_assert!(masked[1 + code.len()..masked.len() - 3].bytes().all(|b| b == b'*'));
        }

        #[test]
        fn hot_path_matches_a_plain_reference(input in "\\+?[0-9]{0,18}") {
            let reference = input.strip_prefix('+').and_then(|digits| {
                let ok = (8..=15).contains(&digits.len())
                    && !digits.starts_with('0')
                    && (1..=3).any(|len| is_assigned(digits[..len].parse().unwrap()));
                ok.then(|| digits.parse::<u64>().unwrap())
            });
            prop_assert_eq!(Number::parse_e164(&input).ok().map(Number::get), reference);
        }

        #[test]
        fn parsers_never_panic_or_leak(input in phoneish()) {
            check_result(&input, &Number::parse_e164(&input));
            for parser in parsers() {
                let full = parser.parse(&input);
                let fast = parser.parse_fast(&input);
                check_result(&input, &full);
                check_result(&input, &fast);
                // parse_fast only skips checks: whatever parse accepts, it accepts identically.
                if let Ok(number) = full {
                    prop_assert_eq!(fast, Ok(number));
                }
            }
        }

        #[test]
        fn arbitrary_strings_never_panic_or_leak(input in any::<String>()) {
            check_result(&input, &Number::parse_e164(&input));
            for parser in parsers() {
                check_result(&input, &parser.parse(&input));
                check_result(&input, &parser.parse_fast(&input));
            }
            let masked = mask_input(&input);
            prop_assert!(masked.chars().count() <= MASK_MAX_CHARS + 1);
        }

        #[test]
        fn arbitrary_bytes_never_panic(input in proptest::collection::vec(any::<u8>(), 0..40)) {
            if let Ok(number) = Number::parse_e164_bytes(&input) {
                let text = number.to_e164_string();
                prop_assert_eq!(text.as_bytes(), &input[..]);
            }
        }

        #[test]
        fn leading_three_is_the_first_three_digits(
            value in (3usize..=15).prop_flat_map(|digits| POW10[digits - 1]..POW10[digits])
        ) {
            let digits = count_digits(value);
            prop_assert_eq!(leading_three(value, digits), value / POW10[digits as usize - 3]);
            let text = value.to_string();
            prop_assert_eq!(leading_three(value, digits).to_string(), &text[..3]);
        }

        #[test]
        fn from_u64_accepts_exactly_the_numbers(value in any::<u64>(), small in 0u64..1_000_000_000_000_000) {
            for value in [value, small] {
                let result = Number::from_u64(value);
                prop_assert_eq!(result.is_ok(), is_number_value(value));
                if let Ok(number) = result {
                    prop_assert_eq!(Number::parse_e164(&number.to_e164_string()), Ok(number));
                }
            }
        }

        #[test]
        fn bulk_conversion_answers_like_one_at_a_time(
            values in proptest::collection::vec(
                prop_oneof![
                    4 => any_number().prop_map(Number::get),
                    // Around every length boundary and the unassigned prefixes.
                    2 => (7usize..=16, 0u64..2000).prop_map(|(digits, offset)| {
                        POW10[digits - 1] + offset * 7_919
                    }),
                    1 => (7usize..=16).prop_map(|digits| POW10[digits] - 1),
                    1 => Just(0u64),
                    1 => any::<u64>(),
                ],
                0..300,
            ),
            run in 0usize..64,
        ) {
            // Long runs of one length too, the case the bulk loop is for.
            let mut values = values;
            if let Some(&first) = values.first() {
                values.extend(std::iter::repeat_n(first, run));
            }
            let mut bulk = Vec::new();
            Number::extend_from_u64(&values, &mut bulk, |e| e);
            let one_by_one: Vec<Result<Number, NumberError>> =
                values.iter().map(|&v| Number::from_u64(v)).collect();
            prop_assert_eq!(bulk, one_by_one);
        }
    }
}
