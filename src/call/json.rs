//! STUB (replaced by the real scanner)
#![allow(missing_docs, dead_code, unused_variables)]
use std::borrow::Cow;
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JsonLimits { pub max_bytes: usize, pub max_depth: usize }
impl Default for JsonLimits { fn default() -> Self { todo!() } }
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JsonError {
    #[error("x")] TooLarge { len: usize, limit: usize },
    #[error("x")] TooDeep { offset: usize, limit: usize },
    #[error("x")] Syntax { offset: usize, expected: &'static str },
}
#[derive(Debug, Clone, Copy)]
pub struct RawJson<'a> { t: &'a str }
impl<'a> RawJson<'a> {
    pub fn parse(text: &'a str, limits: JsonLimits) -> Result<Self, JsonError> { todo!() }
    pub fn root(&self) -> RawValue<'a> { todo!() }
}
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonKind { Null, Bool, Number, String, Array, Object }
#[derive(Debug, Clone, Copy)]
pub struct RawValue<'a> { t: &'a str }
impl<'a> RawValue<'a> {
    pub fn kind(&self) -> JsonKind { todo!() }
    pub fn as_bool(&self) -> Option<bool> { todo!() }
    pub fn is_null(&self) -> bool { todo!() }
    pub fn as_number(&self) -> Option<RawNumber<'a>> { todo!() }
    pub fn as_str(&self) -> Option<JsonStr<'a>> { todo!() }
    pub fn get(&self, key: &str) -> Option<RawValue<'a>> { todo!() }
    pub fn entries(&self) -> ObjectIter<'a> { todo!() }
    pub fn items(&self) -> ArrayIter<'a> { todo!() }
    pub fn text(&self) -> &'a str { todo!() }
}
pub struct ObjectIter<'a> { t: &'a str }
impl<'a> Iterator for ObjectIter<'a> { type Item = (JsonStr<'a>, RawValue<'a>); fn next(&mut self) -> Option<Self::Item> { todo!() } }
pub struct ArrayIter<'a> { t: &'a str }
impl<'a> Iterator for ArrayIter<'a> { type Item = RawValue<'a>; fn next(&mut self) -> Option<Self::Item> { todo!() } }
#[derive(Debug, Clone, Copy)]
pub struct RawNumber<'a> { t: &'a str }
impl RawNumber<'_> {
    pub fn as_i64(&self) -> Option<i64> { todo!() }
    pub fn as_u64(&self) -> Option<u64> { todo!() }
    pub fn as_f64(&self) -> f64 { todo!() }
}
#[derive(Debug, Clone, Copy)]
pub struct JsonStr<'a> { t: &'a str }
impl<'a> JsonStr<'a> {
    pub fn eq_str(&self, s: &str) -> bool { todo!() }
    pub fn char_count(&self) -> usize { todo!() }
    pub fn to_cow(&self) -> Cow<'a, str> { todo!() }
}
