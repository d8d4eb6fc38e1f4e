//! Tests of [`super`]: each output compared with serde_json's, bytes or
//! error text.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use serde::ser::{Error as _, SerializeMap as _, SerializeSeq as _, Serializer};

use super::{copy_clean, write};

fn needs_escape(bytes: &[u8]) -> bool {
    !copy_clean(&mut Vec::new(), bytes)
}

/// `value` written here and by serde_json: the same bytes, or the same
/// error.
#[track_caller]
fn same<T: ?Sized + Serialize>(value: &T) {
    let ours = write(Vec::new(), value);
    let theirs = serde_json::to_vec(value);
    match (ours, theirs) {
        (Ok(ours), Ok(theirs)) => assert_eq!(
            String::from_utf8_lossy(&ours),
            String::from_utf8_lossy(&theirs)
        ),
        (Err(ours), Err(theirs)) => assert_eq!(ours.to_string(), theirs.to_string()),
        (ours, theirs) => panic!("ours {ours:?}, serde_json's {theirs:?}"),
    }
}

/// `same`, and the value fails in both.
#[track_caller]
fn fails<T: ?Sized + Serialize>(value: &T, message: &str) {
    same(value);
    let err = write(Vec::new(), value).unwrap_err();
    assert_eq!(err.to_string(), message);
}

/// `serialize_bytes`, which serde's impls for `[u8]` do not call.
struct Bytes<'a>(&'a [u8]);

impl Serialize for Bytes<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

/// A `Serialize` impl that fails with its own message, after writing
/// part of a sequence.
struct Refuses;

impl Serialize for Refuses {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(None)?;
        seq.serialize_element("before")?;
        Err(S::Error::custom("refused: \"no\""))
    }
}

/// `collect_str` with text to escape.
struct Collected(&'static str);

impl Serialize for Collected {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&format_args!("<{}>", self.0))
    }
}

/// Writes whether the serializer is human-readable.
struct Readable;

impl Serialize for Readable {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let readable = s.is_human_readable();
        s.serialize_bool(readable)
    }
}

/// A map with keys of any kind, in the given order.
struct Pairs<K, V>(Vec<(K, V)>);

impl<K: Serialize, V: Serialize> Serialize for Pairs<K, V> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

/// A string key, then one that is not.
struct ThenBadKey;

impl Serialize for ThenBadKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(2))?;
        map.serialize_entry("first", &1)?;
        map.serialize_entry(&(), &2)?;
        map.end()
    }
}

#[derive(Serialize)]
struct Unit;

#[derive(Serialize)]
struct Newtype(String);

#[derive(Serialize)]
struct Tuple(u8, &'static str, Option<i64>);

#[derive(Serialize)]
struct Empty {}

#[derive(Serialize, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Plain,
    #[serde(rename = "with \"quote\"")]
    Quoted,
    Newtype(u32),
    Tuple(u32, String),
    Struct {
        a: u8,
        b: String,
    },
    EmptyTuple(),
    EmptyStruct {},
}

#[derive(Serialize)]
struct Order {
    order_id: String,
    customer: String,
    items: Vec<(String, u32)>,
    total_cents: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<String>,
    #[serde(rename = "weird \"key\"\n")]
    weird: bool,
    #[serde(flatten)]
    extra: BTreeMap<String, serde_json::Value>,
    kind: Kind,
    unit: Unit,
    newtype: Newtype,
    tuple: Tuple,
    empty: Empty,
    nothing: Vec<u8>,
}

fn order(note: Option<&str>) -> Order {
    let mut extra = BTreeMap::new();
    extra.insert("flat".to_owned(), serde_json::json!({"x": [1, "y\u{1}"]}));
    Order {
        order_id: "order-000000000042".to_owned(),
        customer: "customer-7f3a9c21@example.com".to_owned(),
        items: vec![("sku-book-0001".to_owned(), 2), ("a\"b".to_owned(), 10)],
        total_cents: 12_345,
        note: note.map(str::to_owned),
        weird: true,
        extra,
        kind: Kind::Struct {
            a: 1,
            b: "tab\there".to_owned(),
        },
        unit: Unit,
        newtype: Newtype("n".to_owned()),
        tuple: Tuple(7, "\\", None),
        empty: Empty {},
        nothing: Vec::new(),
    }
}

/// A struct named as serde_json's `RawValue`: without serde_json's
/// `raw_value` feature, an ordinary struct to it.
#[derive(Serialize)]
#[serde(rename = "$serde_json::private::RawValue")]
struct LikeRawValue {
    #[serde(rename = "$serde_json::private::RawValue")]
    json: &'static str,
}

#[test]
fn appends_to_the_buffer() {
    let out = write(b"x".to_vec(), &("a", 1)).unwrap();
    assert_eq!(out, b"x[\"a\",1]");
}

#[test]
fn scalars_are_serde_jsons() {
    same(&true);
    same(&false);
    same(&[i8::MIN, -1, 0, i8::MAX]);
    same(&[i16::MIN, i16::MAX]);
    same(&[i32::MIN, i32::MAX]);
    same(&[i64::MIN, i64::MAX]);
    same(&[i128::MIN, 0, i128::MAX]);
    same(&[u8::MAX, 0]);
    same(&u16::MAX);
    same(&u32::MAX);
    same(&u64::MAX);
    same(&u128::MAX);
    let f32s = [
        0.0f32,
        -0.0,
        1.5,
        f32::MIN_POSITIVE,
        f32::MAX,
        f32::NAN,
        f32::INFINITY,
    ];
    for v in f32s {
        same(&v);
    }
    let f64s = [
        0.1f64,
        -0.0,
        1e300,
        5e-324,
        f64::NAN,
        f64::NEG_INFINITY,
        f64::INFINITY,
    ];
    for v in f64s {
        same(&v);
    }
    for c in [
        'a', '"', '\\', '\n', '\u{0}', '\u{1f}', '\u{7f}', 'é', '\u{2028}', '😀',
    ] {
        same(&c);
    }
    same(&());
    same(&None::<u8>);
    same(&Some("x"));
    same(&Some(Some(3)));
    same(&Bytes(b"\x00\xffab"));
    same(&Bytes(b""));
    same(&Collected("a\"b\\c\nd"));
    same(&Collected("plain"));
    same(&Readable);
    same(&std::net::Ipv4Addr::LOCALHOST);
}

#[test]
fn strings_are_serde_jsons() {
    same("");
    let mut every_ascii = String::new();
    for b in 0u8..=0x7f {
        every_ascii.push(char::from(b));
        same(&char::from(b).to_string());
        same(&format!("abcdefgh{}ijklmnop", char::from(b)));
    }
    same(&every_ascii);
    same("\u{7f}\u{80}\u{2028}\u{2029}é😀 ü");
    same(&"long and clean, past a few words: ".repeat(20));
    same(&"long, with a \"quote\" at the end ".repeat(20));
}

#[test]
fn compounds_are_serde_jsons() {
    same(&Unit);
    same(&Newtype("a\u{0}".to_owned()));
    same(&Tuple(1, "two", Some(-3)));
    same(&Empty {});
    same(&(1, "a", [true, false], ()));
    for kind in [
        Kind::Plain,
        Kind::Quoted,
        Kind::Newtype(3),
        Kind::Tuple(1, "x\"".to_owned()),
        Kind::Struct {
            a: 2,
            b: String::new(),
        },
        Kind::EmptyTuple(),
        Kind::EmptyStruct {},
    ] {
        same(&kind);
    }
    same(&order(None));
    same(&order(Some("a note, \u{1b}[1m bold")));
    same(&Vec::<Vec<u8>>::new());
    same(&vec![Vec::<u8>::new(), vec![1]]);
    same(&LikeRawValue { json: "{\"a\":1}" });
    let mut deep = serde_json::json!("bottom \"quoted\"");
    for i in 0..200 {
        deep = if i % 2 == 0 {
            serde_json::json!([deep, i])
        } else {
            serde_json::json!({ format!("k{i}"): deep, "n": null })
        };
    }
    same(&deep);
    same(&serde_json::json!({
        "a": [1, 2.5, -3, true, null, "s\"t"],
        "b\nc": {"": {}, "e": []},
        "big": 18446744073709551615u64,
    }));
}

#[test]
fn map_keys_are_serde_jsons() {
    let mut strings = HashMap::new();
    strings.insert("plain key".to_owned(), 1);
    strings.insert("quoted \"key\"".to_owned(), 2);
    strings.insert(String::new(), 3);
    same(&strings);
    same(&Pairs(vec![(1i8, "a"), (-2, "b")]));
    same(&Pairs(vec![(u128::MAX, 0)]));
    same(&Pairs(vec![(i128::MIN, 0)]));
    same(&Pairs(vec![(true, 1), (false, 0)]));
    same(&Pairs(vec![('c', 1), ('"', 2), ('\n', 3)]));
    same(&Pairs(vec![(1.5f64, 1)]));
    same(&Pairs(vec![(2.5f32, 1)]));
    same(&Pairs(vec![(Kind::Plain, 1), (Kind::Quoted, 2)]));
    same(&Pairs(vec![(Newtype("in a newtype".to_owned()), 1)]));
    same(&Pairs(vec![(Some("k"), 1)]));
    fails(
        &Pairs(vec![(f64::NAN, 1)]),
        "float key must be finite (got NaN or +/-inf)",
    );
    fails(&Pairs(vec![((), 1)]), "key must be a string");
    fails(&Pairs(vec![(vec![1], 1)]), "key must be a string");
    fails(&Pairs(vec![((1, 2), 1)]), "key must be a string");
    fails(&Pairs(vec![(Kind::Newtype(1), 1)]), "key must be a string");
    fails(&Pairs(vec![(Bytes(b"k"), 1)]), "key must be a string");
    fails(&Pairs(vec![(Unit, 1)]), "key must be a string");
    fails(&ThenBadKey, "key must be a string");
}

#[test]
fn a_serialize_impls_own_error_is_serde_jsons() {
    fails(&Refuses, "refused: \"no\"");
    fails(&vec![Some(Refuses)], "refused: \"no\"");
    fails(&Pairs(vec![(Collected("k"), Refuses)]), "refused: \"no\"");
}

/// A key whose impl puts context on its serializer's errors: the
/// refusal of a key that is not a string comes back as another error,
/// and must still hand the key to serde_json (which quotes the number).
struct WrapsErrors(u32);

impl Serialize for WrapsErrors {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0
            .serialize(s)
            .map_err(|e| S::Error::custom(format_args!("id: {e}")))
    }
}

#[test]
fn a_key_whose_impl_wraps_errors_is_serde_jsons() {
    same(&Pairs(vec![(WrapsErrors(7), 1)]));
    same(&Pairs(vec![(WrapsErrors(7), 1), (WrapsErrors(8), 2)]));
}

/// A struct of the user's named as serde_json's private ones: without
/// serde_json's features (this build's), any struct.
struct NamedLikeSerdeJsons(&'static str, usize);

impl Serialize for NamedLikeSerdeJsons {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct as _;
        let mut st = s.serialize_struct(self.0, self.1)?;
        for field in ["a", "b"].into_iter().take(self.1) {
            st.serialize_field(field, &1)?;
        }
        st.end()
    }
}

#[test]
fn a_struct_named_as_serde_jsons_own_is_serde_jsons() {
    for name in [super::RAW_VALUE, super::NUMBER] {
        for fields in 0..=2 {
            same(&NamedLikeSerdeJsons(name, fields));
        }
    }
}

/// Escapes where a word's check must catch them: at each position of
/// the first words, and in strings as long as a word and a bit.
#[test]
fn an_escape_is_found_at_every_position() {
    for len in 1..40 {
        for at in 0..len {
            for escape in ['\u{0}', '\u{1f}', '"', '\\', '\n'] {
                let mut s = "abcdefghijklmnopqrstuvwxyzabcdefghijklmn"[..len].to_owned();
                s.replace_range(at..=at, escape.encode_utf8(&mut [0; 4]));
                assert!(needs_escape(s.as_bytes()), "{s:?}");
                same(&s);
                same(&Pairs(vec![(s.as_str(), 0)]));
            }
        }
        let clean: String = "a ~\u{7f}é\u{2028}!#[]".chars().cycle().take(len).collect();
        assert!(!needs_escape(clean.as_bytes()), "{clean:?}");
        same(&clean);
    }
}

/// Thousands of strings, from an alphabet heavy in what serde_json
/// escapes and in the bytes around them (0x1f, 0x20, 0x21, 0x23,
/// 0x5b, 0x5d, 0x7f, 0xff-like multi-byte).
#[test]
fn generated_strings_are_serde_jsons() {
    const ALPHABET: [char; 20] = [
        '\u{0}', '\u{8}', '\n', '\u{1f}', ' ', '!', '"', '#', '[', '\\', ']', 'a', 'z', '~',
        '\u{7f}', '\u{80}', 'é', '\u{2028}', '\u{ffff}', '😀',
    ];
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..5000 {
        let len = (next() % 100) as usize;
        // Most strings clean, as contexts are: an escape in one of
        // four.
        let clean = next() % 4 != 0;
        let s: String = (0..len)
            .map(|_| {
                loop {
                    let c = ALPHABET[(next() % ALPHABET.len() as u64) as usize];
                    if !clean || !(c < ' ' || c == '"' || c == '\\') {
                        break c;
                    }
                }
            })
            .collect();
        same(&s);
        same(&Pairs(vec![(s.as_str(), s.as_str())]));
    }
}
