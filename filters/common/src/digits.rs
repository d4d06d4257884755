//! Numbers written as text without `core::fmt`: trace ids, span ids and
//! header values are formatted on every request, and `format!`'s generic
//! machinery (argument lists, padding, a `Write` call per piece) was about
//! a twentieth of the suite's own time in the VM (`make profile-vm`).

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Appends the low `width` hex digits of `value`, lowercase, zero-padded
/// (`format!("{value:0width$x}")` for a value that fits; `width` <= 32).
pub fn push_hex(out: &mut String, value: u128, width: usize) {
    // Two u64 halves: u128 shifts are several instructions each in wasm.
    let mut digits = [b'0'; 32];
    for (half, word) in [(0usize, (value >> 64) as u64), (16, value as u64)] {
        let mut word = word;
        for i in (0..16).rev() {
            if let Some(d) = digits.get_mut(half + i) {
                *d = HEX.get((word & 0xf) as usize).copied().unwrap_or(b'0');
            }
            word >>= 4;
        }
    }
    push_ascii(out, digits.get(32 - width.min(32)..).unwrap_or_default());
}

/// The low `width` hex digits of `value` as a new string (`push_hex`).
pub fn hex(value: u128, width: usize) -> String {
    let mut out = String::with_capacity(width);
    push_hex(&mut out, value, width);
    out
}

/// Appends `value` in decimal (`format!("{value}")`).
pub fn push_decimal(out: &mut String, mut value: u64) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        if let Some(d) = digits.get_mut(start) {
            *d = b'0' + (value % 10) as u8;
        }
        value /= 10;
        if value == 0 || start == 0 {
            break;
        }
    }
    push_ascii(out, digits.get(start..).unwrap_or_default());
}

/// One append for the whole run of digits (ASCII: the check is its fast path).
fn push_ascii(out: &mut String, ascii: &[u8]) {
    out.push_str(std::str::from_utf8(ascii).unwrap_or_default());
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    // core::fmt is the independent reference.
    #[test]
    fn hex_matches_core_fmt() {
        let values = [
            0u128,
            1,
            0xf,
            0x10,
            0x4bf92f3577b34da6a3ce929d0e0e4736,
            u64::MAX as u128,
            u128::MAX,
        ];
        for v in values {
            for (width, expected) in [
                (32, format!("{v:032x}")),
                (16, format!("{:016x}", v as u64)),
                (2, format!("{:02x}", v as u8)),
                (12, format!("{:012x}", v & 0xffff_ffff_ffff)),
            ] {
                let mut out = String::from("x");
                push_hex(&mut out, v, width);
                assert_eq!(out, format!("x{expected}"), "{v:x} width {width}");
            }
        }
    }

    #[test]
    fn decimal_matches_core_fmt() {
        let mut v = 1u64;
        let mut values = vec![0, 9, 10, 99, 100, u64::MAX, u64::MAX - 1];
        while let Some(next) = v.checked_mul(7) {
            values.push(next);
            values.push(next - 1);
            v = next;
        }
        for v in values {
            let mut out = String::new();
            push_decimal(&mut out, v);
            assert_eq!(out, v.to_string());
        }
    }
}
