//! Placeholder replaced by the full number module.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct Number(u64);
impl Number {
    pub const fn from_u64_unchecked(value: u64) -> Number {
        Number(value)
    }
    pub const fn get(self) -> u64 {
        self.0
    }
}
