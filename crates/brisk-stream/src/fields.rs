//! Field selection (`?fields=id,name`): a validated list of top-level fields, applied while a
//! row is serialized, so no row is built twice.

use std::fmt;

use serde::{
    Serialize, Serializer,
    ser::{
        self, Impossible, SerializeMap, SerializeSeq, SerializeStruct, SerializeStructVariant,
        SerializeTuple, SerializeTupleStruct, SerializeTupleVariant,
    },
};

use crate::error::{Error, Result};

/// The most bytes of an unknown field's name kept in [`Error::UnknownField`].
const MAX_ECHO: usize = 64;
/// The longest field list read, unless twice the offered names (with commas) is longer.
const MAX_LIST: usize = 1024;

/// A client's choice of fields, checked against the fields an endpoint offers.
///
/// Applied with [`Fields::select`] (or an encoder's [`select`](crate::Encode::select)), it keeps
/// the chosen fields of each record in a row, in the order the type writes them. A record is a
/// struct, a string-keyed map (as `#[serde(flatten)]` writes structs) or an enum's struct
/// variant; it is found through whatever wraps it: `Option`, a newtype struct, an enum's newtype
/// variant, a sequence, tuple, tuple struct or tuple variant (each element is filtered). The
/// value of a chosen field is written whole (offering a field offers what is in it). A field
/// the endpoint does not offer is never written, whatever the row's shape; that includes an
/// internally or adjacently tagged enum's tag, which is written only when it is offered and
/// chosen. The list can only name offered fields, so its memory is bounded by the endpoint, not
/// by the client.
///
/// ```
/// use brisk_stream::Fields;
///
/// #[derive(serde::Serialize)]
/// struct Product { id: i64, name: String, price_cents: i64 }
///
/// const OFFERED: &[&str] = &["id", "name", "price_cents"];
/// let fields = Fields::parse("name,id", OFFERED)?;
/// let product = Product { id: 7, name: "Lamp".into(), price_cents: 1999 };
/// let json = serde_json::to_string(&fields.select(&product)).unwrap();
/// assert_eq!(json, r#"{"id":7,"name":"Lamp"}"#);
///
/// assert!(Fields::parse("id,password", OFFERED).is_err());
/// # Ok::<(), brisk_stream::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Fields {
    offered: &'static [&'static str],
    /// One flag per offered field.
    chosen: Vec<bool>,
}

impl Fields {
    /// Parses a comma-separated list (`"id,name"`; spaces around names are ignored) against the
    /// fields an endpoint `offered`. An unknown name is [`Error::UnknownField`]; an empty list or
    /// entry, or a list longer than 1 KiB (or than twice all offered names with their commas,
    /// if that is more), is [`Error::InvalidFields`]. Repeated names count once.
    pub fn parse(list: &str, offered: &'static [&'static str]) -> Result<Self> {
        if list.trim().is_empty() {
            return Err(Error::InvalidFields {
                reason: "no fields were named",
            });
        }
        let every_name: usize = offered.iter().map(|name| name.len() + 1).sum();
        if list.len() > MAX_LIST.max(2 * every_name) {
            // Outside input: refused before it is read through.
            return Err(Error::InvalidFields {
                reason: "the list is longer than a list of every field",
            });
        }
        let mut chosen = vec![false; offered.len()];
        for name in list.split(',').map(str::trim) {
            if name.is_empty() {
                return Err(Error::InvalidFields {
                    reason: "an entry is empty",
                });
            }
            match offered.iter().position(|offer| *offer == name) {
                Some(index) => chosen[index] = true,
                None => {
                    let mut end = name.len().min(MAX_ECHO);
                    while !name.is_char_boundary(end) {
                        end -= 1;
                    }
                    return Err(Error::UnknownField {
                        field: name[..end].to_owned(),
                    });
                }
            }
        }
        Ok(Self { offered, chosen })
    }

    /// Every field `offered` (what a request without a field list gets).
    pub fn all(offered: &'static [&'static str]) -> Self {
        Self {
            offered,
            chosen: vec![true; offered.len()],
        }
    }

    /// The chosen fields, in the order they were offered.
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.offered
            .iter()
            .zip(&self.chosen)
            .filter_map(|(name, chosen)| chosen.then_some(*name))
    }

    /// Whether `name` is chosen. A field the endpoint does not offer is never chosen, so a type
    /// with more fields than it offers does not leak them.
    pub fn contains(&self, name: &str) -> bool {
        self.offered
            .iter()
            .zip(&self.chosen)
            .any(|(offer, chosen)| *chosen && *offer == name)
    }

    /// A `SELECT` list for a table whose columns are named like the offered fields: the chosen
    /// ones by name, the others as `NULL AS name`, so the database neither reads nor sends
    /// them (give those fields `Option` types). Names that are not plain identifiers are
    /// quoted.
    ///
    /// ```
    /// use brisk_stream::Fields;
    ///
    /// let fields = Fields::parse("id", &["id", "description"])?;
    /// assert_eq!(fields.sql_columns(), "id, NULL AS description");
    /// # Ok::<(), brisk_stream::Error>(())
    /// ```
    pub fn sql_columns(&self) -> String {
        let mut list = String::new();
        for (name, chosen) in self.offered.iter().zip(&self.chosen) {
            if !list.is_empty() {
                list.push_str(", ");
            }
            let column = if crate::keyset::is_plain_identifier(name) {
                (*name).to_owned()
            } else {
                format!("\"{}\"", name.replace('"', "\"\""))
            };
            if !*chosen {
                list.push_str("NULL AS ");
            }
            list.push_str(&column);
        }
        list
    }

    /// `row`, serialized with only the chosen fields.
    pub fn select<'a, T: Serialize + ?Sized>(&'a self, row: &'a T) -> Selected<'a, T> {
        Selected { row, fields: self }
    }
}

impl fmt::Debug for Fields {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}

/// A row serialized with only some of its fields; from [`Fields::select`].
#[derive(Debug)]
pub struct Selected<'a, T: ?Sized> {
    row: &'a T,
    fields: &'a Fields,
}

impl<T: Serialize + ?Sized> Serialize for Selected<'_, T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.row.serialize(Filter {
            inner: serializer,
            fields: self.fields,
        })
    }
}

/// A serializer that looks for records through what wraps them and passes a record's (struct's,
/// map's or struct variant's) entries on only when they are chosen; a value that can hold no
/// record (a number, a string, a unit variant) is passed on as it is.
struct Filter<'a, S> {
    inner: S,
    fields: &'a Fields,
}

macro_rules! forward {
    ($($method:ident($($arg:ident: $ty:ty),*) -> $ret:ty;)*) => {
        $(fn $method(self, $($arg: $ty),*) -> Result<$ret, S::Error> {
            self.inner.$method($($arg),*)
        })*
    };
}

impl<'a, S: Serializer> Serializer for Filter<'a, S> {
    type Ok = S::Ok;
    type Error = S::Error;
    type SerializeSeq = Each<'a, S::SerializeSeq>;
    type SerializeTuple = Each<'a, S::SerializeTuple>;
    type SerializeTupleStruct = Each<'a, S::SerializeTupleStruct>;
    type SerializeTupleVariant = Each<'a, S::SerializeTupleVariant>;
    type SerializeMap = FilterMap<'a, S::SerializeMap>;
    type SerializeStruct = FilterStruct<'a, S::SerializeStruct>;
    type SerializeStructVariant = FilterStruct<'a, S::SerializeStructVariant>;

    forward! {
        serialize_bool(v: bool) -> S::Ok;
        serialize_i8(v: i8) -> S::Ok;
        serialize_i16(v: i16) -> S::Ok;
        serialize_i32(v: i32) -> S::Ok;
        serialize_i64(v: i64) -> S::Ok;
        serialize_i128(v: i128) -> S::Ok;
        serialize_u8(v: u8) -> S::Ok;
        serialize_u16(v: u16) -> S::Ok;
        serialize_u32(v: u32) -> S::Ok;
        serialize_u64(v: u64) -> S::Ok;
        serialize_u128(v: u128) -> S::Ok;
        serialize_f32(v: f32) -> S::Ok;
        serialize_f64(v: f64) -> S::Ok;
        serialize_char(v: char) -> S::Ok;
        serialize_str(v: &str) -> S::Ok;
        serialize_bytes(v: &[u8]) -> S::Ok;
        serialize_none() -> S::Ok;
        serialize_unit() -> S::Ok;
        serialize_unit_struct(name: &'static str) -> S::Ok;
        serialize_unit_variant(name: &'static str, index: u32, variant: &'static str) -> S::Ok;
    }

    fn serialize_seq(self, len: Option<usize>) -> Result<Self::SerializeSeq, S::Error> {
        Ok(Each {
            inner: self.inner.serialize_seq(len)?,
            fields: self.fields,
        })
    }

    fn serialize_tuple(self, len: usize) -> Result<Self::SerializeTuple, S::Error> {
        Ok(Each {
            inner: self.inner.serialize_tuple(len)?,
            fields: self.fields,
        })
    }

    fn serialize_tuple_struct(
        self,
        name: &'static str,
        len: usize,
    ) -> Result<Self::SerializeTupleStruct, S::Error> {
        Ok(Each {
            inner: self.inner.serialize_tuple_struct(name, len)?,
            fields: self.fields,
        })
    }

    fn serialize_tuple_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self::SerializeTupleVariant, S::Error> {
        Ok(Each {
            inner: self
                .inner
                .serialize_tuple_variant(name, index, variant, len)?,
            fields: self.fields,
        })
    }

    fn serialize_struct_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self::SerializeStructVariant, S::Error> {
        let chosen = self.fields.chosen.iter().filter(|c| **c).count();
        Ok(FilterStruct {
            inner: self
                .inner
                .serialize_struct_variant(name, index, variant, len.min(chosen))?,
            fields: self.fields,
        })
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<S::Ok, S::Error> {
        // `Option<Row>` rows: the row inside is filtered.
        value.serialize(self)
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<S::Ok, S::Error> {
        value.serialize(self)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<S::Ok, S::Error> {
        // `Row::Variant(record)`: the variant's tag, then the record inside, filtered.
        let selected = Selected {
            row: value,
            fields: self.fields,
        };
        self.inner
            .serialize_newtype_variant(name, index, variant, &selected)
    }

    fn serialize_map(self, len: Option<usize>) -> Result<Self::SerializeMap, S::Error> {
        // The chosen entries are not known before they are seen; an unknown length is allowed.
        let _ = len;
        Ok(FilterMap {
            inner: self.inner.serialize_map(None)?,
            fields: self.fields,
            keep_value: false,
        })
    }

    fn serialize_struct(
        self,
        name: &'static str,
        len: usize,
    ) -> Result<Self::SerializeStruct, S::Error> {
        let chosen = self.fields.chosen.iter().filter(|c| **c).count();
        Ok(FilterStruct {
            inner: self.inner.serialize_struct(name, len.min(chosen))?,
            fields: self.fields,
        })
    }

    fn is_human_readable(&self) -> bool {
        self.inner.is_human_readable()
    }
}

/// A struct's fields, passed on when chosen.
struct FilterStruct<'a, S> {
    inner: S,
    fields: &'a Fields,
}

impl<S: SerializeStruct> SerializeStruct for FilterStruct<'_, S> {
    type Ok = S::Ok;
    type Error = S::Error;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), S::Error> {
        if self.fields.contains(key) {
            self.inner.serialize_field(key, value)
        } else {
            self.inner.skip_field(key)
        }
    }

    fn skip_field(&mut self, key: &'static str) -> Result<(), S::Error> {
        self.inner.skip_field(key)
    }

    fn end(self) -> Result<S::Ok, S::Error> {
        self.inner.end()
    }
}

impl<S: SerializeStructVariant> SerializeStructVariant for FilterStruct<'_, S> {
    type Ok = S::Ok;
    type Error = S::Error;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), S::Error> {
        if self.fields.contains(key) {
            self.inner.serialize_field(key, value)
        } else {
            self.inner.skip_field(key)
        }
    }

    fn skip_field(&mut self, key: &'static str) -> Result<(), S::Error> {
        self.inner.skip_field(key)
    }

    fn end(self) -> Result<S::Ok, S::Error> {
        self.inner.end()
    }
}

/// The elements of a sequence, tuple, tuple struct or tuple variant, each filtered as a row.
struct Each<'a, S> {
    inner: S,
    fields: &'a Fields,
}

impl<S: SerializeSeq> SerializeSeq for Each<'_, S> {
    type Ok = S::Ok;
    type Error = S::Error;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), S::Error> {
        let selected = Selected {
            row: value,
            fields: self.fields,
        };
        self.inner.serialize_element(&selected)
    }

    fn end(self) -> Result<S::Ok, S::Error> {
        self.inner.end()
    }
}

impl<S: SerializeTuple> SerializeTuple for Each<'_, S> {
    type Ok = S::Ok;
    type Error = S::Error;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), S::Error> {
        let selected = Selected {
            row: value,
            fields: self.fields,
        };
        self.inner.serialize_element(&selected)
    }

    fn end(self) -> Result<S::Ok, S::Error> {
        self.inner.end()
    }
}

impl<S: SerializeTupleStruct> SerializeTupleStruct for Each<'_, S> {
    type Ok = S::Ok;
    type Error = S::Error;

    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), S::Error> {
        let selected = Selected {
            row: value,
            fields: self.fields,
        };
        self.inner.serialize_field(&selected)
    }

    fn end(self) -> Result<S::Ok, S::Error> {
        self.inner.end()
    }
}

impl<S: SerializeTupleVariant> SerializeTupleVariant for Each<'_, S> {
    type Ok = S::Ok;
    type Error = S::Error;

    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), S::Error> {
        let selected = Selected {
            row: value,
            fields: self.fields,
        };
        self.inner.serialize_field(&selected)
    }

    fn end(self) -> Result<S::Ok, S::Error> {
        self.inner.end()
    }
}

/// A map's entries (as `#[serde(flatten)]` writes structs), passed on when their key is a
/// chosen name.
struct FilterMap<'a, S> {
    inner: S,
    fields: &'a Fields,
    keep_value: bool,
}

impl<S: SerializeMap> SerializeMap for FilterMap<'_, S> {
    type Ok = S::Ok;
    type Error = S::Error;

    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), S::Error> {
        self.keep_value = key.serialize(KeyMatch(self.fields)).unwrap_or(false);
        if self.keep_value {
            self.inner.serialize_key(key)
        } else {
            Ok(())
        }
    }

    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), S::Error> {
        if self.keep_value {
            self.inner.serialize_value(value)
        } else {
            Ok(())
        }
    }

    fn end(self) -> Result<S::Ok, S::Error> {
        self.inner.end()
    }
}

/// Whether a map key is a chosen field name; a key that is not a string never is.
struct KeyMatch<'a>(&'a Fields);

#[derive(Debug)]
struct NotAName;

impl fmt::Display for NotAName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not a field name")
    }
}

impl std::error::Error for NotAName {}

impl ser::Error for NotAName {
    fn custom<T: fmt::Display>(_: T) -> Self {
        Self
    }
}

macro_rules! not_a_name {
    ($($method:ident($($ty:ty),*) -> $ret:ty;)*) => {
        $(fn $method(self, $(_: $ty),*) -> Result<$ret, NotAName> {
            Err(NotAName)
        })*
    };
}

impl Serializer for KeyMatch<'_> {
    type Ok = bool;
    type Error = NotAName;
    type SerializeSeq = Impossible<bool, NotAName>;
    type SerializeTuple = Impossible<bool, NotAName>;
    type SerializeTupleStruct = Impossible<bool, NotAName>;
    type SerializeTupleVariant = Impossible<bool, NotAName>;
    type SerializeMap = Impossible<bool, NotAName>;
    type SerializeStruct = Impossible<bool, NotAName>;
    type SerializeStructVariant = Impossible<bool, NotAName>;

    fn serialize_str(self, name: &str) -> Result<bool, NotAName> {
        Ok(self.0.contains(name))
    }

    not_a_name! {
        serialize_bool(bool) -> bool;
        serialize_i8(i8) -> bool;
        serialize_i16(i16) -> bool;
        serialize_i32(i32) -> bool;
        serialize_i64(i64) -> bool;
        serialize_u8(u8) -> bool;
        serialize_u16(u16) -> bool;
        serialize_u32(u32) -> bool;
        serialize_u64(u64) -> bool;
        serialize_f32(f32) -> bool;
        serialize_f64(f64) -> bool;
        serialize_char(char) -> bool;
        serialize_bytes(&[u8]) -> bool;
        serialize_none() -> bool;
        serialize_unit() -> bool;
        serialize_unit_struct(&'static str) -> bool;
        serialize_unit_variant(&'static str, u32, &'static str) -> bool;
        serialize_seq(Option<usize>) -> Self::SerializeSeq;
        serialize_tuple(usize) -> Self::SerializeTuple;
        serialize_tuple_struct(&'static str, usize) -> Self::SerializeTupleStruct;
        serialize_tuple_variant(&'static str, u32, &'static str, usize) -> Self::SerializeTupleVariant;
        serialize_map(Option<usize>) -> Self::SerializeMap;
        serialize_struct(&'static str, usize) -> Self::SerializeStruct;
        serialize_struct_variant(&'static str, u32, &'static str, usize) -> Self::SerializeStructVariant;
    }

    fn serialize_some<T: Serialize + ?Sized>(self, _: &T) -> Result<bool, NotAName> {
        Err(NotAName)
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: &T,
    ) -> Result<bool, NotAName> {
        Err(NotAName)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<bool, NotAName> {
        Err(NotAName)
    }
}
