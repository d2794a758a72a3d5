//! Spreadsheet formula neutralising for CSV cells (OWASP "CSV injection"): a text cell a
//! spreadsheet would run as a formula gets a `'` in front, which makes it plain text.

use serde::{
    Serialize, Serializer,
    ser::{
        SerializeMap, SerializeSeq, SerializeStruct, SerializeStructVariant, SerializeTuple,
        SerializeTupleStruct, SerializeTupleVariant,
    },
};

/// Whether a text cell starts as a formula would: with `=`, `+`, `-` or `@` (OWASP's list),
/// also after blanks (any whitespace, NUL), which a spreadsheet that trims cells drops first,
/// unless what follows the blanks is a plain decimal number (such as a `Decimal` amount
/// written as text, `-5.20` or ` -5.20`), which a spreadsheet reads as a number and never
/// runs; or with NUL, tab or carriage return (OWASP's list, ASVS 5.0 V1.2.10) anywhere among
/// its leading blanks, whatever follows.
pub(crate) fn needs_neutralising(cell: &[u8]) -> bool {
    let (blanks, rest) = cell.split_at(leading_blanks(cell));
    blanks.iter().any(|b| matches!(b, b'\0' | b'\t' | b'\r'))
        || (matches!(rest.first(), Some(b'=' | b'+' | b'-' | b'@')) && !is_plain_number(rest))
}

/// The length of `cell`'s leading blanks: NUL and whitespace (ASCII, or any other Unicode
/// whitespace character encoded as UTF-8, such as a no-break space).
fn leading_blanks(cell: &[u8]) -> usize {
    let mut at = 0;
    while let Some(&byte) = cell.get(at) {
        if byte < 0x80 {
            if byte == 0 || char::from(byte).is_whitespace() {
                at += 1;
                continue;
            }
            break;
        }
        let width = match byte {
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF7 => 4,
            _ => break,
        };
        let blank = cell
            .get(at..at + width)
            .and_then(|bytes| std::str::from_utf8(bytes).ok())
            .and_then(|text| text.chars().next())
            .is_some_and(char::is_whitespace);
        if !blank {
            break;
        }
        at += width;
    }
    at
}

/// `[+-]?(digits[.digits?] | .digits)([eE][+-]?digits)?`: a number and nothing else (not
/// `inf`, `NaN` or hexadecimal, which Rust's parsers take but a spreadsheet does not).
fn is_plain_number(cell: &[u8]) -> bool {
    let digits = |rest: &[u8]| rest.iter().take_while(|b| b.is_ascii_digit()).count();
    let mut rest = cell;
    if let [b'+' | b'-', tail @ ..] = rest {
        rest = tail;
    }
    let whole = digits(rest);
    rest = &rest[whole..];
    let mut fraction = 0;
    if let [b'.', tail @ ..] = rest {
        fraction = digits(tail);
        rest = &tail[fraction..];
    }
    if whole == 0 && fraction == 0 {
        return false;
    }
    if let [b'e' | b'E', tail @ ..] = rest {
        rest = tail;
        if let [b'+' | b'-', tail @ ..] = rest {
            rest = tail;
        }
        let exponent = digits(rest);
        if exponent == 0 {
            return false;
        }
        rest = &rest[exponent..];
    }
    rest.is_empty()
}

/// A row whose text cells are neutralised as it is serialized.
pub(crate) struct Neutralised<'a, T: ?Sized>(pub(crate) &'a T);

impl<T: Serialize + ?Sized> Serialize for Neutralised<'_, T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(Cells(serializer))
    }
}

/// A serializer that passes everything on, text with a `'` in front where it would start a
/// formula; numbers, booleans and field names as they are.
struct Cells<S>(S);

macro_rules! forward {
    ($($method:ident($($arg:ident: $ty:ty),*) -> $ret:ty;)*) => {
        $(fn $method(self, $($arg: $ty),*) -> Result<$ret, S::Error> {
            self.0.$method($($arg),*)
        })*
    };
}

impl<S: Serializer> Serializer for Cells<S> {
    type Ok = S::Ok;
    type Error = S::Error;
    type SerializeSeq = Cells<S::SerializeSeq>;
    type SerializeTuple = Cells<S::SerializeTuple>;
    type SerializeTupleStruct = Cells<S::SerializeTupleStruct>;
    type SerializeTupleVariant = Cells<S::SerializeTupleVariant>;
    type SerializeMap = Cells<S::SerializeMap>;
    type SerializeStruct = Cells<S::SerializeStruct>;
    type SerializeStructVariant = Cells<S::SerializeStructVariant>;

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
        serialize_none() -> S::Ok;
        serialize_unit() -> S::Ok;
        serialize_unit_struct(name: &'static str) -> S::Ok;
        serialize_unit_variant(name: &'static str, index: u32, variant: &'static str) -> S::Ok;
    }

    fn serialize_str(self, v: &str) -> Result<S::Ok, S::Error> {
        if needs_neutralising(v.as_bytes()) {
            self.0.serialize_str(&format!("'{v}"))
        } else {
            self.0.serialize_str(v)
        }
    }

    fn serialize_char(self, v: char) -> Result<S::Ok, S::Error> {
        let mut buf = [0; 4];
        self.serialize_str(v.encode_utf8(&mut buf))
    }

    fn serialize_bytes(self, v: &[u8]) -> Result<S::Ok, S::Error> {
        if needs_neutralising(v) {
            let mut cell = Vec::with_capacity(v.len() + 1);
            cell.push(b'\'');
            cell.extend_from_slice(v);
            self.0.serialize_bytes(&cell)
        } else {
            self.0.serialize_bytes(v)
        }
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<S::Ok, S::Error> {
        self.0.serialize_some(&Neutralised(value))
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        value: &T,
    ) -> Result<S::Ok, S::Error> {
        self.0.serialize_newtype_struct(name, &Neutralised(value))
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<S::Ok, S::Error> {
        self.0
            .serialize_newtype_variant(name, index, variant, &Neutralised(value))
    }

    fn serialize_seq(self, len: Option<usize>) -> Result<Self::SerializeSeq, S::Error> {
        self.0.serialize_seq(len).map(Cells)
    }

    fn serialize_tuple(self, len: usize) -> Result<Self::SerializeTuple, S::Error> {
        self.0.serialize_tuple(len).map(Cells)
    }

    fn serialize_tuple_struct(
        self,
        name: &'static str,
        len: usize,
    ) -> Result<Self::SerializeTupleStruct, S::Error> {
        self.0.serialize_tuple_struct(name, len).map(Cells)
    }

    fn serialize_tuple_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self::SerializeTupleVariant, S::Error> {
        self.0
            .serialize_tuple_variant(name, index, variant, len)
            .map(Cells)
    }

    fn serialize_map(self, len: Option<usize>) -> Result<Self::SerializeMap, S::Error> {
        self.0.serialize_map(len).map(Cells)
    }

    fn serialize_struct(
        self,
        name: &'static str,
        len: usize,
    ) -> Result<Self::SerializeStruct, S::Error> {
        self.0.serialize_struct(name, len).map(Cells)
    }

    fn serialize_struct_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self::SerializeStructVariant, S::Error> {
        self.0
            .serialize_struct_variant(name, index, variant, len)
            .map(Cells)
    }

    fn is_human_readable(&self) -> bool {
        self.0.is_human_readable()
    }
}

/// The compound serializers: each value (and map key) neutralised, field names as they are.
macro_rules! compound {
    ($($trait:ident::$method:ident;)*) => {
        $(impl<S: $trait> $trait for Cells<S> {
            type Ok = S::Ok;
            type Error = S::Error;

            fn $method<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), S::Error> {
                self.0.$method(&Neutralised(value))
            }

            fn end(self) -> Result<S::Ok, S::Error> {
                self.0.end()
            }
        })*
    };
}

compound! {
    SerializeSeq::serialize_element;
    SerializeTuple::serialize_element;
    SerializeTupleStruct::serialize_field;
    SerializeTupleVariant::serialize_field;
}

impl<S: SerializeMap> SerializeMap for Cells<S> {
    type Ok = S::Ok;
    type Error = S::Error;

    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), S::Error> {
        self.0.serialize_key(&Neutralised(key))
    }

    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), S::Error> {
        self.0.serialize_value(&Neutralised(value))
    }

    fn end(self) -> Result<S::Ok, S::Error> {
        self.0.end()
    }
}

impl<S: SerializeStruct> SerializeStruct for Cells<S> {
    type Ok = S::Ok;
    type Error = S::Error;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), S::Error> {
        self.0.serialize_field(key, &Neutralised(value))
    }

    fn skip_field(&mut self, key: &'static str) -> Result<(), S::Error> {
        self.0.skip_field(key)
    }

    fn end(self) -> Result<S::Ok, S::Error> {
        self.0.end()
    }
}

impl<S: SerializeStructVariant> SerializeStructVariant for Cells<S> {
    type Ok = S::Ok;
    type Error = S::Error;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), S::Error> {
        self.0.serialize_field(key, &Neutralised(value))
    }

    fn skip_field(&mut self, key: &'static str) -> Result<(), S::Error> {
        self.0.skip_field(key)
    }

    fn end(self) -> Result<S::Ok, S::Error> {
        self.0.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formulas_are_told_from_numbers() {
        for cell in [
            "=1+1",
            "+1+1",
            "-1+1",
            "@SUM(A1)",
            "\t=1",
            "\r=1",
            "-",
            "+",
            "-.",
            "-e5",
            "-1e",
            "-1e+",
            "-inf",
            "-NaN",
            "-0x10",
            "-1 ",
            "- 1",
            "+1,5",
            "-1.2.3",
            // Blanks first: a spreadsheet that trims them runs what follows.
            " =1",
            "   +1+1",
            "\t\t-x",
            " \t@SUM(A1)",
            "\n=1",
            "\u{a0}=1",
            "\u{3000}-1+1",
            " - 1",
            // NUL first (OWASP ASVS 5.0 V1.2.10), alone or before blanks; tab or CR anywhere
            // in the blanks, whatever follows.
            "\0",
            "\0=1",
            "\0abc",
            " \0abc",
            "\t-5",
            " \r5",
            "\tabc",
        ] {
            assert!(needs_neutralising(cell.as_bytes()), "{cell:?}");
        }
        for cell in [
            "",
            "a=1",
            " a=1",
            " ",
            "\n",
            "5",
            "-5",
            "+5",
            "-5.20",
            "-.5",
            "-5.",
            "-1e5",
            "+1E-5",
            "'=1",
            "a\0",
            " -5",
            "  -5.20",
            "\u{a0}+44",
        ] {
            assert!(!needs_neutralising(cell.as_bytes()), "{cell:?}");
        }
    }
}
