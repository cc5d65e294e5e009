//! TEMPORARY compile shim in the daemon branch; replaced by the real module at merge.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct Number(u64);
impl Number {
    pub const fn from_u64_unchecked(value: u64) -> Number { Number(value) }
    pub const fn get(self) -> u64 { self.0 }
    pub fn from_u64(value: u64) -> Result<Number, NumberError> { if value >= 10_000_000 && value < 1_000_000_000_000_000 { Ok(Number(value)) } else { Err(NumberError::Empty) } }
    pub fn parse_e164(s: &str) -> Result<Number, NumberError> { let d = s.strip_prefix('+').ok_or(NumberError::Empty)?; if d.len() < 8 || d.len() > 15 || !d.bytes().all(|b| b.is_ascii_digit()) { return Err(NumberError::Empty) } Ok(Number(d.parse().map_err(|_| NumberError::Empty)?)) }
    pub fn digit_count(self) -> u32 { self.0.checked_ilog10().unwrap_or(0) + 1 }
    pub fn to_e164_string(self) -> String { format!("+{}", self.0) }
}
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NumberError { #[error("empty")] Empty }
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region(u16);
impl Region { pub fn parse(code: &str) -> Result<Region, NumberError> { if code.len() == 2 { Ok(Region(1)) } else { Err(NumberError::Empty) } } pub fn code(&self) -> String { "XX".into() } }
#[derive(Clone, Copy, Debug)]
pub struct NumberParser(Option<Region>);
impl NumberParser { pub fn new(r: Option<Region>) -> Self { NumberParser(r) } pub fn parse_fast(&self, s: &str) -> Result<Number, NumberError> { Number::parse_e164(s) } }
pub fn mask_input(s: &str) -> String { s.chars().map(|c| if c.is_ascii_digit() { '*' } else { c }).collect() }
impl Number { pub fn masked(self) -> String { "+*".into() } }
