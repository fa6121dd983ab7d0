//! A linear pre-check of Avro datums, run before apache-avro decodes them.
//!
//! apache-avro 0.21 trusts the datum: it recurses once per nesting level with no limit (with a
//! recursive writer schema, one byte per level is enough to overflow the stack and abort the
//! process), and it reserves memory for whatever length a datum declares before reading it
//! (four bytes claiming an array of 16 million items reserve about a gigabyte of values).
//! [`DatumShape::check`] walks the datum against the same writer schema without building
//! anything, in time linear in its bytes, and refuses:
//!
//! - nesting (records, arrays, maps) deeper than [`MAX_DEPTH`];
//! - a string, bytes or fixed value, or an array or map block, claiming more than the bytes
//!   left in the datum (every item takes at least one byte; items of zero bytes, like `null`,
//!   are allowed up to [`MAX_EMPTY_ITEMS`] per datum);
//! - anything apache-avro would refuse too (bad varint, union branch out of range, bytes
//!   missing at the end).
//!
//! A datum that passes decodes with at most a constant times its own size in memory and with
//! bounded recursion. The check is stricter than apache-avro in one respect: a datum cut short
//! is always refused, where apache-avro reads some truncated fields (booleans, strings, union
//! indexes at the very end) as nulls.

use std::collections::HashMap;

use apache_avro::Schema as AvroSchema;
use apache_avro::schema::{Name, Namespace};

/// Deepest nesting of records, arrays and maps a datum may have. Real records nest a handful
/// of levels. apache-avro's decoder is stack-hungry: measured in a dev build, one call of its
/// `decode_internal` takes about 19 KB of stack, and a level of a recursive schema costs three
/// calls (record, union, reference), so 45 levels overflowed a 2 MiB thread stack. Sixteen
/// levels stay under 1 MiB, leaving room for the caller and for the conversion to JSON.
pub(crate) const MAX_DEPTH: usize = 16;

/// Most zero-byte items (`null`, empty records, `fixed` of size 0) one datum may declare
/// beyond its byte count: they cost nothing to encode, so without a cap a few bytes could
/// declare billions of them.
pub(crate) const MAX_EMPTY_ITEMS: usize = 4096;

/// Longest varint Avro writes (a 64-bit zigzag value in 7-bit groups).
const MAX_VARINT_BYTES: usize = 10;

/// Why a datum was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The datum ends before a value it declares (or declares more bytes than it has).
    Truncated(String),
    /// Nesting deeper than [`MAX_DEPTH`].
    TooDeep,
    /// Malformed: bad varint, negative length, union branch out of range, unknown type name.
    Invalid(String),
}

/// How a schema node is encoded, with named types shared so that recursive schemas are finite.
#[derive(Debug, Clone)]
enum Node {
    Null,
    Boolean,
    /// int, long, enum index and the logical types stored as them.
    Varint,
    /// float, double, fixed, duration: exactly this many bytes.
    Fixed(usize),
    /// string, bytes, uuid, big-decimal, decimal over bytes: a length, then that many bytes.
    Bytes,
    Array(usize),
    Map(usize),
    Union(Vec<usize>),
    Record(Vec<usize>),
    /// A reference by name, before it is resolved.
    Ref(Name),
    /// A resolved reference: the value is the named node's (no bytes of its own).
    Link(usize),
    /// A reference to a name the schema does not define.
    Missing(String),
}

/// A writer schema compiled for [`DatumShape::check`].
#[derive(Debug, Clone)]
pub(crate) struct DatumShape {
    nodes: Vec<Node>,
    /// Whether a node can be encoded in zero bytes.
    empty: Vec<bool>,
}

impl DatumShape {
    /// Compiles `schema` (linear in its size).
    pub(crate) fn new(schema: &AvroSchema) -> Self {
        let mut compiler = Compiler::default();
        compiler.compile(schema, &None);
        let Compiler { mut nodes, names } = compiler;
        for node in &mut nodes {
            if let Node::Ref(name) = node {
                *node = match names.get(name) {
                    Some(&target) => Node::Link(target),
                    None => Node::Missing(name.fullname(None)),
                };
            }
        }
        let empty = empty_nodes(&nodes);
        DatumShape { nodes, empty }
    }

    /// Checks that `datum` is one complete value of the schema within the limits. Bytes left
    /// over after the value are not checked here.
    pub(crate) fn check(&self, datum: &[u8]) -> Result<(), Refusal> {
        let mut walk = Walk {
            shape: self,
            input: datum,
            empty_budget: MAX_EMPTY_ITEMS,
        };
        walk.value(0, 0)
    }
}

#[derive(Default)]
struct Compiler {
    nodes: Vec<Node>,
    names: HashMap<Name, usize>,
}

impl Compiler {
    /// Appends the node of `schema` and its children; returns its index.
    fn compile(&mut self, schema: &AvroSchema, namespace: &Namespace) -> usize {
        let at = self.nodes.len();
        self.nodes.push(Node::Null);
        let node = match schema {
            AvroSchema::Null => Node::Null,
            AvroSchema::Boolean => Node::Boolean,
            AvroSchema::Int
            | AvroSchema::Long
            | AvroSchema::Date
            | AvroSchema::TimeMillis
            | AvroSchema::TimeMicros
            | AvroSchema::TimestampMillis
            | AvroSchema::TimestampMicros
            | AvroSchema::TimestampNanos
            | AvroSchema::LocalTimestampMillis
            | AvroSchema::LocalTimestampMicros
            | AvroSchema::LocalTimestampNanos
            | AvroSchema::Enum(_) => Node::Varint,
            AvroSchema::Float => Node::Fixed(4),
            AvroSchema::Double => Node::Fixed(8),
            AvroSchema::Duration => Node::Fixed(12),
            AvroSchema::Fixed(fixed) => {
                self.name(&fixed.name, namespace, at);
                Node::Fixed(fixed.size)
            }
            AvroSchema::Bytes | AvroSchema::String | AvroSchema::Uuid | AvroSchema::BigDecimal => {
                Node::Bytes
            }
            AvroSchema::Decimal(decimal) => Node::Link(self.compile(&decimal.inner, namespace)),
            AvroSchema::Array(array) => Node::Array(self.compile(&array.items, namespace)),
            AvroSchema::Map(map) => Node::Map(self.compile(&map.types, namespace)),
            AvroSchema::Union(union) => Node::Union(
                union
                    .variants()
                    .iter()
                    .map(|v| self.compile(v, namespace))
                    .collect(),
            ),
            AvroSchema::Record(record) => {
                // Named before its fields, so that a field can refer back to it.
                let full = self.name(&record.name, namespace, at);
                let fields = record
                    .fields
                    .iter()
                    .map(|f| self.compile(&f.schema, &full.namespace))
                    .collect();
                Node::Record(fields)
            }
            AvroSchema::Ref { name } => Node::Ref(name.fully_qualified_name(namespace)),
        };
        // Enum symbols are named types too; their encoding is a plain varint.
        if let AvroSchema::Enum(e) = schema {
            self.name(&e.name, namespace, at);
        }
        self.nodes[at] = node;
        at
    }

    fn name(&mut self, name: &Name, namespace: &Namespace, at: usize) -> Name {
        let full = name.fully_qualified_name(namespace);
        self.names.entry(full.clone()).or_insert(at);
        full
    }
}

/// Which nodes encode in zero bytes: a least fixpoint (a record is empty when all its fields
/// are; a record that contains itself directly is not).
fn empty_nodes(nodes: &[Node]) -> Vec<bool> {
    let mut empty: Vec<bool> = nodes
        .iter()
        .map(|n| matches!(n, Node::Null | Node::Fixed(0)))
        .collect();
    loop {
        let mut changed = false;
        for (i, node) in nodes.iter().enumerate() {
            if empty[i] {
                continue;
            }
            let now = match node {
                Node::Record(fields) => fields.iter().all(|f| empty[*f]),
                Node::Link(target) => empty[*target],
                _ => false,
            };
            if now {
                empty[i] = true;
                changed = true;
            }
        }
        if !changed {
            return empty;
        }
    }
}

struct Walk<'a> {
    shape: &'a DatumShape,
    input: &'a [u8],
    empty_budget: usize,
}

impl Walk<'_> {
    fn value(&mut self, node: usize, depth: usize) -> Result<(), Refusal> {
        match &self.shape.nodes[node] {
            Node::Null => Ok(()),
            Node::Boolean => self.take(1, "a boolean").map(|_| ()),
            Node::Varint => self.varint().map(|_| ()),
            Node::Fixed(n) => self.take(*n, "a fixed-size value").map(|_| ()),
            Node::Bytes => {
                let len = self.length("a string or bytes value")?;
                self.take(len, "a string or bytes value").map(|_| ())
            }
            Node::Union(variants) => {
                let index = self.varint()?;
                let variant = usize::try_from(index)
                    .ok()
                    .and_then(|i| variants.get(i))
                    .ok_or_else(|| {
                        Refusal::Invalid(format!(
                            "union branch {index} of {} does not exist",
                            variants.len()
                        ))
                    })?;
                self.value(*variant, depth)
            }
            Node::Record(fields) => {
                let depth = deeper(depth)?;
                for field in fields {
                    self.value(*field, depth)?;
                }
                Ok(())
            }
            Node::Array(item) => {
                let depth = deeper(depth)?;
                self.blocks(*item, false, depth)
            }
            Node::Map(value) => {
                let depth = deeper(depth)?;
                self.blocks(*value, true, depth)
            }
            Node::Link(target) => self.value(*target, depth),
            Node::Ref(name) => Err(Refusal::Invalid(format!(
                "type `{}` is not defined",
                name.fullname(None)
            ))),
            Node::Missing(name) => Err(Refusal::Invalid(format!("type `{name}` is not defined"))),
        }
    }

    /// The blocks of an array (or map, whose items are a string key and a value).
    fn blocks(&mut self, item: usize, keyed: bool, depth: usize) -> Result<(), Refusal> {
        let what = if keyed { "map" } else { "array" };
        loop {
            let count = self.varint()?;
            if count == 0 {
                return Ok(());
            }
            if count < 0 {
                // A negative count is followed by the block's size in bytes.
                let size = self.varint()?;
                if size < 0 {
                    return Err(Refusal::Invalid(format!("{what} block of {size} bytes")));
                }
            }
            let count = count.unsigned_abs();
            let left = self.input.len() as u64;
            if count > left {
                let empty = !keyed && self.shape.empty[item];
                if !empty || count > self.empty_budget as u64 {
                    return Err(Refusal::Truncated(format!(
                        "an {what} block declares {count} items but only {left} bytes are left"
                    )));
                }
                self.empty_budget -= count as usize;
            }
            for _ in 0..count {
                if keyed {
                    let len = self.length("a map key")?;
                    self.take(len, "a map key")?;
                }
                self.value(item, depth)?;
            }
        }
    }

    /// A zigzag varint, as apache-avro reads it.
    fn varint(&mut self) -> Result<i64, Refusal> {
        let mut raw: u64 = 0;
        for i in 0..MAX_VARINT_BYTES {
            let Some((&byte, rest)) = self.input.split_first() else {
                return Err(Refusal::Truncated("the datum ends inside a number".into()));
            };
            self.input = rest;
            raw |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(((raw >> 1) as i64) ^ -((raw & 1) as i64));
            }
        }
        Err(Refusal::Invalid("a number is longer than 10 bytes".into()))
    }

    /// A length: a varint that must not be negative.
    fn length(&mut self, what: &str) -> Result<usize, Refusal> {
        let len = self.varint()?;
        usize::try_from(len).map_err(|_| Refusal::Invalid(format!("{what} of length {len}")))
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&[u8], Refusal> {
        if n > self.input.len() {
            return Err(Refusal::Truncated(format!(
                "{what} declares {n} bytes but only {} are left",
                self.input.len()
            )));
        }
        let (taken, rest) = self.input.split_at(n);
        self.input = rest;
        Ok(taken)
    }
}

fn deeper(depth: usize) -> Result<usize, Refusal> {
    if depth >= MAX_DEPTH {
        Err(Refusal::TooDeep)
    } else {
        Ok(depth + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use apache_avro::types::Value;

    fn schema(text: &str) -> AvroSchema {
        AvroSchema::parse_str(text).expect("valid schema")
    }

    /// A zigzag varint.
    fn varint(v: i64) -> Vec<u8> {
        let mut z = ((v << 1) ^ (v >> 63)) as u64;
        let mut out = Vec::new();
        loop {
            let byte = (z & 0x7f) as u8;
            z >>= 7;
            if z == 0 {
                out.push(byte);
                return out;
            }
            out.push(byte | 0x80);
        }
    }

    const LIST: &str = r#"{"type": "record", "name": "Node", "namespace": "t", "fields": [
        {"name": "value", "type": "long"},
        {"name": "next", "type": ["null", "Node"]}
    ]}"#;

    #[test]
    fn what_apache_avro_writes_passes() {
        let text = r#"{"type": "record", "name": "Top", "namespace": "a.b", "fields": [
            {"name": "s", "type": "string"},
            {"name": "b", "type": "boolean"},
            {"name": "d", "type": "double"},
            {"name": "f", "type": {"type": "fixed", "name": "F4", "size": 4}},
            {"name": "f2", "type": "F4"},
            {"name": "e", "type": {"type": "enum", "name": "E", "symbols": ["x", "y"]}},
            {"name": "dec", "type": {"type": "bytes", "logicalType": "decimal", "precision": 9, "scale": 2}},
            {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-millis"}},
            {"name": "tags", "type": {"type": "array", "items": "string"}},
            {"name": "nulls", "type": {"type": "array", "items": "null"}},
            {"name": "m", "type": {"type": "map", "values": ["null", "int"]}},
            {"name": "inner", "type": {"type": "record", "name": "Inner", "namespace": "c", "fields": [
                {"name": "x", "type": "int"}
            ]}},
            {"name": "again", "type": "c.Inner"},
            {"name": "list", "type": ["null", LIST]},
            {"name": "list2", "type": ["null", "t.Node"]}
        ]}"#
        .replace("LIST", LIST);
        let node = schema(LIST);
        let top = schema(&text);
        let list = |values: &[i64]| {
            values
                .iter()
                .rev()
                .fold(Value::Union(0, Box::new(Value::Null)), |next, v| {
                    Value::Union(
                        1,
                        Box::new(Value::Record(vec![
                            ("value".into(), Value::Long(*v)),
                            ("next".into(), next),
                        ])),
                    )
                })
        };
        let value = Value::Record(vec![
            ("s".into(), Value::String("héllo".into())),
            ("b".into(), Value::Boolean(true)),
            ("d".into(), Value::Double(1.5)),
            ("f".into(), Value::Fixed(4, vec![1, 2, 3, 4])),
            ("f2".into(), Value::Fixed(4, vec![0; 4])),
            ("e".into(), Value::Enum(1, "y".into())),
            (
                "dec".into(),
                Value::Decimal(apache_avro::Decimal::from(vec![1, 2])),
            ),
            ("ts".into(), Value::TimestampMillis(1_700_000_000_000)),
            (
                "tags".into(),
                Value::Array(vec![Value::String("a".into()), Value::String("b".into())]),
            ),
            ("nulls".into(), Value::Array(vec![Value::Null; 100])),
            (
                "m".into(),
                Value::Map(
                    [
                        ("k".to_string(), Value::Union(1, Box::new(Value::Int(7)))),
                        ("n".to_string(), Value::Union(0, Box::new(Value::Null))),
                    ]
                    .into(),
                ),
            ),
            (
                "inner".into(),
                Value::Record(vec![("x".into(), Value::Int(-3))]),
            ),
            (
                "again".into(),
                Value::Record(vec![("x".into(), Value::Int(4))]),
            ),
            ("list".into(), list(&[1, 2, 3])),
            ("list2".into(), list(&[4])),
        ]);
        let bytes = apache_avro::to_avro_datum(&top, value).expect("encodes");
        let shape = DatumShape::new(&top);
        assert_eq!(shape.check(&bytes), Ok(()));
        // Cut anywhere, it is refused (apache-avro would read some cuts as nulls).
        for cut in 0..bytes.len() {
            assert!(shape.check(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        // A linked list as deep as the limit allows passes; one more level does not.
        let list_shape = DatumShape::new(&node);
        let deep = |levels: i64| {
            let values: Vec<i64> = (0..levels).collect();
            let Value::Union(_, record) = list(&values) else {
                unreachable!()
            };
            apache_avro::to_avro_datum(&node, *record).expect("encodes")
        };
        assert_eq!(list_shape.check(&deep(MAX_DEPTH as i64)), Ok(()));
        assert_eq!(
            list_shape.check(&deep(MAX_DEPTH as i64 + 1)),
            Err(Refusal::TooDeep)
        );
    }

    #[test]
    fn a_recursive_schema_cannot_nest_a_hostile_datum_deeply() {
        let shape = DatumShape::new(&schema(LIST));
        // 100,000 levels at two bytes each: value 0, branch "Node".
        let mut datum = [0u8, 2].repeat(100_000);
        datum.extend_from_slice(&[0, 0]);
        assert_eq!(shape.check(&datum), Err(Refusal::TooDeep));
        // The same through nested arrays.
        let nested = DatumShape::new(&schema(
            r#"{"type": "record", "name": "T", "fields": [
                {"name": "children", "type": {"type": "array", "items": "T"}}]}"#,
        ));
        let datum = [2u8].repeat(100_000);
        assert_eq!(nested.check(&datum), Err(Refusal::TooDeep));
    }

    #[test]
    fn declared_lengths_larger_than_the_datum_are_refused_before_anything_is_reserved() {
        let cases = [
            (
                r#"{"type": "array", "items": "long"}"#,
                varint(16_000_000),
                "array block declares 16000000 items but only 0 bytes are left",
            ),
            (
                r#"{"type": "array", "items": "long"}"#,
                [varint(-16_000_000), varint(1)].concat(),
                "declares 16000000 items",
            ),
            (
                r#"{"type": "map", "values": "null"}"#,
                varint(1 << 40),
                "map block declares 1099511627776 items",
            ),
            (
                r#""string""#,
                varint(16 << 20),
                "declares 16777216 bytes but only 0 are left",
            ),
            (
                r#""bytes""#,
                [varint(5), b"abc".to_vec()].concat(),
                "declares 5 bytes but only 3",
            ),
            (
                r#"{"type": "array", "items": "null"}"#,
                varint(MAX_EMPTY_ITEMS as i64 + 1),
                "declares 4097 items",
            ),
        ];
        for (text, datum, expected) in cases {
            match DatumShape::new(&schema(text)).check(&datum) {
                Err(Refusal::Truncated(m)) => assert!(m.contains(expected), "{text}: {m}"),
                other => panic!("{text}: {other:?}"),
            }
        }
        // Zero-byte items within the budget are fine.
        let nulls = DatumShape::new(&schema(r#"{"type": "array", "items": "null"}"#));
        assert_eq!(
            nulls.check(&[varint(MAX_EMPTY_ITEMS as i64), varint(0)].concat()),
            Ok(())
        );
    }

    #[test]
    fn malformed_datums_are_invalid() {
        let union = DatumShape::new(&schema(r#"["null", "long"]"#));
        assert!(
            matches!(union.check(&varint(2)), Err(Refusal::Invalid(m)) if m.contains("branch 2"))
        );
        assert!(matches!(union.check(&varint(-1)), Err(Refusal::Invalid(_))));
        let long = DatumShape::new(&schema(r#""long""#));
        assert!(matches!(long.check(&[0xff; 11]), Err(Refusal::Invalid(_))));
        let string = DatumShape::new(&schema(r#""string""#));
        assert!(matches!(
            string.check(&varint(-3)),
            Err(Refusal::Invalid(_))
        ));
    }
}
