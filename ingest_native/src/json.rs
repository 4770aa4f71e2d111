//! A strict JSON scanner (RFC 8259) specialised for telemetry readings.
//!
//! Why not a general parser: a reading is a flat object of ~40 keys with scalar values, and the
//! decoder needs exactly three things from it — keys as they come (to catch duplicates), each
//! value as a typed scalar, and the raw text of unknown values (kept verbatim in `extra`). A
//! scanner that yields those directly (numbers parsed once, Clinger's exact fast path, strings
//! scanned eight bytes at a time) took the benchmark's native path from 2.1 to about 1.9 us
//! per reading against `serde_json` (with `float_roundtrip`, needed for exact floats) driving a
//! streaming visitor, and lets a number beyond f64 range reject one reading, not the message.
//!
//! Input is a `&str`, so UTF-8 is already valid. Refused, like any strict parser: control
//! characters in strings, invalid or lone-surrogate `\u` escapes, leading zeros, `NaN` and
//! `Infinity`, trailing commas, nesting deeper than [`MAX_NESTING`].

use std::borrow::Cow;

/// Deepest nesting the scanner follows; deeper is a syntax error (as in `serde_json`).
pub const MAX_NESTING: usize = 128;

/// Where and why the text stopped being JSON.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyntaxError {
    pub offset: usize,
    pub what: &'static str,
}

impl std::fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid JSON at byte {}: {}", self.offset, self.what)
    }
}

pub type Result<T> = std::result::Result<T, SyntaxError>;

/// A JSON number, scanned once: its text and, when it fits, its decimal parts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Number<'a> {
    /// Its ASCII text (see [`Number::text`]).
    bytes: &'a [u8],
    /// No fraction and no exponent.
    pub integer: bool,
    negative: bool,
    /// The significant digits, when at most 19 of them (else `None`).
    mantissa: Option<u64>,
    /// The power of ten that scales `mantissa`.
    exp10: i64,
}

impl<'a> Number<'a> {
    /// The number as it was written.
    pub fn text(&self) -> &'a str {
        // The number grammar is ASCII, so this never fails; kept as bytes because slicing a
        // str checks char boundaries on the hot path.
        std::str::from_utf8(self.bytes).unwrap_or_default()
    }

    /// The value as an `i64` when the number is an integer in range.
    #[inline]
    pub fn as_i64(&self) -> Option<i64> {
        if !self.integer {
            return None;
        }
        let m = self.mantissa?;
        if self.negative {
            if m <= 1 << 63 {
                Some((m as i64).wrapping_neg())
            } else {
                None
            }
        } else {
            i64::try_from(m).ok()
        }
    }

    /// The nearest `f64` (correctly rounded); infinite beyond f64 range.
    #[inline(always)]
    pub fn as_f64(&self) -> f64 {
        // Clinger's fast path: both operands exact, so one IEEE operation rounds correctly.
        const POW10: [f64; 23] = [
            1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
            1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
        ];
        if let Some(m) = self.mantissa {
            if m <= 1 << 53 && (-22..=22).contains(&self.exp10) {
                let m = m as f64;
                let v = if self.exp10 >= 0 {
                    m * POW10[self.exp10 as usize]
                } else {
                    m / POW10[(-self.exp10) as usize]
                };
                return if self.negative { -v } else { v };
            }
        }
        self.slow_f64()
    }

    #[cold]
    #[inline(never)]
    fn slow_f64(&self) -> f64 {
        // The standard library's parser is correctly rounded and accepts JSON's grammar.
        self.text().parse().unwrap_or(f64::NAN)
    }
}

/// One value, with containers skipped (the decoder only needs to know they were there).
#[derive(Clone, Debug, PartialEq)]
pub enum Scalar<'a> {
    Null,
    Bool(bool),
    Str(Cow<'a, str>),
    Num(Number<'a>),
    Object,
    Array,
}

/// An object key spelled exactly `"name":`, packed for an eight-bytes-at-a-time comparison.
///
/// Readings list their keys in the same order message after message, so the decoder guesses
/// the next key and checks the guess with three word compares instead of scanning the key
/// and looking it up; any other spelling (whitespace, escapes) takes the general path.
#[derive(Clone, Copy, Debug)]
pub struct KeyPattern {
    words: [u64; 3],
    masks: [u64; 3],
    len: usize,
}

impl KeyPattern {
    /// Longest `"name":` a pattern can hold.
    pub const MAX_LEN: usize = 24;

    /// The pattern of `"name":`.
    ///
    /// # Panics
    ///
    /// Unless `name` is at most 21 bytes of printable ASCII without `"` or `\`; the table
    /// of patterns is built at compile time, so that is a build error.
    pub const fn new(name: &str) -> Self {
        let name = name.as_bytes();
        let len = name.len() + 3;
        assert!(len <= Self::MAX_LEN, "key too long for a pattern");
        let mut bytes = [0u8; Self::MAX_LEN];
        bytes[0] = b'"';
        let mut i = 0;
        while i < name.len() {
            assert!(name[i] >= 0x20 && name[i] < 0x80 && name[i] != b'"' && name[i] != b'\\');
            bytes[i + 1] = name[i];
            i += 1;
        }
        bytes[len - 2] = b'"';
        bytes[len - 1] = b':';
        let mut words = [0u64; 3];
        let mut masks = [0u64; 3];
        let mut k = 0;
        while k < Self::MAX_LEN {
            let word = k / 8;
            let shift = (k % 8) * 8;
            words[word] |= (bytes[k] as u64) << shift;
            if k < len {
                masks[word] |= 0xFF << shift;
            }
            k += 1;
        }
        KeyPattern { words, masks, len }
    }
}

/// A cursor over JSON text.
pub struct Scanner<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Scanner<'a> {
    pub fn new(text: &'a str) -> Self {
        Scanner {
            text,
            bytes: text.as_bytes(),
            pos: 0,
        }
    }

    fn error<T>(&self, what: &'static str) -> Result<T> {
        Err(SyntaxError {
            offset: self.pos,
            what,
        })
    }

    /// Skips whitespace and returns the next byte, if any.
    #[inline]
    pub fn peek(&mut self) -> Option<u8> {
        while let Some(&b) = self.bytes.get(self.pos) {
            if !matches!(b, b' ' | b'\n' | b'\r' | b'\t') {
                return Some(b);
            }
            self.pos += 1;
        }
        None
    }

    /// Skips whitespace and consumes `b`.
    pub fn expect(&mut self, b: u8, what: &'static str) -> Result<()> {
        if self.peek() == Some(b) {
            self.pos += 1;
            Ok(())
        } else {
            self.error(what)
        }
    }

    /// After a member or element: true if another follows (`,`), false at `close`.
    #[inline]
    pub fn more(&mut self, close: u8) -> Result<bool> {
        match self.peek() {
            Some(b',') => {
                self.pos += 1;
                Ok(true)
            }
            Some(b) if b == close => {
                self.pos += 1;
                Ok(false)
            }
            _ => self.error(if close == b'}' {
                "expected ',' or '}'"
            } else {
                "expected ',' or ']'"
            }),
        }
    }

    /// Consumes an opening `{` or `[` and says whether the container is empty (and closed).
    pub fn open(&mut self, open: u8, close: u8) -> Result<bool> {
        self.expect(open, "expected a container")?;
        if self.peek() == Some(close) {
            self.pos += 1;
            return Ok(true);
        }
        Ok(false)
    }

    /// Consumes the next member key and its `:` if they are spelled exactly as `key`.
    #[inline]
    pub fn take_key(&mut self, key: &KeyPattern) -> bool {
        self.peek();
        let at = self.pos;
        let hit = if let Some(chunk) = self.bytes.get(at..at + KeyPattern::MAX_LEN) {
            let word = |k: usize| {
                let mut w = [0; 8];
                w.copy_from_slice(&chunk[k * 8..k * 8 + 8]);
                (u64::from_le_bytes(w) ^ key.words[k]) & key.masks[k]
            };
            word(0) | word(1) | word(2) == 0
        } else {
            // Near the end of the text: compare byte by byte.
            let mut expected = [0; KeyPattern::MAX_LEN];
            for (k, b) in expected.iter_mut().enumerate() {
                *b = (key.words[k / 8] >> ((k % 8) * 8)) as u8;
            }
            self.bytes.get(at..at + key.len) == Some(&expected[..key.len])
        };
        if hit {
            self.pos += key.len;
        }
        hit
    }

    /// Reads an object key and its `:`.
    #[inline]
    pub fn key(&mut self) -> Result<Cow<'a, str>> {
        self.expect(b'"', "expected a string key")?;
        let key = self.string_body()?;
        self.expect(b':', "expected ':'")?;
        Ok(key)
    }

    /// Fails unless only whitespace is left.
    pub fn end(&mut self) -> Result<()> {
        match self.peek() {
            None => Ok(()),
            Some(_) => self.error("trailing characters"),
        }
    }

    /// Reads one value as a [`Scalar`], skipping over containers.
    pub fn scalar(&mut self) -> Result<Scalar<'a>> {
        match self.peek() {
            Some(b'"') => {
                self.pos += 1;
                Ok(Scalar::Str(self.string_body()?))
            }
            Some(b'-' | b'0'..=b'9') => Ok(Scalar::Num(self.number()?)),
            Some(b't') => self.literal("true", Scalar::Bool(true)),
            Some(b'f') => self.literal("false", Scalar::Bool(false)),
            Some(b'n') => self.literal("null", Scalar::Null),
            Some(b'{') => self.skip().map(|()| Scalar::Object),
            Some(b'[') => self.skip().map(|()| Scalar::Array),
            Some(_) => self.error("expected a value"),
            None => self.error("unexpected end of input"),
        }
    }

    /// Reads `true` or `false` (the next byte must be `t` or `f`).
    #[inline]
    pub fn boolean(&mut self) -> Result<bool> {
        let value = self.bytes[self.pos] == b't';
        let word: &[u8] = if value { b"true" } else { b"false" };
        if self.bytes[self.pos..].starts_with(word) {
            self.pos += word.len();
            Ok(value)
        } else {
            self.error("expected a value")
        }
    }

    /// Reads one value and returns its exact text.
    pub fn raw(&mut self) -> Result<&'a str> {
        self.peek();
        let start = self.pos;
        self.skip()?;
        Ok(&self.text[start..self.pos])
    }

    /// Consumes one value of any kind, checking its syntax.
    pub fn skip(&mut self) -> Result<()> {
        // Iterative, with one byte per open container, so hostile nesting cannot overflow
        // the stack.
        let mut stack: Vec<u8> = Vec::new();
        loop {
            match self.peek() {
                Some(open @ (b'{' | b'[')) => {
                    let close = if open == b'{' { b'}' } else { b']' };
                    self.pos += 1;
                    if self.peek() == Some(close) {
                        self.pos += 1;
                    } else {
                        if stack.len() == MAX_NESTING {
                            return self.error("nested too deeply");
                        }
                        stack.push(close);
                        if close == b'}' {
                            self.key()?;
                        }
                        continue;
                    }
                }
                _ => {
                    self.scalar()?;
                }
            }
            // A value is complete: close containers until one has another member.
            loop {
                let Some(&close) = stack.last() else {
                    return Ok(());
                };
                if self.more(close)? {
                    if close == b'}' {
                        self.key()?;
                    }
                    break;
                }
                stack.pop();
            }
        }
    }

    fn literal(&mut self, word: &'static str, value: Scalar<'a>) -> Result<Scalar<'a>> {
        if self.bytes[self.pos..].starts_with(word.as_bytes()) {
            self.pos += word.len();
            Ok(value)
        } else {
            self.error("expected a value")
        }
    }

    /// Reads a number (the next byte must be `-` or a digit).
    // Always inlined, like `as_f64` and `digit_run`: returned through memory, the `Number`
    // cost a store-forwarding stall per value (about 10 % of the native path, measured).
    #[allow(clippy::inline_always)]
    #[inline(always)]
    pub fn number(&mut self) -> Result<Number<'a>> {
        let b = self.bytes;
        let start = self.pos;
        let negative = b[self.pos] == b'-';
        if negative {
            self.pos += 1;
        }
        // Digits accumulate with wrapping; more than 19 of them means the mantissa is not
        // exact, and the slow, exact path takes over. Zeros right after "0." count too:
        // conservative, and rare in telemetry.
        let mut mantissa: u64 = 0;
        let mut digits: usize = 0;
        match b.get(self.pos) {
            Some(b'0') => {
                self.pos += 1;
                if matches!(b.get(self.pos), Some(b'0'..=b'9')) {
                    return self.error("leading zero in a number");
                }
            }
            Some(b'1'..=b'9') => {
                let first = self.pos;
                self.pos = digit_run(b, self.pos, &mut mantissa);
                digits = self.pos - first;
            }
            _ => return self.error("expected a digit"),
        }
        let mut integer = true;
        let mut exp10: i64 = 0;
        if b.get(self.pos) == Some(&b'.') {
            integer = false;
            self.pos += 1;
            let first = self.pos;
            self.pos = digit_run(b, self.pos, &mut mantissa);
            if self.pos == first {
                return self.error("expected a digit after '.'");
            }
            digits += self.pos - first;
            exp10 = -((self.pos - first) as i64);
        }
        if matches!(b.get(self.pos), Some(b'e' | b'E')) {
            integer = false;
            self.pos += 1;
            let sign = match b.get(self.pos) {
                Some(b'-') => {
                    self.pos += 1;
                    -1
                }
                Some(b'+') => {
                    self.pos += 1;
                    1
                }
                _ => 1,
            };
            let first = self.pos;
            let mut e: i64 = 0;
            while let Some(&d @ b'0'..=b'9') = b.get(self.pos) {
                e = (e * 10 + i64::from(d - b'0')).min(1 << 40);
                self.pos += 1;
            }
            if self.pos == first {
                return self.error("expected a digit in the exponent");
            }
            exp10 += sign * e;
        }
        Ok(Number {
            bytes: &b[start..self.pos],
            integer,
            negative,
            mantissa: (digits <= 19).then_some(mantissa),
            exp10,
        })
    }

    /// Reads a string (the next byte must be its opening quote).
    #[inline]
    pub fn string(&mut self) -> Result<Cow<'a, str>> {
        self.pos += 1;
        self.string_body()
    }

    /// Reads a string's body after its opening quote, through the closing quote.
    #[inline]
    fn string_body(&mut self) -> Result<Cow<'a, str>> {
        let b = self.bytes;
        let start = self.pos;
        self.pos = plain_run(b, self.pos);
        while let Some(&c) = b.get(self.pos) {
            match c {
                b'"' => {
                    let s = &self.text[start..self.pos];
                    self.pos += 1;
                    return Ok(Cow::Borrowed(s));
                }
                b'\\' => return self.escaped_string(start).map(Cow::Owned),
                0..=0x1F => return self.error("control character in a string"),
                _ => self.pos += 1,
            }
        }
        self.error("unterminated string")
    }

    fn escaped_string(&mut self, start: usize) -> Result<String> {
        let b = self.bytes;
        let mut out = String::with_capacity(self.pos - start + 16);
        out.push_str(&self.text[start..self.pos]);
        loop {
            let run = self.pos;
            while let Some(&c) = b.get(self.pos) {
                if c == b'"' || c == b'\\' || c < 0x20 {
                    break;
                }
                self.pos += 1;
            }
            out.push_str(&self.text[run..self.pos]);
            match b.get(self.pos) {
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.pos += 1;
                    let ch = match b.get(self.pos) {
                        Some(b'"') => '"',
                        Some(b'\\') => '\\',
                        Some(b'/') => '/',
                        Some(b'b') => '\u{8}',
                        Some(b'f') => '\u{c}',
                        Some(b'n') => '\n',
                        Some(b'r') => '\r',
                        Some(b't') => '\t',
                        Some(b'u') => {
                            self.pos += 1;
                            let ch = self.unicode_escape()?;
                            out.push(ch);
                            continue;
                        }
                        _ => return self.error("invalid escape"),
                    };
                    self.pos += 1;
                    out.push(ch);
                }
                Some(_) => return self.error("control character in a string"),
                None => return self.error("unterminated string"),
            }
        }
    }

    /// After `\u`: four hex digits, and for a high surrogate its `\uDC00`.. partner.
    fn unicode_escape(&mut self) -> Result<char> {
        let hi = self.hex4()?;
        let code = if (0xD800..0xDC00).contains(&hi) {
            if !self.bytes[self.pos..].starts_with(b"\\u") {
                return self.error("lone surrogate in a \\u escape");
            }
            self.pos += 2;
            let lo = self.hex4()?;
            if !(0xDC00..0xE000).contains(&lo) {
                return self.error("lone surrogate in a \\u escape");
            }
            0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
        } else {
            hi
        };
        match char::from_u32(code) {
            Some(ch) => Ok(ch),
            None => self.error("lone surrogate in a \\u escape"),
        }
    }

    fn hex4(&mut self) -> Result<u32> {
        let Some(digits) = self.bytes.get(self.pos..self.pos + 4) else {
            return self.error("short \\u escape");
        };
        let mut v = 0;
        for &d in digits {
            let Some(x) = char::from(d).to_digit(16) else {
                return self.error("invalid \\u escape");
            };
            v = v * 16 + x;
        }
        self.pos += 4;
        Ok(v)
    }
}

#[allow(clippy::inline_always)] // see `Scanner::number`
#[inline(always)]
/// Consumes ASCII digits from `at`, accumulating them (wrapping) into `acc`: eight at a
/// time where it can (the SWAR routine of fast_float and simdjson), then one by one.
fn digit_run(b: &[u8], mut at: usize, acc: &mut u64) -> usize {
    while let Some(chunk) = b.get(at..at + 8) {
        let mut word = [0; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_le_bytes(word);
        let all_digits = ((x & 0xF0F0_F0F0_F0F0_F0F0)
            | ((x.wrapping_add(0x0606_0606_0606_0606) & 0xF0F0_F0F0_F0F0_F0F0) >> 4))
            == 0x3333_3333_3333_3333;
        if !all_digits {
            break;
        }
        let mut v = x.wrapping_sub(0x3030_3030_3030_3030);
        v = v.wrapping_mul(10).wrapping_add(v >> 8);
        v = ((v & 0x0000_00FF_0000_00FF)
            .wrapping_mul(100 + (1_000_000 << 32))
            .wrapping_add(((v >> 16) & 0x0000_00FF_0000_00FF).wrapping_mul(1 + (10_000 << 32))))
            >> 32;
        *acc = acc.wrapping_mul(100_000_000).wrapping_add(v & 0xFFFF_FFFF);
        at += 8;
    }
    while let Some(&d) = b.get(at) {
        let v = d.wrapping_sub(b'0');
        if v > 9 {
            break;
        }
        *acc = acc.wrapping_mul(10).wrapping_add(u64::from(v));
        at += 1;
    }
    at
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

#[inline]
/// The first index from `at` holding `"`, `\\` or a control character (or the end): eight
/// bytes at a time, with the classic "has a byte less than n" word tricks.
fn plain_run(b: &[u8], mut at: usize) -> usize {
    while let Some(chunk) = b.get(at..at + 8) {
        let mut word = [0; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_le_bytes(word);
        let quote = x ^ (ONES * u64::from(b'"'));
        let slash = x ^ (ONES * u64::from(b'\\'));
        let hits = (quote.wrapping_sub(ONES) & !quote)
            | (slash.wrapping_sub(ONES) & !slash)
            | (x.wrapping_sub(ONES * 0x20) & !x);
        let hits = hits & HIGHS;
        if hits != 0 {
            // The lowest flagged byte is exact (higher ones may be false positives).
            return at + (hits.trailing_zeros() / 8) as usize;
        }
        at += 8;
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scalar(text: &str) -> Result<Scalar<'_>> {
        let mut s = Scanner::new(text);
        let v = s.scalar()?;
        s.end()?;
        Ok(v)
    }

    fn num(text: &str) -> Number<'_> {
        match scalar(text).unwrap() {
            Scalar::Num(n) => n,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn numbers_parse_exactly() {
        for text in [
            "0",
            "-0",
            "-0.0",
            "1.5",
            "0.1",
            "0.30000000000000004",
            "1e22",
            "1e23",
            "123456.789012",
            "5e-324",
            "1.7976931348623157e308",
            "2.2250738585072014e-308",
            "9007199254740993",
            "12345678901234567890123",
            "-1.25e-10",
            "1E+2",
            "0.000001234",
        ] {
            let expected: f64 = text.parse().unwrap();
            let got = num(text).as_f64();
            assert_eq!(got.to_bits(), expected.to_bits(), "{text}");
        }
        assert!(num("1e400").as_f64().is_infinite());
        assert_eq!(num("-9223372036854775808").as_i64(), Some(i64::MIN));
        assert_eq!(num("9223372036854775807").as_i64(), Some(i64::MAX));
        assert_eq!(num("9223372036854775808").as_i64(), None);
        assert_eq!(num("99999999999999999999").as_i64(), None);
        assert_eq!(num("5.0").as_i64(), None);
        assert!(num("5").integer);
    }

    #[test]
    fn take_key_matches_only_the_exact_spelling() {
        let ts = KeyPattern::new("ts");
        let long = KeyPattern::new("reactive_power_var");
        // Short texts take the byte-by-byte comparison, long ones the word compares.
        for pad in ["", "                              "] {
            let text = format!(" \"ts\":1{pad}");
            let mut s = Scanner::new(&text);
            assert!(s.take_key(&ts), "{text:?}");
            assert_eq!(s.peek(), Some(b'1'));
            for miss in ["\"ts\" :", "\"tsx\":", "\"t\":", "\"t\\u0073\":", "\"ts\""] {
                let text = format!("{miss}{pad}");
                let mut s = Scanner::new(&text);
                assert!(!s.take_key(&ts), "{text:?}");
                assert_eq!(s.pos, 0, "a miss consumes nothing");
            }
            let text = format!("\"reactive_power_var\":2{pad}");
            let mut s = Scanner::new(&text);
            assert!(s.take_key(&long));
            assert_eq!(s.peek(), Some(b'2'));
            let text = format!("\"reactive_power_vaR\":2{pad}");
            assert!(!Scanner::new(&text).take_key(&long));
        }
    }

    #[test]
    fn strings_unescape() {
        assert_eq!(
            scalar(r#""plain""#),
            Ok(Scalar::Str(Cow::Borrowed("plain")))
        );
        assert_eq!(
            scalar(r#""a\"b\\c\/d\b\f\n\r\t\u00e9\ud83d\ude00""#),
            Ok(Scalar::Str(Cow::Owned(
                "a\"b\\c/d\u{8}\u{c}\n\r\té😀".to_owned()
            )))
        );
        assert_eq!(
            scalar(r#""\u0000""#),
            Ok(Scalar::Str(Cow::Owned("\0".to_owned())))
        );
    }

    #[test]
    fn invalid_json_is_refused() {
        for text in [
            "",
            "nul",
            "NaN",
            "Infinity",
            "-",
            "01",
            "1.",
            "1e",
            ".5",
            "+1",
            "\"abc",
            "\"\\x\"",
            "\"\\ud800\"",
            "\"\\udc00\"",
            "\"\\ud800\\u0041\"",
            "\"\t\"",
            "[1,]",
            "{\"a\":1,}",
            "{\"a\" 1}",
            "{1:2}",
            "[1 2]",
            "[",
            "{",
            "1 2",
            "\"\\u12\"",
        ] {
            assert!(scalar(text).is_err(), "{text:?}");
        }
    }

    #[test]
    fn containers_are_skipped_and_raw_text_kept() {
        let text = r#" {"a": [1, {"b": null}, "x\"]"], "c": {}} "#;
        let mut s = Scanner::new(text);
        assert_eq!(s.raw().unwrap(), &text[1..text.len() - 1]);
        s.end().unwrap();
        assert_eq!(scalar("[[], {}, [[]]]"), Ok(Scalar::Array));
        let deep = format!(
            "{}1{}",
            "[".repeat(MAX_NESTING + 1),
            "]".repeat(MAX_NESTING + 1)
        );
        assert_eq!(scalar(&deep).unwrap_err().what, "nested too deeply");
        let ok = format!("{}1{}", "[".repeat(MAX_NESTING), "]".repeat(MAX_NESTING));
        assert_eq!(scalar(&ok), Ok(Scalar::Array));
    }
}
