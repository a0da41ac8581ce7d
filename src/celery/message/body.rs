//! The body `[args, kwargs, embed]`, read in one pass.

use serde_json::{Map, Value};

use super::Embed;

/// A body's args, kwargs and embed.
pub(super) struct Body {
    pub(super) args: Vec<Value>,
    pub(super) kwargs: Map<String, Value>,
    pub(super) embed: Embed,
}

/// `[args, kwargs, embed]` read in one pass (the embed may be left out or null). A body of the
/// wrong shape is `Err(why)` inside, apart from JSON that does not parse.
pub(super) struct Shaped(pub(super) Result<Body, &'static str>);

impl<'de> serde::Deserialize<'de> for Shaped {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        de.deserialize_any(ShapeVisitor)
    }
}

struct ShapeVisitor;

pub(super) const SHAPE: &str = "expected [args, kwargs, embed]";

impl<'de> serde::de::Visitor<'de> for ShapeVisitor {
    type Value = Shaped;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(SHAPE)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Shaped, A::Error> {
        use serde::de::IgnoredAny;
        let args = seq.next_element::<Value>()?;
        let kwargs = seq.next_element::<Value>()?;
        let embed = seq.next_element::<Value>()?;
        let mut more = false;
        // Read to the end: the parser checks the rest of the JSON either way.
        while seq.next_element::<IgnoredAny>()?.is_some() {
            more = true;
        }
        let (Some(args), Some(kwargs)) = (args, kwargs) else {
            return Ok(Shaped(Err(SHAPE)));
        };
        if more {
            return Ok(Shaped(Err(SHAPE)));
        }
        let kwargs = match kwargs {
            Value::Object(map) => map,
            Value::Null => Map::new(),
            _ => return Ok(Shaped(Err("kwargs is not an object"))),
        };
        let args = match args {
            Value::Array(list) => list,
            Value::Null => Vec::new(),
            _ => return Ok(Shaped(Err("args is not a list"))),
        };
        let embed =
            match embed {
                None | Some(Value::Null) => Embed::default(),
                Some(embed) => match serde_json::from_value(embed) {
                    Ok(embed) => embed,
                    Err(_) => return Ok(Shaped(Err(
                        "the embed is not {callbacks, errbacks, chain, chord}, each a list or null",
                    ))),
                },
            };
        Ok(Shaped(Ok(Body {
            args,
            kwargs,
            embed,
        })))
    }

    // Any other JSON value: the wrong shape, not bad JSON.
    fn visit_bool<E>(self, _: bool) -> Result<Shaped, E> {
        Ok(Shaped(Err(SHAPE)))
    }
    fn visit_i64<E>(self, _: i64) -> Result<Shaped, E> {
        Ok(Shaped(Err(SHAPE)))
    }
    fn visit_u64<E>(self, _: u64) -> Result<Shaped, E> {
        Ok(Shaped(Err(SHAPE)))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Shaped, E> {
        Ok(Shaped(Err(SHAPE)))
    }
    fn visit_str<E>(self, _: &str) -> Result<Shaped, E> {
        Ok(Shaped(Err(SHAPE)))
    }
    fn visit_unit<E>(self) -> Result<Shaped, E> {
        Ok(Shaped(Err(SHAPE)))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Shaped, A::Error> {
        use serde::de::IgnoredAny;
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Shaped(Err(SHAPE)))
    }
}
