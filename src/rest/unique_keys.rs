//! Refusing JSON documents with a repeated key in one object.
//!
//! serde_json keeps the last of two equal keys, so `{"refundValue": 10, "refundValue": 160}`
//! would refund 160 to a client whose review showed 10. In a money API that ambiguity is
//! refused instead. serde_json's `Value` cannot tell, so the checked body is walked a second
//! time here, without building anything: keys are borrowed from the body where they need no
//! unescaping, and the path to a key is only written out when one repeats.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};

use crate::refunds::error::quote;

/// Checks that no object in the JSON document `body` has a key twice. The error names the
/// first repeated key by its path (`params.refundValue`). `body` must already be known to be
/// JSON: any other error is reported the same way.
pub fn check(body: &[u8]) -> Result<(), serde_json::Error> {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    Walk { at: None }.deserialize(&mut deserializer)?;
    deserializer.end()
}

/// Where a value sits: the key or `[]` that led to it, and its parent.
struct Path<'a> {
    step: &'a str,
    parent: Option<&'a Path<'a>>,
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(parent) = self.parent {
            write!(f, "{parent}")?;
            if self.step != "[]" {
                f.write_str(".")?;
            }
        }
        f.write_str(self.step)
    }
}

/// Walks one value, checking every object inside it.
struct Walk<'a> {
    at: Option<&'a Path<'a>>,
}

impl<'de> DeserializeSeed<'de> for Walk<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<(), A::Error> {
        let path = Path {
            step: "[]",
            parent: self.at,
        };
        while items.next_element_seed(Walk { at: Some(&path) })?.is_some() {}
        Ok(())
    }

    // (With arbitrary_precision a number also arrives here, as a map of one private key.)
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen: Vec<Cow<'de, str>> = Vec::new();
        while let Some(Key(key)) = map.next_key()? {
            if seen.contains(&key) {
                let path = Path {
                    step: &key,
                    parent: self.at,
                };
                return Err(de::Error::custom(format!(
                    "the key '{}' appears twice",
                    quote(&path.to_string())
                )));
            }
            let path = Path {
                step: &key,
                parent: self.at,
            };
            map.next_value_seed(Walk { at: Some(&path) })?;
            seen.push(key);
        }
        Ok(())
    }
}

/// An object key, borrowed from the body unless it had escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> de::Deserialize<'de> for Key<'de> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_borrowed_str<E>(self, key: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(key)))
            }
            fn visit_str<E>(self, key: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(key.to_owned())))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::check;

    fn refused(body: &str) -> String {
        check(body.as_bytes())
            .expect_err("a repeated key is refused")
            .to_string()
    }

    #[test]
    fn distinct_keys_pass_at_every_depth() {
        check(br#"{"params": {"a": 1, "b": [{"a": 1, "b": 2}, {"a": 1.50}], "c": {"a": null}}}"#)
            .expect("no key repeats within one object");
    }

    #[test]
    fn a_repeated_key_is_named_by_its_path() {
        assert!(
            refused(r#"{"params": {"refundValue": 10, "refundValue": 160.01}}"#)
                .starts_with("the key 'params.refundValue' appears twice")
        );
        assert!(
            refused(r#"{"params": {"refundDetails": {"account": "a", "account": "b"}}}"#)
                .starts_with("the key 'params.refundDetails.account' appears twice")
        );
        assert!(
            refused(r#"{"a": [{"x": 1, "x": 2}]}"#).starts_with("the key 'a[].x' appears twice")
        );
    }

    #[test]
    fn an_escaped_spelling_of_the_same_key_is_the_same_key() {
        assert!(
            refused(r#"{"params": {"sourceId": 1, "source\u0049d": 2}}"#)
                .starts_with("the key 'params.sourceId' appears twice")
        );
    }
}
