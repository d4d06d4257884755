//! OCI image layouts for the filters, in the "compat" variant Istio pulls:
//! one tar+gzip layer holding `plugin.wasm`, the manifest annotated
//! `module.wasm.image/variant: compat`. Written without a container engine,
//! byte-for-byte reproducible (fixed mtimes, owners and gzip header).

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::Path;

pub const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
pub const VARIANT_ANNOTATION: &str = "module.wasm.image/variant";

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn octal(field: &mut [u8], value: u64) {
    // Zero-padded octal, NUL-terminated, filling the field.
    let width = field.len().saturating_sub(1);
    let text = format!("{value:0width$o}");
    for (dst, src) in field.iter_mut().zip(text.bytes().chain(std::iter::once(0))) {
        *dst = src;
    }
}

fn put(header: &mut [u8; 512], at: usize, bytes: &[u8]) {
    for (dst, src) in header.iter_mut().skip(at).zip(bytes) {
        *dst = *src;
    }
}

fn put_octal(header: &mut [u8; 512], at: usize, width: usize, value: u64) {
    let mut field = vec![0u8; width];
    octal(&mut field, value);
    put(header, at, &field);
}

/// A ustar archive with one regular file.
pub fn tar_one(name: &str, data: &[u8]) -> Vec<u8> {
    let mut header = [0u8; 512];
    put(
        &mut header,
        0,
        name.as_bytes()
            .get(..name.len().min(100))
            .unwrap_or_default(),
    );
    put_octal(&mut header, 100, 8, 0o644);
    put_octal(&mut header, 108, 8, 0);
    put_octal(&mut header, 116, 8, 0);
    put_octal(&mut header, 124, 12, data.len() as u64);
    put_octal(&mut header, 136, 12, 0);
    put(&mut header, 156, b"0");
    put(&mut header, 257, b"ustar\0");
    put(&mut header, 263, b"00");
    // The checksum is computed with its own field as spaces.
    put(&mut header, 148, b"        ");
    let sum: u64 = header.iter().map(|&b| u64::from(b)).sum();
    put(&mut header, 148, format!("{sum:06o}\0 ").as_bytes());
    let mut out = header.to_vec();
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
    out.extend_from_slice(&[0u8; 1024]);
    out
}

fn gzip(data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut enc = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::best());
    enc.write_all(data)?;
    enc.finish()
}

fn write_blob(dir: &Path, bytes: &[u8]) -> std::io::Result<Value> {
    let digest = sha256_hex(bytes);
    std::fs::write(dir.join("blobs/sha256").join(&digest), bytes)?;
    Ok(json!({"digest": format!("sha256:{digest}"), "size": bytes.len()}))
}

fn described(media_type: &str, blob: Value) -> Value {
    let mut v = blob;
    if let Some(o) = v.as_object_mut() {
        o.insert("mediaType".into(), json!(media_type));
    }
    v
}

/// Writes the image layout for one module into `dir` (created fresh).
/// Returns the manifest digest (`sha256:...`).
pub fn write_layout(dir: &Path, wasm: &[u8], tag: &str) -> std::io::Result<String> {
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    std::fs::create_dir_all(dir.join("blobs/sha256"))?;
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    let tar = tar_one("plugin.wasm", wasm);
    let layer = write_blob(dir, &gzip(&tar)?)?;
    let config = json!({
        "architecture": "wasm",
        "os": "wasip1",
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{}", sha256_hex(&tar))]}
    })
    .to_string();
    let config = write_blob(dir, config.as_bytes())?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": described(CONFIG_MEDIA_TYPE, config),
        "layers": [described(LAYER_MEDIA_TYPE, layer)],
        "annotations": {VARIANT_ANNOTATION: "compat"}
    })
    .to_string();
    let manifest = write_blob(dir, manifest.as_bytes())?;
    let digest = manifest
        .get("digest")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let mut entry = described(MANIFEST_MEDIA_TYPE, manifest);
    if let Some(o) = entry.as_object_mut() {
        o.insert(
            "annotations".into(),
            json!({"org.opencontainers.image.ref.name": tag}),
        );
    }
    let index = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [entry]});
    std::fs::write(dir.join("index.json"), index.to_string())?;
    Ok(digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_matches_the_fips_vectors() {
        // FIPS 180-2 examples.
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn tar_headers_carry_a_valid_checksum_and_size() {
        let t = tar_one("plugin.wasm", b"\0asm");
        assert_eq!(t.len(), 512 + 512 + 1024);
        assert_eq!(&t[0..11], b"plugin.wasm");
        assert_eq!(&t[124..136], b"00000000004\0");
        let stored = u64::from_str_radix(std::str::from_utf8(&t[148..154]).unwrap(), 8).unwrap();
        let mut h = t[..512].to_vec();
        h[148..156].copy_from_slice(b"        ");
        assert_eq!(stored, h.iter().map(|&b| u64::from(b)).sum::<u64>());
        assert_eq!(&t[512..516], b"\0asm");
    }
}
