//! Protocol buffers' wire format, the few pieces the filters need to speak
//! gRPC services without a protobuf runtime in the modules: varints, length-
//! delimited fields and a reader of a message's fields. Unknown fields are
//! skipped, as protobuf requires; a malformed message ends the reading with
//! `None`. Used by rate_limit (Envoy's rate limit service) and the live
//! configuration's etcd watch.

/// A varint field: its key (`number << 3`, wire type 0) and value.
pub fn put_varint(out: &mut Vec<u8>, key: u64, value: u64) {
    push_varint(out, key);
    push_varint(out, value);
}

/// A bare varint (a key, a length).
pub fn push_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A string or bytes field; proto3 leaves empty ones out (an embedded
/// message is written with `put_message`, empty or not).
pub fn put_bytes(out: &mut Vec<u8>, field: u64, bytes: &[u8]) {
    if bytes.is_empty() {
        return;
    }
    put_message(out, field, bytes);
}

/// An embedded message (or any length-delimited field), written even when empty.
pub fn put_message(out: &mut Vec<u8>, field: u64, bytes: &[u8]) {
    push_varint(out, (field << 3) | 2);
    push_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// A field's value by wire type (fixed-width values are skipped).
pub enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

/// The fields of one message: `(number, value)`, `None` once malformed.
pub struct Fields<'a> {
    rest: &'a [u8],
    failed: bool,
}

impl<'a> Fields<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Fields {
            rest: bytes,
            failed: false,
        }
    }

    fn varint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for (i, byte) in self.rest.iter().enumerate().take(10) {
            v |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                self.rest = self.rest.get(i + 1..)?;
                return Some(v);
            }
        }
        None
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let taken = self.rest.get(..n)?;
        self.rest = self.rest.get(n..)?;
        Some(taken)
    }

    fn field(&mut self) -> Option<(u64, Value<'a>)> {
        let key = self.varint()?;
        let number = key >> 3;
        let value = match key & 7 {
            0 => Value::Varint(self.varint()?),
            1 => self.take(8).map(|_| Value::Fixed)?,
            2 => {
                let len = usize::try_from(self.varint()?).ok()?;
                Value::Bytes(self.take(len)?)
            }
            5 => self.take(4).map(|_| Value::Fixed)?,
            _ => return None, // groups (3, 4) are not in these messages
        };
        (number > 0).then_some((number, value))
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Option<(u64, Value<'a>)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.rest.is_empty() {
            return None;
        }
        let field = self.field();
        self.failed = field.is_none();
        Some(field)
    }
}
