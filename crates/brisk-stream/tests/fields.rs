//! Field selection over every serde shape a row can take: whatever wraps the record (an
//! `Option`, a newtype, an enum variant of any kind, a sequence or tuple of records), only the
//! chosen fields of each record are written, and fields that are not offered never are.

use std::collections::BTreeMap;

use brisk_stream::Fields;
use proptest::prelude::*;
use serde::{
    Serialize, Serializer,
    ser::{
        SerializeMap, SerializeSeq, SerializeStruct, SerializeStructVariant, SerializeTuple,
        SerializeTupleStruct, SerializeTupleVariant,
    },
};

/// `secret` is in the type but not offered; `name` is offered but not chosen.
const OFFERED: &[&str] = &["id", "name"];

fn only_id() -> Fields {
    Fields::parse("id", OFFERED).unwrap()
}

fn json<T: Serialize>(fields: &Fields, row: &T) -> String {
    serde_json::to_string(&fields.select(row)).unwrap()
}

#[derive(Serialize)]
struct Record {
    id: i64,
    name: &'static str,
    secret: &'static str,
}

const R: Record = Record {
    id: 1,
    name: "n",
    secret: "s",
};

#[derive(Serialize)]
struct Newtype(Record);

#[derive(Serialize)]
struct TupleStruct(Record, Record);

#[derive(Serialize)]
enum External {
    Unit,
    Newtype(Record),
    Tuple(Record, i64),
    Struct {
        id: i64,
        name: &'static str,
        secret: &'static str,
    },
}

#[derive(Serialize)]
#[serde(tag = "kind")]
enum Internal {
    Newtype(Record),
    Struct { id: i64, secret: &'static str },
}

#[derive(Serialize)]
#[serde(tag = "kind", content = "data")]
enum Adjacent {
    Newtype(Record),
}

#[derive(Serialize)]
#[serde(untagged)]
enum Untagged {
    Newtype(Record),
    Struct { id: i64, secret: &'static str },
}

#[derive(Serialize)]
struct Flattened {
    id: i64,
    #[serde(flatten)]
    inner: External,
}

#[test]
fn every_shape_keeps_only_the_chosen_fields() {
    let fields = only_id();
    let map = BTreeMap::from([("id", 1), ("name", 2), ("secret", 3)]);
    let cases: Vec<(&str, String, &str)> = vec![
        ("struct", json(&fields, &R), r#"{"id":1}"#),
        ("map", json(&fields, &map), r#"{"id":1}"#),
        ("Some", json(&fields, &Some(R)), r#"{"id":1}"#),
        ("None", json(&fields, &None::<Record>), "null"),
        ("newtype struct", json(&fields, &Newtype(R)), r#"{"id":1}"#),
        (
            "newtype variant",
            json(&fields, &External::Newtype(R)),
            r#"{"Newtype":{"id":1}}"#,
        ),
        (
            "struct variant",
            json(
                &fields,
                &External::Struct {
                    id: 1,
                    name: "n",
                    secret: "s",
                },
            ),
            r#"{"Struct":{"id":1}}"#,
        ),
        (
            "tuple variant",
            json(&fields, &External::Tuple(R, 7)),
            r#"{"Tuple":[{"id":1},7]}"#,
        ),
        ("unit variant", json(&fields, &External::Unit), r#""Unit""#),
        (
            "sequence",
            json(&fields, &vec![R, R]),
            r#"[{"id":1},{"id":1}]"#,
        ),
        ("tuple", json(&fields, &(R, 5)), r#"[{"id":1},5]"#),
        (
            "tuple struct",
            json(&fields, &TupleStruct(R, R)),
            r#"[{"id":1},{"id":1}]"#,
        ),
        (
            "Option of a newtype variant",
            json(&fields, &Some(External::Newtype(R))),
            r#"{"Newtype":{"id":1}}"#,
        ),
        // Internally tagged: the tag is a field like any other (offer it to send it).
        (
            "internally tagged newtype",
            json(&fields, &Internal::Newtype(R)),
            r#"{"id":1}"#,
        ),
        (
            "internally tagged struct",
            json(&fields, &Internal::Struct { id: 1, secret: "s" }),
            r#"{"id":1}"#,
        ),
        (
            "untagged newtype",
            json(&fields, &Untagged::Newtype(R)),
            r#"{"id":1}"#,
        ),
        (
            "untagged struct",
            json(&fields, &Untagged::Struct { id: 1, secret: "s" }),
            r#"{"id":1}"#,
        ),
        (
            "flattened newtype variant",
            json(
                &fields,
                &Flattened {
                    id: 1,
                    inner: External::Newtype(R),
                },
            ),
            r#"{"id":1}"#,
        ),
    ];
    for (shape, got, expected) in cases {
        assert_eq!(got, expected, "{shape}");
    }
    // Adjacently tagged: the tag and content are the record's fields; offered, the content
    // is a chosen field's value and is written whole, as any chosen field's value is.
    let adjacent = Fields::parse("kind", &["kind", "data"]).unwrap();
    assert_eq!(
        json(&adjacent, &Adjacent::Newtype(R)),
        r#"{"kind":"Newtype"}"#
    );
}

/// A record, or a wrapper around records, serialized through each of serde's shapes by hand
/// (so the generator reaches every `Serializer` method that can hold a record).
#[derive(Debug, Clone)]
enum Shape {
    Struct(Vec<(usize, i64)>),
    Map(Vec<(usize, i64)>),
    StructVariant(Vec<(usize, i64)>),
    Some(Box<Shape>),
    None,
    Newtype(Box<Shape>),
    NewtypeVariant(Box<Shape>),
    Seq(Vec<Shape>),
    Tuple(Vec<Shape>),
    TupleStruct(Vec<Shape>),
    TupleVariant(Vec<Shape>),
    Int(i64),
}

/// The field names a record may have: offered ones and ones that are not.
const NAMES: &[&str] = &["id", "name", "price", "secret", "password"];
const OFFERED_ALL: &[&str] = &["id", "name", "price"];

/// `shape` serialized as it is (the row handed to the selection).
struct View<'a> {
    shape: &'a Shape,
    keep: &'a dyn Fn(&str) -> bool,
}

impl View<'_> {
    fn child<'b>(&'b self, shape: &'b Shape) -> View<'b> {
        View {
            shape,
            keep: self.keep,
        }
    }
}

impl Serialize for View<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.shape {
            Shape::Struct(fields) => {
                let mut st = s.serialize_struct("Record", fields.len())?;
                for (name, value) in fields {
                    st.serialize_field(NAMES[*name], value)?;
                }
                st.end()
            }
            Shape::Map(fields) => {
                let mut map = s.serialize_map(Some(fields.len()))?;
                for (name, value) in fields {
                    map.serialize_entry(NAMES[*name], value)?;
                }
                map.end()
            }
            Shape::StructVariant(fields) => {
                let mut st = s.serialize_struct_variant("E", 0, "V", fields.len())?;
                for (name, value) in fields {
                    st.serialize_field(NAMES[*name], value)?;
                }
                st.end()
            }
            Shape::Some(inner) => s.serialize_some(&self.child(inner)),
            Shape::None => s.serialize_none(),
            Shape::Newtype(inner) => s.serialize_newtype_struct("N", &self.child(inner)),
            Shape::NewtypeVariant(inner) => {
                s.serialize_newtype_variant("E", 1, "W", &self.child(inner))
            }
            Shape::Seq(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(&self.child(item))?;
                }
                seq.end()
            }
            Shape::Tuple(items) => {
                let mut tuple = s.serialize_tuple(items.len())?;
                for item in items {
                    tuple.serialize_element(&self.child(item))?;
                }
                tuple.end()
            }
            Shape::TupleStruct(items) => {
                let mut tuple = s.serialize_tuple_struct("T", items.len())?;
                for item in items {
                    tuple.serialize_field(&self.child(item))?;
                }
                tuple.end()
            }
            Shape::TupleVariant(items) => {
                let mut tuple = s.serialize_tuple_variant("E", 2, "X", items.len())?;
                for item in items {
                    tuple.serialize_field(&self.child(item))?;
                }
                tuple.end()
            }
            Shape::Int(value) => s.serialize_i64(*value),
        }
    }
}

/// `shape` as the model says it must come out: every record filtered by hand.
struct Model<'a>(View<'a>);

impl Serialize for Model<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let view = &self.0;
        let kept = |fields: &Vec<(usize, i64)>| -> Vec<(&'static str, i64)> {
            fields
                .iter()
                .map(|(name, value)| (NAMES[*name], *value))
                .filter(|(name, _)| (view.keep)(name))
                .collect()
        };
        let child = |shape| Model(view.child(shape));
        match view.shape {
            Shape::Struct(fields) => {
                let kept = kept(fields);
                let mut st = s.serialize_struct("Record", kept.len())?;
                for (name, value) in kept {
                    st.serialize_field(name, &value)?;
                }
                st.end()
            }
            Shape::Map(fields) => {
                let kept = kept(fields);
                let mut map = s.serialize_map(Some(kept.len()))?;
                for (name, value) in kept {
                    map.serialize_entry(name, &value)?;
                }
                map.end()
            }
            Shape::StructVariant(fields) => {
                let kept = kept(fields);
                let mut st = s.serialize_struct_variant("E", 0, "V", kept.len())?;
                for (name, value) in kept {
                    st.serialize_field(name, &value)?;
                }
                st.end()
            }
            Shape::Some(inner) => s.serialize_some(&child(inner)),
            Shape::None => s.serialize_none(),
            Shape::Newtype(inner) => s.serialize_newtype_struct("N", &child(inner)),
            Shape::NewtypeVariant(inner) => s.serialize_newtype_variant("E", 1, "W", &child(inner)),
            Shape::Seq(items) | Shape::Tuple(items) | Shape::TupleStruct(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(&child(item))?;
                }
                seq.end()
            }
            Shape::TupleVariant(items) => {
                let mut tuple = s.serialize_tuple_variant("E", 2, "X", items.len())?;
                for item in items {
                    tuple.serialize_field(&child(item))?;
                }
                tuple.end()
            }
            Shape::Int(value) => s.serialize_i64(*value),
        }
    }
}

fn record() -> impl Strategy<Value = Vec<(usize, i64)>> {
    // Distinct names in a random order, with values.
    (
        Just((0..NAMES.len()).collect::<Vec<_>>()).prop_shuffle(),
        0..=NAMES.len(),
        any::<i64>(),
    )
        .prop_map(|(names, count, value)| {
            names
                .into_iter()
                .take(count)
                .enumerate()
                .map(|(i, name)| (name, value.wrapping_add(i as i64)))
                .collect()
        })
}

fn shape() -> impl Strategy<Value = Shape> {
    let leaf = prop_oneof![
        record().prop_map(Shape::Struct),
        record().prop_map(Shape::Map),
        record().prop_map(Shape::StructVariant),
        any::<i64>().prop_map(Shape::Int),
        Just(Shape::None),
    ];
    leaf.prop_recursive(4, 24, 3, |inner| {
        prop_oneof![
            inner.clone().prop_map(|s| Shape::Some(Box::new(s))),
            inner.clone().prop_map(|s| Shape::Newtype(Box::new(s))),
            inner
                .clone()
                .prop_map(|s| Shape::NewtypeVariant(Box::new(s))),
            prop::collection::vec(inner.clone(), 0..3).prop_map(Shape::Seq),
            prop::collection::vec(inner.clone(), 0..3).prop_map(Shape::Tuple),
            prop::collection::vec(inner.clone(), 0..3).prop_map(Shape::TupleStruct),
            prop::collection::vec(inner, 0..3).prop_map(Shape::TupleVariant),
        ]
    })
}

fn chosen() -> impl Strategy<Value = Vec<bool>> {
    prop::collection::vec(any::<bool>(), OFFERED_ALL.len())
        .prop_filter("at least one field", |c| c.iter().any(|c| *c))
}

proptest! {
    #[test]
    fn any_shape_writes_only_chosen_offered_fields(shape in shape(), chosen in chosen()) {
        let list: Vec<&str> = OFFERED_ALL
            .iter()
            .zip(&chosen)
            .filter_map(|(name, c)| c.then_some(*name))
            .collect();
        let fields = Fields::parse(&list.join(","), OFFERED_ALL).unwrap();
        let all = |_: &str| true;
        let view = View { shape: &shape, keep: &all };
        let got = serde_json::to_value(fields.select(&view)).unwrap();
        let keep = |name: &str| list.contains(&name);
        let expected = serde_json::to_value(Model(View { shape: &shape, keep: &keep })).unwrap();
        prop_assert_eq!(&got, &expected, "{:?} with {:?}", shape, list);
        let text = got.to_string();
        prop_assert!(!text.contains("secret") && !text.contains("password"), "{}", text);
    }
}

/// A field list far longer than any list of the offered names (say one name repeated 100 000
/// times) is refused before it is read through, as `InvalidFields` documents.
#[test]
fn an_overlong_field_list_is_refused() {
    let long = "id,".repeat(100_000) + "id";
    assert!(
        matches!(
            Fields::parse(&long, OFFERED),
            Err(brisk_stream::Error::InvalidFields { .. })
        ),
        "a list of {} bytes was taken",
        long.len()
    );
    // Every offered name, repeated and spaced, is still a list.
    let fine = "id, name, id , name,".repeat(20) + "id";
    assert_eq!(
        Fields::parse(&fine, OFFERED)
            .unwrap()
            .names()
            .collect::<Vec<_>>(),
        ["id", "name"]
    );
}
