//! A decoder's message about stored data, without the stored values it
//! quotes.
//!
//! serde's messages name the value they could not use: `invalid type:
//! string "tok_4111111111111111", expected u64`. When the JSON is a
//! durable log's context or a step's output, that value is a user's data
//! (a card token, an email) and the message goes into an
//! [`EngineError`](crate::EngineError), a worker's ERROR log record and an
//! operator's terminal. [`decode_message`] keeps what a developer needs to
//! fix the type (the kind of value, what was expected, the line and
//! column, field names) and drops the values: `invalid type: string,
//! expected u64`.

/// Kinds serde's `Unexpected` writes with the value after them in
/// backticks (`integer `5``).
const IN_BACKTICKS: [&str; 4] = ["integer `", "floating point `", "boolean `", "character `"];
/// A string value, written as Rust's `Debug` writes a `str`.
const STRING: &str = "string \"";
/// An enum variant read from the data, before the variants expected.
const VARIANT: &str = "unknown variant `";
/// A key read from the data (`deny_unknown_fields`), before the fields
/// expected.
const FIELD: &str = "unknown field `";

/// `message`, a serde decoder's error about stored JSON, with the values
/// it quotes left out: `invalid type: string "x", expected u64 at line 1
/// column 3` becomes `invalid type: string, expected u64 at line 1 column
/// 3`; `integer `5``, `floating point `1.5``, `boolean `true``,
/// `character `c``, `unknown variant `x`` and `unknown field `x`` (a key
/// of the data) lose their values the same way. The type's field names
/// are kept (`missing field `coupon``).
pub(crate) fn decode_message(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some((at, marker)) = next_marker(rest) {
        // The marker without its opening quote or backtick, and the space
        // before it: `string "` is written `string`.
        let kind = &marker[..marker.len() - 1];
        out.push_str(&rest[..at]);
        out.push_str(kind.trim_end());
        let value = &rest[at + marker.len()..];
        rest = match value_end(marker, value) {
            Some(end) => &value[end..],
            // An unterminated value: drop all of it.
            None => "",
        };
    }
    out.push_str(rest);
    out
}

/// Where the first value-quoting marker in `text` starts, and which.
fn next_marker(text: &str) -> Option<(usize, &'static str)> {
    IN_BACKTICKS
        .iter()
        .chain([&STRING, &VARIANT, &FIELD])
        .filter_map(|&marker| text.find(marker).map(|at| (at, marker)))
        .min_by_key(|&(at, _)| at)
}

/// The byte just past the value that starts `value` (its closing quote or
/// backtick included), if it ends.
fn value_end(marker: &str, value: &str) -> Option<usize> {
    match marker {
        STRING => {
            // `Debug` escapes `"` and `\` inside the string.
            let mut chars = value.char_indices();
            while let Some((at, c)) = chars.next() {
                match c {
                    '\\' => {
                        chars.next();
                    }
                    '"' => return Some(at + 1),
                    _ => {}
                }
            }
            None
        }
        // The variant is the data's and may hold anything; what follows it
        // is the type's list of variants.
        VARIANT | FIELD => [
            "`, expected ",
            "`, there are no variants",
            "`, there are no fields",
        ]
        .iter()
        .filter_map(|tail| value.rfind(tail))
        .max()
        .map(|at| at + 1),
        // A character may be a backtick itself.
        "character `" => {
            let c = value.chars().next()?;
            value[c.len_utf8()..]
                .starts_with('`')
                .then(|| c.len_utf8() + 1)
        }
        _ => value.find('`').map(|at| at + 1),
    }
}

#[cfg(test)]
mod tests {
    use super::decode_message;
    use serde::Deserialize;

    /// serde_json's message for `json` read as a `T`, redacted.
    fn redacted<T: for<'de> Deserialize<'de> + std::fmt::Debug>(json: &str) -> String {
        let error = serde_json::from_str::<T>(json).unwrap_err();
        decode_message(&error.to_string())
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Payment {
        amount: u64,
        coupon: String,
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    enum Tier {
        Gold,
        Silver,
    }

    #[test]
    fn a_string_value_is_left_out() {
        assert_eq!(
            redacted::<Payment>(r#"{"amount": "tok_SECRET_4111111111111111", "coupon": "x"}"#),
            "invalid type: string, expected u64 at line 1 column 40"
        );
        // Quotes and backslashes inside the value do not end it early.
        assert_eq!(
            redacted::<u64>(r#""a \" , expected x \\ \" b""#),
            "invalid type: string, expected u64 at line 1 column 27"
        );
    }

    #[test]
    fn scalar_values_are_left_out() {
        assert_eq!(
            redacted::<String>("4111111111111111"),
            "invalid type: integer, expected a string at line 1 column 16"
        );
        assert_eq!(
            redacted::<String>("-42"),
            "invalid type: integer, expected a string at line 1 column 3"
        );
        assert_eq!(
            redacted::<String>("1.5"),
            "invalid type: floating point, expected a string at line 1 column 3"
        );
        assert_eq!(
            redacted::<String>("true"),
            "invalid type: boolean, expected a string at line 1 column 4"
        );
        assert_eq!(
            decode_message("invalid type: character `S`, expected u8"),
            "invalid type: character, expected u8"
        );
        assert_eq!(
            decode_message("invalid type: character ```, expected u8"),
            "invalid type: character, expected u8"
        );
        assert_eq!(
            redacted::<u8>("300"),
            "invalid value: integer, expected u8 at line 1 column 3"
        );
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Strict {
        amount: u64,
    }

    #[test]
    fn a_key_read_from_the_data_is_left_out() {
        assert_eq!(
            redacted::<Strict>(r#"{"jane.doe@example.com": 1}"#),
            "unknown field, expected `amount` at line 1 column 23"
        );
    }

    #[test]
    fn a_variant_read_from_the_data_is_left_out() {
        assert_eq!(
            redacted::<Tier>(r#""jane`, expected @example.com""#),
            "unknown variant, expected `Gold` or `Silver` at line 1 column 30"
        );
    }

    #[test]
    fn what_the_type_says_is_kept() {
        assert_eq!(
            redacted::<Payment>(r#"{"amount": 5}"#),
            "missing field `coupon` at line 1 column 13"
        );
        assert_eq!(
            redacted::<Payment>(r#"["a"]"#),
            "invalid type: string, expected u64 at line 1 column 4"
        );
        assert_eq!(
            redacted::<u64>("[1, 2]"),
            "invalid type: sequence, expected u64 at line 1 column 0"
        );
        assert_eq!(
            redacted::<Payment>(r#"{"amount": "#),
            "EOF while parsing a value at line 1 column 11"
        );
    }

    #[test]
    fn an_unterminated_value_is_dropped_whole() {
        assert_eq!(
            decode_message(r#"invalid type: string "tok_SECRET"#),
            "invalid type: string"
        );
        assert_eq!(
            decode_message("unknown variant `tok_SECRET"),
            "unknown variant"
        );
    }
}
