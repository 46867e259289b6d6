//! One validating pass over a JSON-RPC line: the fast path of
//! [`parse_line`](super::jsonrpc::parse_line).
//!
//! serde_json costs a separate UTF-8 pass, a visitor per member and a copy
//! of every skipped value's text through its scratch buffer; a request line
//! is small and almost always well formed, so most of that is waste. This
//! scanner walks the bytes once: it checks UTF-8 (inside strings, the only
//! place JSON allows non-ASCII bytes) and the grammar, and for a request
//! object it only notes where the six members the envelope cares about
//! begin and end. No tree, no allocation (a batch's list of entries aside).
//!
//! It accepts exactly the texts serde_json accepts, and it never produces an
//! error itself: whenever it meets anything unusual (a syntax error, invalid
//! UTF-8, a duplicate or escaped member name, nesting deeper than
//! [`MAX_DEPTH`]), it gives up and the caller runs the serde_json reference
//! parser, whose messages (with their line and column) the spec quotes.
//! `tests` below and `fuzz/fuzz_targets/jsonrpc_diff.rs` check that the two
//! agree.

use serde_json::value::RawValue;

/// Containers nested deeper than this inside a value send the line to the
/// reference parser (which has no limit): the scanner's stack is one `u128`.
pub(crate) const MAX_DEPTH: u32 = 128;

/// The members of a request object that the envelope reads, each as the raw
/// text of its value (whitespace excluded). Every other member has been
/// checked and skipped.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Members<'a> {
    pub(crate) jsonrpc: Option<&'a RawValue>,
    pub(crate) method: Option<&'a RawValue>,
    pub(crate) params: Option<&'a RawValue>,
    pub(crate) id: Option<&'a RawValue>,
    pub(crate) result: Option<&'a RawValue>,
    pub(crate) error: Option<&'a RawValue>,
    /// `method` is a string without escapes: its text is the raw value
    /// without its quotes, with no second look.
    pub(crate) method_plain: bool,
}

/// What a well-formed line holds.
#[derive(Debug)]
pub(crate) enum Scanned<'a> {
    /// One object (a request, notification or response).
    Object(Members<'a>),
    /// An array: its elements' raw text, in order.
    Batch(Vec<&'a RawValue>),
}

/// Scans a line. None: not a single object or array of plain form (or not
/// JSON at all); the caller decides with the reference parser.
pub(crate) fn scan_line(line: &[u8]) -> Option<Scanned<'_>> {
    let start = skip_ws(line, 0);
    match line.get(start)? {
        b'{' => {
            let (members, end) = scan_object(line, start)?;
            (skip_ws(line, end) == line.len()).then_some(Scanned::Object(members))
        }
        b'[' => {
            let mut entries = Vec::new();
            let end = scan_array(line, start, &mut entries)?;
            (skip_ws(line, end) == line.len()).then_some(Scanned::Batch(entries))
        }
        _ => None,
    }
}

/// How most clients write a request (this crate's client, JSON.stringify
/// and serde_json among them): no whitespace, the members in this order
/// (see [`compact_request`]).
const COMPACT_HEAD: &[u8; 27] = br#"{"jsonrpc":"2.0","method":""#;

/// A request written exactly as `{"jsonrpc":"2.0","method":"M"` then
/// optionally `,"params":P`, then optionally `,"id":I`, then `}` and the end
/// of the line, whose method has no escapes, whose params are an array or
/// object and whose id a string, number or null: the method's text (without
/// its quotes), the params and the id, found with a few compares rather
/// than a walk member by member, and nothing built on the way. None for any
/// other line, which [`scan_line`] then reads (`jsonrpc::tests` and the
/// `jsonrpc_diff` fuzz target check that both reach the same request).
#[inline]
pub(crate) fn compact_request(b: &[u8]) -> Option<(&str, Option<&RawValue>, Option<&RawValue>)> {
    if b.get(..COMPACT_HEAD.len())? != COMPACT_HEAD {
        return None;
    }
    let (mut i, escaped) = string_end(b, COMPACT_HEAD.len())?;
    if escaped {
        return None;
    }
    let method = validated(&b[COMPACT_HEAD.len()..i - 1]);
    let mut params = None;
    if b.get(i..i + 10) == Some(br#","params":"#) {
        let value = i + 10;
        if !matches!(b.get(value), Some(b'[' | b'{')) {
            return None;
        }
        i = skip_nested(b, value)?;
        params = Some(raw(validated(&b[value..i])));
    }
    let mut id = None;
    if b.get(i..i + 6) == Some(br#","id":"#) {
        let value = i + 6;
        i = match b.get(value)? {
            // An integer: a fraction or exponent fails the `}` check below
            // and goes the general way.
            b'1'..=b'9' => digits(b, value + 1),
            b'0' => value + 1,
            b'"' | b'-' | b'n' => skip_scalar(b, value)?,
            _ => return None,
        };
        id = Some(raw(validated(&b[value..i])));
    }
    (b.get(i) == Some(&b'}') && i + 1 == b.len()).then_some((method, params, id))
}

/// Scans one batch entry (text that is already one JSON value). None: not
/// an object of plain form; the caller decides with the reference parser.
pub(crate) fn scan_entry(text: &str) -> Option<Members<'_>> {
    let bytes = text.as_bytes();
    let start = skip_ws(bytes, 0);
    if bytes.get(start) != Some(&b'{') {
        return None;
    }
    let (members, end) = scan_object(bytes, start)?;
    (skip_ws(bytes, end) == bytes.len()).then_some(members)
}

/// The text of `bytes`, which the scanner has walked from end to end (a
/// whole line, or one value of it).
fn validated(bytes: &[u8]) -> &str {
    debug_assert!(std::str::from_utf8(bytes).is_ok());
    // SAFETY: only called on a slice the scanner accepted whole (a line, or
    // one value as `skip_value` delimits it): outside strings it accepts
    // ASCII bytes only, and inside strings every byte of 0x80 or above
    // starts a sequence checked by `utf8_width` with `std::str::from_utf8`.
    // So `bytes` is valid UTF-8.
    unsafe { std::str::from_utf8_unchecked(bytes) }
}

/// `json` as a `RawValue`, without parsing it again.
fn raw(json: &str) -> &RawValue {
    debug_assert!(
        serde_json::from_str::<&RawValue>(json).is_ok_and(|v| v.get().len() == json.len()),
        "not one JSON value: {json:?}"
    );
    // SAFETY: serde_json declares `RawValue` as `#[repr(transparent)]` around
    // a `str` (serde_json 1.x, src/raw.rs; it converts `&str` to `&RawValue`
    // the same way itself), so the two references have the same layout and
    // the lifetime carries over. Its one invariant, that the text is exactly
    // one valid JSON value without surrounding whitespace, holds: `json` is
    // a slice the scanner accepted as one value, from its first byte to its
    // last.
    unsafe { &*(std::ptr::from_ref::<str>(json) as *const RawValue) }
}

impl<'a> Members<'a> {
    fn slot(&mut self, name: Name) -> &mut Option<&'a RawValue> {
        match name {
            Name::Jsonrpc => &mut self.jsonrpc,
            Name::Method => &mut self.method,
            Name::Params => &mut self.params,
            Name::Id => &mut self.id,
            Name::Result => &mut self.result,
            Name::Error => &mut self.error,
        }
    }
}

/// The member names the envelope reads.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Name {
    Jsonrpc,
    Method,
    Params,
    Id,
    Result,
    Error,
}

impl Name {
    /// The name whose text (between the quotes, no escapes) is `text`.
    fn of(text: &[u8]) -> Option<Name> {
        Some(match text {
            b"jsonrpc" => Name::Jsonrpc,
            b"method" => Name::Method,
            b"params" => Name::Params,
            b"id" => Name::Id,
            b"result" => Name::Result,
            b"error" => Name::Error,
            _ => return None,
        })
    }
}

/// Eight bytes of `b` from `at`, little-endian, zero-padded past its end
/// (a zero byte matches no quote, so a compare cannot run past the end).
#[inline(always)]
fn load8(b: &[u8], at: usize) -> u64 {
    let mut chunk = [0u8; 8];
    match b.get(at..at + 8) {
        Some(eight) => chunk.copy_from_slice(eight),
        None => {
            let rest = b.get(at..).unwrap_or_default();
            chunk[..rest.len()].copy_from_slice(rest);
        }
    }
    u64::from_le_bytes(chunk)
}

/// `text` (at most 8 bytes) as [`load8`] reads it, zero-padded.
const fn word(text: &[u8]) -> u64 {
    let mut bytes = [0u8; 8];
    let mut i = 0;
    while i < text.len() {
        bytes[i] = text[i];
        i += 1;
    }
    u64::from_le_bytes(bytes)
}

/// The low `n` bytes of a word (n < 8).
const fn low(n: u32) -> u64 {
    (1u64 << (8 * n)) - 1
}

/// A member name the envelope reads, spelled plainly, whose opening quote
/// is at `b[i]`: which one, and the index after its closing quote. One
/// word compare instead of a string scan and a name match. None sends the
/// name down the general path, which reaches the same verdict for these
/// names (they have no escapes and end at their quote).
#[inline(always)]
fn known_name(b: &[u8], i: usize) -> Option<(Name, usize)> {
    let w = load8(b, i + 1);
    let (name, len) = match w as u8 {
        b'j' if w == word(b"jsonrpc\"") => (Name::Jsonrpc, 8),
        b'm' if w & low(7) == word(b"method\"") => (Name::Method, 7),
        b'p' if w & low(7) == word(b"params\"") => (Name::Params, 7),
        b'i' if w & low(3) == word(b"id\"") => (Name::Id, 3),
        b'r' if w & low(7) == word(b"result\"") => (Name::Result, 7),
        b'e' if w & low(6) == word(b"error\"") => (Name::Error, 6),
        _ => return None,
    };
    Some((name, i + 1 + len))
}

/// JSON's four whitespace bytes (serde_json's too; no form feed).
#[inline(always)]
fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while let Some(b' ' | b'\n' | b'\t' | b'\r') = b.get(i) {
        i += 1;
    }
    i
}

/// The envelope object opening at `b[start]` (a `{`): its members and the
/// index after its `}`. None on a duplicate member or an escaped member name
/// (the reference parser words the first and unescapes the second).
fn scan_object(b: &[u8], start: usize) -> Option<(Members<'_>, usize)> {
    let mut members = Members::default();
    let mut i = skip_ws(b, start + 1);
    if b.get(i) == Some(&b'}') {
        return Some((members, i + 1));
    }
    loop {
        if b.get(i) != Some(&b'"') {
            return None;
        }
        let (name, name_end) = match known_name(b, i) {
            Some((name, end)) => (Some(name), end),
            None => {
                let (name_end, escaped) = scan_string(b, i + 1)?;
                if escaped {
                    return None;
                }
                (Name::of(&b[i + 1..name_end - 1]), name_end)
            }
        };
        i = skip_ws(b, name_end);
        if b.get(i) != Some(&b':') {
            return None;
        }
        let value = skip_ws(b, i + 1);
        let mut plain = false;
        i = match b.get(value)? {
            b'"' => {
                let (end, escaped) = string_end(b, value + 1)?;
                plain = !escaped;
                end
            }
            b'-' | b'0'..=b'9' => skip_number(b, value)?,
            b'{' | b'[' => skip_nested(b, value)?,
            _ => skip_scalar(b, value)?,
        };
        if let Some(name) = name {
            let slot = members.slot(name);
            if slot.is_some() {
                return None;
            }
            *slot = Some(raw(validated(&b[value..i])));
            if name == Name::Method {
                members.method_plain = plain;
            }
        }
        i = skip_ws(b, i);
        match b.get(i)? {
            b',' => i = skip_ws(b, i + 1),
            b'}' => return Some((members, i + 1)),
            _ => return None,
        }
    }
}

/// The array opening at `b[start]` (a `[`): pushes each element and returns
/// the index after its `]`.
fn scan_array<'a>(b: &'a [u8], start: usize, entries: &mut Vec<&'a RawValue>) -> Option<usize> {
    let mut i = skip_ws(b, start + 1);
    if b.get(i) == Some(&b']') {
        return Some(i + 1);
    }
    loop {
        let end = skip_value(b, i)?;
        entries.push(raw(validated(&b[i..end])));
        i = skip_ws(b, end);
        match b.get(i)? {
            b',' => i = skip_ws(b, i + 1),
            b']' => return Some(i + 1),
            _ => return None,
        }
    }
}

/// The value starting at `b[i]`: the index after it.
fn skip_value(b: &[u8], i: usize) -> Option<usize> {
    match b.get(i)? {
        b'{' | b'[' => skip_nested(b, i),
        _ => skip_scalar(b, i),
    }
}

/// A string, number or literal starting at `b[i]`: the index after it.
fn skip_scalar(b: &[u8], i: usize) -> Option<usize> {
    match b.get(i)? {
        b'"' => skip_string(b, i + 1),
        b'-' | b'0'..=b'9' => skip_number(b, i),
        b't' => literal(b, i, b"true"),
        b'f' => literal(b, i, b"false"),
        b'n' => literal(b, i, b"null"),
        _ => None,
    }
}

fn literal(b: &[u8], i: usize, word: &[u8]) -> Option<usize> {
    let end = i + word.len();
    (b.get(i..end)? == word).then_some(end)
}

/// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?` from `b[i]`.
fn skip_number(b: &[u8], mut i: usize) -> Option<usize> {
    if b[i] == b'-' {
        i += 1;
    }
    match b.get(i)? {
        b'0' => i += 1,
        b'1'..=b'9' => i = digits(b, i + 1),
        _ => return None,
    }
    if b.get(i) == Some(&b'.') {
        let end = digits(b, i + 1);
        if end == i + 1 {
            return None;
        }
        i = end;
    }
    if let Some(b'e' | b'E') = b.get(i) {
        i += 1;
        if let Some(b'+' | b'-') = b.get(i) {
            i += 1;
        }
        let end = digits(b, i);
        if end == i {
            return None;
        }
        i = end;
    }
    Some(i)
}

fn digits(b: &[u8], mut i: usize) -> usize {
    while let Some(b'0'..=b'9') = b.get(i) {
        i += 1;
    }
    i
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// The high bit of each byte of `word` that may be a quote, a backslash, a
/// control character or a non-ASCII byte. The lowest flagged byte is always
/// one of those (a borrow only carries into higher bytes).
fn special_bytes(word: u64) -> u64 {
    let quote = word ^ (ONES * u64::from(b'"'));
    let backslash = word ^ (ONES * u64::from(b'\\'));
    let zero_quote = quote.wrapping_sub(ONES) & !quote;
    let zero_backslash = backslash.wrapping_sub(ONES) & !backslash;
    let control = word.wrapping_sub(ONES * 0x20) & !word;
    (zero_quote | zero_backslash | control | word) & HIGHS
}

/// The rest of a string whose opening quote is at `b[i - 1]`: the index
/// after its closing quote.
fn skip_string(b: &[u8], i: usize) -> Option<usize> {
    scan_string(b, i).map(|(end, _)| end)
}

/// [`scan_string`], with its most common case inline: the closing quote
/// is the first special byte of the next 16.
#[inline(always)]
fn string_end(b: &[u8], i: usize) -> Option<(usize, bool)> {
    #[cfg(target_arch = "x86_64")]
    {
        let mut padded = [0u8; 16];
        let chunk = match b.get(i..i + 16) {
            Some(sixteen) => sixteen,
            None => {
                // Near the end: zero bytes are control characters, which
                // stop the search short of the end.
                let rest = b.get(i..).unwrap_or_default();
                padded[..rest.len()].copy_from_slice(rest);
                &padded
            }
        };
        let mask = sse2_special(chunk);
        if mask != 0 {
            let found = i + mask.trailing_zeros() as usize;
            if b.get(found) == Some(&b'"') {
                return Some((found + 1, false));
            }
        }
    }
    scan_string(b, i)
}

/// The same, and whether the string has escapes. Eight bytes at a time
/// while nothing needs a look.
#[inline(never)]
fn scan_string(b: &[u8], mut i: usize) -> Option<(usize, bool)> {
    let mut escaped = false;
    loop {
        let found = find_special(b, i)?;
        match b[found] {
            b'"' => return Some((found + 1, escaped)),
            b'\\' => {
                escaped = true;
                i = skip_escape(b, found + 1)?;
            }
            0x80..=0xff => i = found + utf8_width(b, found)?,
            // A control character (or, past a false flag, nothing special:
            // the SWAR test never flags a plain byte below a special one).
            c if c < 0x20 => return None,
            _ => i = found + 1,
        }
    }
}

/// The first byte at or after `b[i]` that is a quote, a backslash, a
/// control character or non-ASCII: 16 bytes at a time with SSE2 (part of
/// every x86_64), then 8 with SWAR, then one by one.
fn find_special(b: &[u8], mut i: usize) -> Option<usize> {
    #[cfg(target_arch = "x86_64")]
    while i + 16 <= b.len() {
        let mask = sse2_special(&b[i..i + 16]);
        if mask != 0 {
            return Some(i + mask.trailing_zeros() as usize);
        }
        i += 16;
    }
    while let Some(chunk) = b.get(i..i + 8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let mask = special_bytes(u64::from_le_bytes(word));
        if mask != 0 {
            return Some(i + (mask.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    Some(i + b.get(i..)?.iter().position(|&c| is_special(c))?)
}

/// One bit per byte of `chunk` (16 bytes) that [`is_special`] holds for.
#[cfg(target_arch = "x86_64")]
#[allow(unused_unsafe)] // the intrinsics are safe fns from Rust 1.87 on
fn sse2_special(chunk: &[u8]) -> u32 {
    use std::arch::x86_64::{
        _mm_cmpeq_epi8, _mm_cmplt_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128,
        _mm_set1_epi8,
    };
    assert_eq!(chunk.len(), 16);
    // SAFETY: SSE2 is part of the x86_64 baseline, so these instructions
    // exist on every CPU this code is built for; the unaligned load reads
    // the 16 bytes of `chunk` (its length was just checked) and nothing else.
    let mask = unsafe {
        let x = _mm_loadu_si128(chunk.as_ptr().cast());
        let quote = _mm_cmpeq_epi8(x, _mm_set1_epi8(b'"' as i8));
        let backslash = _mm_cmpeq_epi8(x, _mm_set1_epi8(b'\\' as i8));
        // Signed: below 0x20 or, as a negative byte, 0x80 and above.
        let other = _mm_cmplt_epi8(x, _mm_set1_epi8(0x20));
        _mm_movemask_epi8(_mm_or_si128(_mm_or_si128(quote, backslash), other))
    };
    mask as u32
}

fn is_special(c: u8) -> bool {
    c == b'"' || c == b'\\' || !(0x20..0x80).contains(&c)
}

/// An escape whose backslash is at `b[i - 1]`: the index after it. Any
/// `\uXXXX` will do, lone surrogates included, as in serde_json.
fn skip_escape(b: &[u8], i: usize) -> Option<usize> {
    match b.get(i)? {
        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => Some(i + 1),
        b'u' => {
            let hex = b.get(i + 1..i + 5)?;
            hex.iter().all(u8::is_ascii_hexdigit).then_some(i + 5)
        }
        _ => None,
    }
}

/// The length of the UTF-8 sequence starting at `b[i]` (a byte >= 0x80),
/// if it is a valid one.
fn utf8_width(b: &[u8], i: usize) -> Option<usize> {
    let width = match b[i] {
        0xc2..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf4 => 4,
        _ => return None,
    };
    std::str::from_utf8(b.get(i..i + width)?).ok()?;
    Some(width)
}

/// An array or object opening at `b[start]`, nested up to [`MAX_DEPTH`]
/// deep: the index after its closing bracket. Iterative; the stack holds
/// one bit per open container (1: object).
fn skip_nested(b: &[u8], start: usize) -> Option<usize> {
    let mut stack: u128 = 0;
    let mut depth: u32 = 0;
    let mut i = start;
    loop {
        // Here a value starts at b[i].
        match b.get(i)? {
            open @ (b'{' | b'[') => {
                if depth == MAX_DEPTH {
                    return None;
                }
                let object = *open == b'{';
                stack = (stack << 1) | u128::from(object);
                depth += 1;
                i = skip_ws(b, i + 1);
                let close = if object { b'}' } else { b']' };
                if b.get(i) == Some(&close) {
                    i += 1;
                    stack >>= 1;
                    depth -= 1;
                    if depth == 0 {
                        return Some(i);
                    }
                } else {
                    if object {
                        i = skip_key(b, i)?;
                    }
                    continue;
                }
            }
            _ => i = skip_scalar(b, i)?,
        }
        // After a value inside a container: a comma, or closing brackets.
        loop {
            i = skip_ws(b, i);
            let object = stack & 1 == 1;
            match b.get(i)? {
                b',' => {
                    i = skip_ws(b, i + 1);
                    if object {
                        i = skip_key(b, i)?;
                    }
                    break;
                }
                b'}' if object => {}
                b']' if !object => {}
                _ => return None,
            }
            i += 1;
            stack >>= 1;
            depth -= 1;
            if depth == 0 {
                return Some(i);
            }
        }
    }
}

/// A member name and its colon at `b[i]`: the index of the value.
fn skip_key(b: &[u8], i: usize) -> Option<usize> {
    if b.get(i) != Some(&b'"') {
        return None;
    }
    let i = skip_ws(b, skip_string(b, i + 1)?);
    (b.get(i) == Some(&b':')).then(|| skip_ws(b, i + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid(text: &str) -> bool {
        let b = text.as_bytes();
        let start = skip_ws(b, 0);
        skip_value(b, start).is_some_and(|end| skip_ws(b, end) == b.len())
    }

    #[test]
    fn agrees_with_serde_json_on_the_grammar() {
        let cases = [
            "1",
            "-0",
            "01",
            "-",
            "1.",
            "1.5e",
            "1.5e+7",
            "1E-2",
            ".5",
            "\"a\\u00e9\"",
            "\"\\ud800\"",
            "\"\\x\"",
            "\"\\u12\"",
            "\"tab\there\"",
            "\"é€😀\"",
            "[1,]",
            "[,1]",
            "[1 2]",
            "{\"a\":1,}",
            "{\"a\" 1}",
            "{1:2}",
            "{\"a\":{\"b\":[true,false,null,{}]}}",
            "[[[[]]]]",
            "[[[[]]]",
            "nul",
            "nullx",
            "[\"12345678\\\"9abcdef\"]",
            "\"0123456789abcdef0123456789\"",
            " [ 1 , { \"x\" : [ ] } ] ",
        ];
        for case in cases {
            let serde = serde_json::from_str::<serde::de::IgnoredAny>(case).is_ok();
            assert_eq!(valid(case), serde, "{case:?}");
        }
        for bad in [
            &b"\"\xff\""[..],
            b"\"\xc3\"",
            b"\"\xed\xa0\x80\"",
            b"\"\x01\"",
        ] {
            assert!(!valid_bytes(bad), "{bad:?}");
        }
    }

    fn valid_bytes(b: &[u8]) -> bool {
        skip_value(b, 0).is_some_and(|end| end == b.len())
    }

    #[test]
    fn deep_nesting_is_left_to_the_reference_parser() {
        let ok = format!("{}{}", "[".repeat(128), "]".repeat(128));
        assert!(valid(&ok));
        let deep = format!("{}{}", "[".repeat(129), "]".repeat(129));
        assert!(!valid(&deep));
    }

    #[test]
    fn locates_the_members() {
        let line =
            br#"{"jsonrpc":"2.0", "x":{"method":1},"method":"m","params":[1, {"a":"\""}],"id":7}"#;
        let Some(Scanned::Object(m)) = scan_line(line) else {
            panic!("an object")
        };
        assert_eq!(m.jsonrpc.map(RawValue::get), Some("\"2.0\""));
        assert_eq!(m.method.map(RawValue::get), Some("\"m\""));
        assert_eq!(m.params.map(RawValue::get), Some(r#"[1, {"a":"\""}]"#));
        assert_eq!(m.id.map(RawValue::get), Some("7"));
        assert!(m.result.is_none() && m.error.is_none());
        assert!(scan_line(br#"{"id":1,"id":2}"#).is_none(), "duplicate");
        assert!(scan_line(br#"{"i\u0064":1}"#).is_none(), "escaped name");
        assert!(scan_line(b"{} x").is_none());
        let Some(Scanned::Batch(entries)) = scan_line(b" [1, {\"a\":2} ,\"x\"] ") else {
            panic!("a batch")
        };
        let texts: Vec<_> = entries.iter().map(|e| e.get()).collect();
        assert_eq!(texts, ["1", "{\"a\":2}", "\"x\""]);
    }

    /// xorshift64*, seeded, so that a failure replays.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    const SEEDS: [&str; 8] = [
        r#"{"jsonrpc":"2.0","method":"rpc.ping","id":1}"#,
        r#"{"jsonrpc":"2.0","method":"rpc.echo","params":["xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"],"id":"a"}"#,
        r#" {"id":null, "params":{"a":[1,-2.5e3,true,false,null,{"b":"\u00e9\n"}]},"method":"m\u002e","jsonrpc":"2.0"} "#,
        r#"[{"jsonrpc":"2.0","method":"rpc.ping","id":1},{"jsonrpc":"2.0","method":"m"},3,[]]"#,
        r#"{"jsonrpc":"2.0","result":{"x":"é€"},"id":9}"#,
        r#"{"jsonrpc":"2.0","error":{"code":-1,"message":"m"},"result":1,"id":"q"}"#,
        r#"{"jsonrpc":"2.0","method":"m","id":1,"\ud800":0,"x":"\udc00"}"#,
        r#"[{"jsonrpc":"2.0","method":"m","id":1,"id":2},{"jsonrpc":"1.0","method":4,"params":3,"id":true}]"#,
    ];

    const PIECES: [&[u8]; 24] = [
        b"\"",
        b"\\",
        b"{",
        b"}",
        b"[",
        b"]",
        b",",
        b":",
        b" ",
        b"\\u",
        b"\\ud800",
        b"\xff",
        b"\xc3",
        b"\xe2\x82\xac",
        b"0",
        b"-",
        b".",
        b"e",
        b"\x01",
        b"\t",
        b"null",
        b"\"id\":",
        b"\"method\":",
        b"\x0c",
    ];

    fn mutate(rng: &mut Rng, line: &mut Vec<u8>) {
        let at = rng.below(line.len() + 1);
        match rng.below(5) {
            0 if !line.is_empty() => {
                let at = at.min(line.len() - 1);
                line[at] ^= 1 << rng.below(8);
            }
            1 if at < line.len() => {
                line.remove(at);
            }
            2 => line.truncate(at),
            3 if !line.is_empty() => {
                let from = rng.below(line.len());
                let to = (from + rng.below(16)).min(line.len());
                let copy = line[from..to].to_vec();
                line.splice(at..at, copy);
            }
            _ => {
                let piece = PIECES[rng.below(PIECES.len())];
                line.splice(at..at, piece.iter().copied());
            }
        }
    }

    /// The fast parser and the reference give the same message, entry by
    /// entry; says whether the scanner decided it.
    fn agree(line: &[u8], max_batch: usize) -> bool {
        use crate::jsonrpc::{
            Message, parse_entry, parse_entry_serde, parse_line, parse_line_serde,
        };
        let fast = parse_line(line, max_batch);
        let slow = parse_line_serde(line, max_batch);
        let shown = String::from_utf8_lossy(line);
        assert_eq!(format!("{fast:?}"), format!("{slow:?}"), "line {shown:?}");
        if let Message::Batch(entries) = &fast {
            for entry in entries {
                assert_eq!(
                    format!("{:?}", parse_entry(entry)),
                    format!("{:?}", parse_entry_serde(entry)),
                    "entry {} of {shown:?}",
                    entry.get()
                );
            }
        }
        scan_line(line).is_some()
    }

    #[test]
    fn the_fast_parser_agrees_with_the_reference_on_mutated_lines() {
        let mut rng = Rng(0x5eed_1600);
        let (mut fast, mut valid) = (0, 0);
        for round in 0..20_000 {
            let mut line = SEEDS[round % SEEDS.len()].as_bytes().to_vec();
            for _ in 0..rng.below(4) {
                mutate(&mut rng, &mut line);
            }
            if agree(&line, 1 + rng.below(4)) {
                fast += 1;
            }
            if serde_json::from_slice::<serde::de::IgnoredAny>(&line).is_ok() {
                valid += 1;
            }
        }
        // Most valid lines take the fast path; the rest are escaped or
        // duplicate names, which the reference words.
        assert!(fast * 10 > valid * 7, "{fast} fast of {valid} valid");
    }
}
