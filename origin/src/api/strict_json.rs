//! JSON bodies read strictly: serde's derived structs also accept an array of their fields in order
//! (`[1]` for `{"to_version":1}`); a client that sends that has made a mistake we should tell it about.
//! Reading goes through a [`Value`] whose structs must be objects at every depth.

use serde::de::{self, DeserializeOwned, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess, Unexpected, Visitor};
use serde::forward_to_deserialize_any;
use serde_json::{Map, Value};

/// Deserializes `value` into `T`, refusing arrays (or anything but objects) where `T` has a struct.
pub fn from_value<T: DeserializeOwned>(value: Value) -> Result<T, serde_json::Error> {
    T::deserialize(Strict(value))
}

struct Strict(Value);

fn unexpected(value: &Value) -> Unexpected<'_> {
    match value {
        Value::Null => Unexpected::Unit,
        Value::Bool(b) => Unexpected::Bool(*b),
        Value::Number(n) => n.as_f64().map_or(Unexpected::Other("number"), Unexpected::Float),
        Value::String(s) => Unexpected::Str(s),
        Value::Array(_) => Unexpected::Seq,
        Value::Object(_) => Unexpected::Map,
    }
}

impl<'de> de::Deserializer<'de> for Strict {
    type Error = serde_json::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::Array(items) => visitor.visit_seq(Items(items.into_iter())),
            Value::Object(map) => visitor.visit_map(Entries {
                entries: map.into_iter(),
                value: None,
            }),
            scalar => scalar.deserialize_any(visitor),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::Object(_) => self.deserialize_any(visitor),
            other => Err(de::Error::invalid_type(unexpected(&other), &"a JSON object")),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0.deserialize_enum(name, variants, visitor)
    }

    integers! {
        deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64 deserialize_i128
        deserialize_u8 deserialize_u16 deserialize_u128
    }

    // The document gives these the formats int32 and int64: larger values are refused, as their
    // format says, so that every client can hold what it reads back.
    fn deserialize_u32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        within(integral(self.0), i32::MAX.unsigned_abs().into())?.deserialize_any(visitor)
    }

    fn deserialize_u64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        within(integral(self.0), i64::MAX.unsigned_abs())?.deserialize_any(visitor)
    }

    forward_to_deserialize_any! {
        bool f32 f64 char str string bytes byte_buf unit unit_struct
        seq tuple tuple_struct map identifier ignored_any
    }
}

/// Integer fields read a number without a fraction written with one (`3.0`) as that integer, as JSON
/// Schema does: `{"type": "integer"}` admits `3.0`, so a client following the document may send it.
macro_rules! integers {
    ($($method:ident)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
            integral(self.0).deserialize_any(visitor)
        }
    )*};
}
use integers;

/// `value`, unless it is an integer above `max`.
fn within(value: Value, max: u64) -> Result<Value, serde_json::Error> {
    match value.as_u64() {
        Some(n) if n > max => Err(de::Error::invalid_value(
            Unexpected::Unsigned(n),
            &format!("an integer of at most {max}").as_str(),
        )),
        _ => Ok(value),
    }
}

/// `value`, with a number that has no fraction and fits an i64 or a u64 made that integer.
fn integral(value: Value) -> Value {
    const TWO_POW_63: f64 = 9_223_372_036_854_775_808.0;
    const TWO_POW_64: f64 = 18_446_744_073_709_551_616.0;
    match value.as_f64() {
        Some(float) if value.is_f64() && float.fract() == 0.0 => {
            if (0.0..TWO_POW_64).contains(&float) {
                Value::from(float as u64)
            } else if (-TWO_POW_63..0.0).contains(&float) {
                Value::from(float as i64)
            } else {
                value
            }
        }
        _ => value,
    }
}

struct Items(std::vec::IntoIter<Value>);

impl<'de> SeqAccess<'de> for Items {
    type Error = serde_json::Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, Self::Error> {
        self.0.next().map(|item| seed.deserialize(Strict(item))).transpose()
    }
}

struct Entries {
    entries: <Map<String, Value> as IntoIterator>::IntoIter,
    value: Option<Value>,
}

impl<'de> MapAccess<'de> for Entries {
    type Error = serde_json::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, Self::Error> {
        let Some((key, value)) = self.entries.next() else {
            return Ok(None);
        };
        self.value = Some(value);
        seed.deserialize(key.into_deserializer()).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Self::Error> {
        let value = self
            .value
            .take()
            .ok_or_else(|| de::Error::custom("a value was asked before its key"))?;
        seed.deserialize(Strict(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use std::collections::BTreeMap;

    #[derive(Debug, PartialEq, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        a: u64,
    }

    #[derive(Debug, PartialEq, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Outer {
        inner: Inner,
        list: Vec<Inner>,
        maybe: Option<f64>,
        map: BTreeMap<String, f64>,
        any: Value,
    }

    #[test]
    fn integral_numbers_are_integers() {
        let inner: Inner = from_value(serde_json::json!({"a": 83769511.0})).unwrap();
        assert_eq!(inner, Inner { a: 83_769_511 });
        for not_integral in [
            serde_json::json!({"a": 1.5}),
            serde_json::json!({"a": -1.0}),
            serde_json::json!({"a": 1e30}),
        ] {
            assert!(from_value::<Inner>(not_integral.clone()).is_err(), "{not_integral}");
        }
        let signed: i64 = from_value(serde_json::json!(-3.0)).unwrap();
        assert_eq!(signed, -3);
    }

    #[test]
    fn unsigned_integers_stay_within_their_documented_formats() {
        let largest: u64 = from_value(serde_json::json!(i64::MAX)).unwrap();
        assert_eq!(largest, i64::MAX.unsigned_abs());
        let error = from_value::<u64>(serde_json::json!(i64::MAX.unsigned_abs() + 1)).unwrap_err();
        assert!(error.to_string().contains("at most 9223372036854775807"), "{error}");
        let largest: u32 = from_value(serde_json::json!(i32::MAX)).unwrap();
        assert_eq!(largest, i32::MAX.unsigned_abs());
        assert!(from_value::<u32>(serde_json::json!(i32::MAX.unsigned_abs() + 1)).is_err());
        assert!(from_value::<Inner>(serde_json::json!({"a": 1e19})).is_err());
    }

    #[test]
    fn objects_are_read_as_usual() {
        let value = serde_json::json!({"inner": {"a": 1}, "list": [{"a": 2}], "maybe": 3, "map": {"x": 1.5}, "any": [1, {"b": 2}]});
        let outer: Outer = from_value(value.clone()).unwrap();
        assert_eq!(outer.inner, Inner { a: 1 });
        assert_eq!(outer.maybe, Some(3.0));
        assert_eq!(outer.any, value["any"]);
        let none: Outer =
            from_value(serde_json::json!({"inner": {"a": 1}, "list": [], "maybe": null, "map": {}, "any": null}))
                .unwrap();
        assert_eq!(none.maybe, None);
    }

    #[test]
    fn arrays_are_not_structs_at_any_depth() {
        for bad in [
            serde_json::json!([{"a": 1}, [], null, {}, null]),
            serde_json::json!({"inner": [1], "list": [], "maybe": null, "map": {}, "any": null}),
            serde_json::json!({"inner": {"a": 1}, "list": [[2]], "maybe": null, "map": {}, "any": null}),
        ] {
            let error = from_value::<Outer>(bad).unwrap_err();
            assert!(error.to_string().contains("expected a JSON object"), "{error}");
        }
    }

    #[test]
    fn unknown_fields_are_still_refused() {
        let error = from_value::<Inner>(serde_json::json!({"a": 1, "b": 2})).unwrap_err();
        assert!(error.to_string().contains("unknown field"), "{error}");
    }
}
