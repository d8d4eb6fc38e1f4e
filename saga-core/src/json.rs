//! Compact JSON, byte for byte as `serde_json::to_writer` writes it, with
//! the strings that need no escaping copied whole.
//!
//! A durable run encodes its context at every step. serde_json looks up
//! every byte of every string in a table, one byte at a time, to find the
//! ones it escapes (`"`, `\` and the controls below U+0020); here a string
//! is checked eight bytes at a time, and one with none of them is copied
//! between its quotes. Everything else is serde_json's own work: numbers,
//! `null`, strings that need escaping, map keys that are not strings, and
//! serde_json's private structs (`RawValue`, `Number` under
//! `arbitrary_precision`) go through a `serde_json::Serializer` made for
//! the one value on the same buffer, and the punctuation is written by
//! serde_json's `CompactFormatter`, in the order serde_json's serializer
//! calls it.
//!
//! The functions a value's encoding calls are `#[inline]`: the encoding of
//! a context is instantiated in the crate that defines the context, which
//! otherwise calls each of them out of line, several calls per array
//! element (a quarter of a 20 KB context's encoding time, measured).
//!
//! Why a serializer of our own rather than one wrapped around serde_json's,
//! passing all but strings through: a wrapper meets serializers whose `Ok`
//! it cannot name (so it must ask serde_json for an empty string and write
//! between its quotes), and shares the buffer with serde_json through a
//! `RefCell` checked at every write; measured, it cost more than the
//! scanning it saved on a context of short strings.

use serde::ser::{self, Serialize, SerializeMap as _, Serializer as _};
use serde_json::Error;
use serde_json::ser::{CompactFormatter, Formatter};

/// `value` as compact JSON appended to `out`, as `serde_json::to_writer`
/// would write it.
///
/// # Errors
///
/// What `serde_json::to_writer` returns for `value` (a map key that is not
/// a string, a `Serialize` impl's own error); `out`'s contents are then
/// unspecified.
pub(crate) fn write<T: ?Sized + Serialize>(out: Vec<u8>, value: &T) -> Result<Vec<u8>, Error> {
    let mut writer = Writer { out };
    value.serialize(&mut writer)?;
    Ok(writer.out)
}

/// Appends `bytes` between quotes, as serde_json writes a string with
/// nothing to escape, and returns `true`; or returns `false`, having
/// written part of it, when one of its bytes needs escaping: `"`, `\` or
/// one below 0x20 (serde_json writes DEL, U+2028 and U+2029 as they are).
///
/// Eight bytes at a time, each word checked as it is copied, so that the
/// copies are stores of a known length rather than a call to `memcpy`; the
/// last bytes go as the last word, overlapping the one before.
#[inline]
fn copy_clean(out: &mut Vec<u8>, bytes: &[u8]) -> bool {
    let len = bytes.len();
    out.reserve(len + 2);
    out.push(b'"');
    if len >= 8 {
        let mut rest = bytes;
        while let Some((word, tail)) = rest.split_first_chunk::<8>() {
            if word_needs_escape(u64::from_le_bytes(*word)) {
                return false;
            }
            out.extend_from_slice(word);
            rest = tail;
        }
        if let (false, Some(last)) = (rest.is_empty(), bytes.last_chunk::<8>()) {
            if word_needs_escape(u64::from_le_bytes(*last)) {
                return false;
            }
            out.truncate(out.len() - (8 - rest.len()));
            out.extend_from_slice(last);
        }
    } else if len >= 4 {
        // Two words of four that may overlap, checked as one of eight.
        let first = [bytes[0], bytes[1], bytes[2], bytes[3]];
        let last = [
            bytes[len - 4],
            bytes[len - 3],
            bytes[len - 2],
            bytes[len - 1],
        ];
        let word = u64::from(u32::from_le_bytes(first)) | u64::from(u32::from_le_bytes(last)) << 32;
        if word_needs_escape(word) {
            return false;
        }
        out.extend_from_slice(&first);
        out.truncate(out.len() - (8 - len));
        out.extend_from_slice(&last);
    } else {
        if bytes.iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\') {
            return false;
        }
        out.extend_from_slice(bytes);
    }
    out.push(b'"');
    true
}

/// Whether a byte of `w` is `"`, `\` or below 0x20, with the word tricks
/// of "Bit Twiddling Hacks" (`haszero`, `hasless`): `(w - 0x01..) & !w &
/// 0x80..` is non-zero when a byte of `w` is zero, and with `0x20..` for
/// `0x01..` when a byte is below 0x20. A borrow can only mark a byte above
/// one that is marked rightly, so the answer is exact, though not the
/// position.
#[inline]
fn word_needs_escape(w: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let control = w.wrapping_sub(ONES * 0x20);
    let quote = (w ^ (ONES * u64::from(b'"'))).wrapping_sub(ONES);
    let backslash = (w ^ (ONES * u64::from(b'\\'))).wrapping_sub(ONES);
    // `"` and `\` are below 0x80: a byte's high bit is the same in `w` and
    // in `w` xor either, so one `!w` serves the three tests.
    (control | quote | backslash) & !w & HIGHS != 0
}

/// The names of serde_json's structs that its serializer writes raw when a
/// feature is on (`raw_value`, `arbitrary_precision`).
const RAW_VALUE: &str = "$serde_json::private::RawValue";
const NUMBER: &str = "$serde_json::private::Number";

/// Whether serde_json writes its struct `name` ([`RAW_VALUE`] or
/// [`NUMBER`]) raw: whether the feature that makes it so is on in this
/// build (features are chosen for the whole build, by any crate). Asked of
/// serde_json once each. Without it, a struct of that name is any struct.
fn raw_in_serde_json(name: &'static str) -> bool {
    static RAW: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    static NUMBERS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    /// serde_json's own struct `name`, holding `1`.
    struct Probe(&'static str);
    impl Serialize for Probe {
        fn serialize<S: ser::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut probe = s.serialize_struct(self.0, 1)?;
            ser::SerializeStruct::serialize_field(&mut probe, self.0, "1")?;
            ser::SerializeStruct::end(probe)
        }
    }
    let asked = if name == RAW_VALUE { &RAW } else { &NUMBERS };
    *asked.get_or_init(|| serde_json::to_vec(&Probe(name)).is_ok_and(|json| json == b"1"))
}

struct Writer {
    out: Vec<u8>,
}

impl Writer {
    /// serde_json's serializer on the buffer, for one value.
    #[inline]
    fn json(&mut self) -> serde_json::Serializer<&mut Vec<u8>> {
        serde_json::Serializer::new(&mut self.out)
    }

    #[inline]
    fn str(&mut self, v: &str) -> Result<(), Error> {
        let start = self.out.len();
        if copy_clean(&mut self.out, v.as_bytes()) {
            return Ok(());
        }
        self.out.truncate(start);
        self.escaped(v)
    }

    #[cold]
    #[inline(never)]
    fn escaped(&mut self, v: &str) -> Result<(), Error> {
        self.json().serialize_str(v)
    }

    /// `{"variant":`, as serde_json begins a newtype, tuple or struct
    /// variant.
    #[inline]
    fn begin_variant(&mut self, variant: &str) -> Result<(), Error> {
        let mut f = CompactFormatter;
        f.begin_object(&mut self.out).map_err(Error::io)?;
        f.begin_object_key(&mut self.out, true).map_err(Error::io)?;
        self.str(variant)?;
        f.end_object_key(&mut self.out).map_err(Error::io)?;
        f.begin_object_value(&mut self.out).map_err(Error::io)
    }

    #[inline]
    fn end_variant(&mut self) -> Result<(), Error> {
        let mut f = CompactFormatter;
        f.end_object_value(&mut self.out).map_err(Error::io)?;
        f.end_object(&mut self.out).map_err(Error::io)
    }

    #[inline]
    fn seq(&mut self, len: Option<usize>) -> Result<Compound<'_>, Error> {
        let mut f = CompactFormatter;
        f.begin_array(&mut self.out).map_err(Error::io)?;
        let state = if len == Some(0) {
            f.end_array(&mut self.out).map_err(Error::io)?;
            State::Empty
        } else {
            State::First
        };
        Ok(Compound::Map { w: self, state })
    }

    #[inline]
    fn map(&mut self, len: Option<usize>) -> Result<Compound<'_>, Error> {
        let mut f = CompactFormatter;
        f.begin_object(&mut self.out).map_err(Error::io)?;
        let state = if len == Some(0) {
            f.end_object(&mut self.out).map_err(Error::io)?;
            State::Empty
        } else {
            State::First
        };
        Ok(Compound::Map { w: self, state })
    }
}

#[derive(PartialEq, Eq)]
enum State {
    Empty,
    First,
    Rest,
}

/// A sequence, map or struct being written; or one of serde_json's
/// private structs, each field of which serde_json writes.
enum Compound<'a> {
    Map {
        w: &'a mut Writer,
        state: State,
    },
    Private {
        w: &'a mut Writer,
        name: &'static str,
    },
}

macro_rules! delegate {
    ($($method:ident($($arg:ident: $ty:ty),*);)*) => {
        $(
            #[inline]
            fn $method(self, $($arg: $ty),*) -> Result<(), Error> {
                self.json().$method($($arg),*)
            }
        )*
    };
}

impl<'a> ser::Serializer for &'a mut Writer {
    type Ok = ();
    type Error = Error;
    type SerializeSeq = Compound<'a>;
    type SerializeTuple = Compound<'a>;
    type SerializeTupleStruct = Compound<'a>;
    type SerializeTupleVariant = Compound<'a>;
    type SerializeMap = Compound<'a>;
    type SerializeStruct = Compound<'a>;
    type SerializeStructVariant = Compound<'a>;

    delegate! {
        serialize_bool(v: bool);
        serialize_i8(v: i8);
        serialize_i16(v: i16);
        serialize_i32(v: i32);
        serialize_i64(v: i64);
        serialize_i128(v: i128);
        serialize_u8(v: u8);
        serialize_u16(v: u16);
        serialize_u32(v: u32);
        serialize_u64(v: u64);
        serialize_u128(v: u128);
        serialize_f32(v: f32);
        serialize_f64(v: f64);
        serialize_char(v: char);
        serialize_bytes(v: &[u8]);
        serialize_none();
        serialize_unit();
        serialize_unit_struct(name: &'static str);
    }

    #[inline]
    fn serialize_str(self, v: &str) -> Result<(), Error> {
        self.str(v)
    }

    #[inline]
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _variant_index: u32,
        variant: &'static str,
    ) -> Result<(), Error> {
        self.str(variant)
    }

    #[inline]
    fn serialize_some<T: ?Sized + Serialize>(self, value: &T) -> Result<(), Error> {
        value.serialize(self)
    }

    #[inline]
    fn serialize_newtype_struct<T: ?Sized + Serialize>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        value.serialize(self)
    }

    #[inline]
    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        _name: &'static str,
        _variant_index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        self.begin_variant(variant)?;
        value.serialize(&mut *self)?;
        self.end_variant()
    }

    #[inline]
    fn serialize_seq(self, len: Option<usize>) -> Result<Compound<'a>, Error> {
        self.seq(len)
    }

    #[inline]
    fn serialize_tuple(self, len: usize) -> Result<Compound<'a>, Error> {
        self.seq(Some(len))
    }

    #[inline]
    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        len: usize,
    ) -> Result<Compound<'a>, Error> {
        self.seq(Some(len))
    }

    #[inline]
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _variant_index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Compound<'a>, Error> {
        self.begin_variant(variant)?;
        self.seq(Some(len))
    }

    #[inline]
    fn serialize_map(self, len: Option<usize>) -> Result<Compound<'a>, Error> {
        self.map(len)
    }

    #[inline]
    fn serialize_struct(self, name: &'static str, len: usize) -> Result<Compound<'a>, Error> {
        if (name == RAW_VALUE || name == NUMBER) && raw_in_serde_json(name) {
            return Ok(Compound::Private { w: self, name });
        }
        self.map(Some(len))
    }

    #[inline]
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _variant_index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Compound<'a>, Error> {
        self.begin_variant(variant)?;
        self.map(Some(len))
    }

    #[inline]
    fn collect_str<T: ?Sized + std::fmt::Display>(self, value: &T) -> Result<(), Error> {
        self.json().collect_str(value)
    }
}

impl<'a> Compound<'a> {
    fn element<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), Error> {
        let Compound::Map { w, state } = self else {
            return Err(ser::Error::custom(
                "internal error: a field of a private struct",
            ));
        };
        let mut f = CompactFormatter;
        f.begin_array_value(&mut w.out, *state == State::First)
            .map_err(Error::io)?;
        *state = State::Rest;
        value.serialize(&mut **w)?;
        f.end_array_value(&mut w.out).map_err(Error::io)
    }

    #[inline]
    fn end_array(self) -> Result<&'a mut Writer, Error> {
        match self {
            Compound::Map { w, state } => {
                if state != State::Empty {
                    CompactFormatter.end_array(&mut w.out).map_err(Error::io)?;
                }
                Ok(w)
            }
            Compound::Private { w, .. } => Ok(w),
        }
    }

    fn key<T: ?Sized + Serialize>(&mut self, key: &T) -> Result<(), Error> {
        let Compound::Map { w, state } = self else {
            return Err(ser::Error::custom(
                "internal error: a key of a private struct",
            ));
        };
        CompactFormatter
            .begin_object_key(&mut w.out, *state == State::First)
            .map_err(Error::io)?;
        *state = State::Rest;
        let (start, mut refused) = (w.out.len(), false);
        match key.serialize(KeyWriter {
            w,
            refused: &mut refused,
        }) {
            Ok(()) => {}
            // Not a string, whatever error the key's own impl made of the
            // refusal (one that wraps errors makes another of it).
            Err(_) if refused => {
                w.out.truncate(start);
                key_by_serde_json(&mut w.out, key)?;
            }
            Err(KeyError::NotAString) => key_by_serde_json(&mut w.out, key)?,
            Err(KeyError::Json(e)) => return Err(e),
        }
        CompactFormatter
            .end_object_key(&mut w.out)
            .map_err(Error::io)
    }

    fn value<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), Error> {
        let Compound::Map { w, .. } = self else {
            return Err(ser::Error::custom(
                "internal error: a value of a private struct",
            ));
        };
        let mut f = CompactFormatter;
        f.begin_object_value(&mut w.out).map_err(Error::io)?;
        value.serialize(&mut **w)?;
        f.end_object_value(&mut w.out).map_err(Error::io)
    }

    fn field<T: ?Sized + Serialize>(&mut self, key: &'static str, value: &T) -> Result<(), Error> {
        match self {
            Compound::Map { w, state } => {
                CompactFormatter
                    .begin_object_key(&mut w.out, *state == State::First)
                    .map_err(Error::io)?;
                *state = State::Rest;
                w.str(key)?;
                CompactFormatter
                    .end_object_key(&mut w.out)
                    .map_err(Error::io)?;
                self.value(value)
            }
            // serde_json's own, each field through its serializer: raw
            // with its feature on, or `{"$serde_json::private::..":..}`
            // as any struct of one field without (both of its own have
            // one field).
            Compound::Private { w, name } => {
                let mut json = w.json();
                let mut private = ser::Serializer::serialize_struct(&mut json, name, 1)?;
                ser::SerializeStruct::serialize_field(&mut private, key, value)?;
                ser::SerializeStruct::end(private)
            }
        }
    }

    #[inline]
    fn end_object(self) -> Result<&'a mut Writer, Error> {
        match self {
            Compound::Map { w, state } => {
                if state != State::Empty {
                    CompactFormatter.end_object(&mut w.out).map_err(Error::io)?;
                }
                Ok(w)
            }
            Compound::Private { w, .. } => Ok(w),
        }
    }
}

/// The compounds serde_json writes as arrays: `$method` writes an element,
/// `$end` closes the compound.
macro_rules! array_compound {
    ($trait:ident, $method:ident, $end:expr) => {
        impl ser::$trait for Compound<'_> {
            type Ok = ();
            type Error = Error;

            #[inline]
            fn $method<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), Error> {
                self.element(value)
            }

            #[inline]
            fn end(self) -> Result<(), Error> {
                $end(self)
            }
        }
    };
}

array_compound!(SerializeSeq, serialize_element, |c: Self| c
    .end_array()
    .map(drop));
array_compound!(SerializeTuple, serialize_element, |c: Self| c
    .end_array()
    .map(drop));
array_compound!(SerializeTupleStruct, serialize_field, |c: Self| c
    .end_array()
    .map(drop));
array_compound!(SerializeTupleVariant, serialize_field, |c: Self| c
    .end_array()?
    .end_variant());

impl ser::SerializeMap for Compound<'_> {
    type Ok = ();
    type Error = Error;

    fn serialize_key<T: ?Sized + Serialize>(&mut self, key: &T) -> Result<(), Error> {
        self.key(key)
    }

    fn serialize_value<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), Error> {
        self.value(value)
    }

    #[inline]
    fn end(self) -> Result<(), Error> {
        self.end_object().map(|_| ())
    }
}

/// The compounds serde_json writes as objects of named fields; `$end`
/// closes the compound.
macro_rules! struct_compound {
    ($trait:ident, $end:expr) => {
        impl ser::$trait for Compound<'_> {
            type Ok = ();
            type Error = Error;

            fn serialize_field<T: ?Sized + Serialize>(
                &mut self,
                key: &'static str,
                value: &T,
            ) -> Result<(), Error> {
                self.field(key, value)
            }

            #[inline]
            fn end(self) -> Result<(), Error> {
                $end(self)
            }
        }
    };
}

struct_compound!(SerializeStruct, |c: Self| c.end_object().map(drop));
struct_compound!(SerializeStructVariant, |c: Self| c
    .end_object()?
    .end_variant());

/// A map key that is not a string, written as serde_json writes it (quoted
/// numbers, `true`, ...) or refused with its error: a map of serde_json's
/// is begun on the buffer, the key written in it, and its `{` taken out.
fn key_by_serde_json<T: ?Sized + Serialize>(out: &mut Vec<u8>, key: &T) -> Result<(), Error> {
    let start = out.len();
    {
        let mut json = serde_json::Serializer::new(&mut *out);
        let mut map = (&mut json).serialize_map(None)?;
        map.serialize_key(key)?;
    }
    out.remove(start);
    Ok(())
}

/// Writes a map key that is a string; any other key is handed back
/// ([`KeyError::NotAString`], and `refused` set), with nothing written, to
/// serde_json, which serializes it again with its own rules.
struct KeyWriter<'a> {
    w: &'a mut Writer,
    refused: &'a mut bool,
}

impl KeyWriter<'_> {
    fn refuse(self) -> KeyError {
        *self.refused = true;
        KeyError::NotAString
    }
}

#[derive(Debug)]
enum KeyError {
    NotAString,
    Json(Error),
}

impl std::fmt::Display for KeyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyError::NotAString => f.write_str("key must be a string"),
            KeyError::Json(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for KeyError {}

impl ser::Error for KeyError {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        KeyError::Json(Error::custom(msg))
    }
}

macro_rules! not_a_string {
    ($($method:ident($($ty:ty),*);)*) => {
        $(
            fn $method(self, $(_: $ty),*) -> Result<(), KeyError> {
                Err(self.refuse())
            }
        )*
    };
}

impl ser::Serializer for KeyWriter<'_> {
    type Ok = ();
    type Error = KeyError;
    type SerializeSeq = ser::Impossible<(), KeyError>;
    type SerializeTuple = ser::Impossible<(), KeyError>;
    type SerializeTupleStruct = ser::Impossible<(), KeyError>;
    type SerializeTupleVariant = ser::Impossible<(), KeyError>;
    type SerializeMap = ser::Impossible<(), KeyError>;
    type SerializeStruct = ser::Impossible<(), KeyError>;
    type SerializeStructVariant = ser::Impossible<(), KeyError>;

    fn serialize_str(self, v: &str) -> Result<(), KeyError> {
        self.w.str(v).map_err(KeyError::Json)
    }

    not_a_string! {
        serialize_bool(bool);
        serialize_i8(i8);
        serialize_i16(i16);
        serialize_i32(i32);
        serialize_i64(i64);
        serialize_i128(i128);
        serialize_u8(u8);
        serialize_u16(u16);
        serialize_u32(u32);
        serialize_u64(u64);
        serialize_u128(u128);
        serialize_f32(f32);
        serialize_f64(f64);
        serialize_char(char);
        serialize_bytes(&[u8]);
        serialize_none();
        serialize_unit();
        serialize_unit_struct(&'static str);
        serialize_unit_variant(&'static str, u32, &'static str);
    }

    fn serialize_some<T: ?Sized + Serialize>(self, _: &T) -> Result<(), KeyError> {
        Err(self.refuse())
    }

    fn serialize_newtype_struct<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        _: &T,
    ) -> Result<(), KeyError> {
        Err(self.refuse())
    }

    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<(), KeyError> {
        Err(self.refuse())
    }

    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, KeyError> {
        Err(self.refuse())
    }

    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, KeyError> {
        Err(self.refuse())
    }

    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct, KeyError> {
        Err(self.refuse())
    }

    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, KeyError> {
        Err(self.refuse())
    }

    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, KeyError> {
        Err(self.refuse())
    }

    fn serialize_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStruct, KeyError> {
        Err(self.refuse())
    }

    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, KeyError> {
        Err(self.refuse())
    }

    fn collect_str<T: ?Sized + std::fmt::Display>(self, _: &T) -> Result<(), KeyError> {
        Err(self.refuse())
    }
}

#[cfg(test)]
mod tests;
