//! Container images generated in the test (no downloads): real tar layers (uncompressed or
//! gzip), image configs whose `rootfs.diff_ids` match the layers, OCI and Docker schema2
//! manifests, OCI indexes, and the on-disk layouts skopeo reads and writes: the OCI image
//! layout (`oci:` transport) and skopeo's directory layout (`dir:` transport).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rand::RngCore;
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

pub const MIB: usize = 1024 * 1024;

/// The annotation naming a tag in an OCI layout's `index.json`.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// The hex part of `sha256:<hex>`.
pub fn digest_hex(digest: &str) -> &str {
    digest
        .strip_prefix("sha256:")
        .unwrap_or_else(|| panic!("not a sha256 digest: {digest}"))
}

/// `len` random (incompressible) bytes: xoshiro256** seeded from the thread RNG, because
/// tests build unoptimised and the thread RNG (ChaCha) makes ~10 MB/s there.
pub fn random_bytes(len: usize) -> Vec<u8> {
    let mut seed = [0u64; 4];
    while seed == [0; 4] {
        seed = std::array::from_fn(|_| rand::rng().next_u64());
    }
    let [mut a, mut b, mut c, mut d] = seed;
    let mut data = Vec::with_capacity(len + 8);
    while data.len() < len {
        let out = b.wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = b << 17;
        c ^= a;
        d ^= b;
        b ^= c;
        a ^= d;
        c ^= t;
        d = d.rotate_left(45);
        data.extend_from_slice(&out.to_le_bytes());
    }
    data.truncate(len);
    data
}

/// A POSIX ustar archive holding one regular file `name` (at most 100 bytes) with `contents`.
pub fn tar_with_file(name: &str, contents: &[u8]) -> Vec<u8> {
    assert!(name.len() <= 100, "tar entry name too long: {name}");
    let mut header = [0u8; 512];
    let field = |header: &mut [u8; 512], offset: usize, value: &[u8]| {
        header[offset..offset + value.len()].copy_from_slice(value);
    };
    field(&mut header, 0, name.as_bytes());
    field(&mut header, 100, b"0000644\0"); // mode
    field(&mut header, 108, b"0000000\0"); // uid
    field(&mut header, 116, b"0000000\0"); // gid
    field(
        &mut header,
        124,
        format!("{:011o}\0", contents.len()).as_bytes(),
    ); // size
    field(&mut header, 136, b"14500000000\0"); // mtime (2020-ish, fixed)
    field(&mut header, 148, b"        "); // checksum placeholder: spaces
    header[156] = b'0'; // regular file
    field(&mut header, 257, b"ustar\0"); // magic
    field(&mut header, 263, b"00"); // version
    field(&mut header, 265, b"root");
    field(&mut header, 297, b"root");
    let checksum: u32 = header.iter().map(|&b| u32::from(b)).sum();
    field(&mut header, 148, format!("{checksum:06o}\0 ").as_bytes());

    let padded = contents.len().div_ceil(512) * 512;
    let mut archive = Vec::with_capacity(512 + padded + 1024);
    archive.extend_from_slice(&header);
    archive.extend_from_slice(contents);
    archive.resize(512 + padded, 0);
    // End of archive: two zero blocks.
    archive.resize(archive.len() + 1024, 0);
    archive
}

fn crc32(data: &[u8]) -> u32 {
    let mut table = [0u32; 256];
    for (i, entry) in table.iter_mut().enumerate() {
        let mut c = i as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
        *entry = c;
    }
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc = table[((crc ^ u32::from(b)) & 0xFF) as usize] ^ (crc >> 8);
    }
    crc ^ 0xFFFF_FFFF
}

/// A valid gzip member (RFC 1952) of `data`, using DEFLATE stored blocks: random data does
/// not compress anyway, and every gunzip reads it.
pub fn gzip_stored(data: &[u8]) -> Vec<u8> {
    const MAX_BLOCK: usize = 65_535;
    let mut out = Vec::with_capacity(data.len() + data.len() / MAX_BLOCK * 5 + 32);
    // ID1 ID2 CM=deflate FLG=0 MTIME=0 XFL=0 OS=255 (unknown).
    out.extend_from_slice(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff]);
    let mut chunks = data.chunks(MAX_BLOCK).peekable();
    if chunks.peek().is_none() {
        out.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
    }
    while let Some(chunk) = chunks.next() {
        let last = chunks.peek().is_none();
        out.push(u8::from(last)); // BFINAL, BTYPE=00 (stored)
        let len = chunk.len() as u16;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(chunk);
    }
    out.extend_from_slice(&crc32(data).to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out
}

/// Content-addressed bytes with the media type a manifest gives them.
#[derive(Debug, Clone)]
pub struct Blob {
    pub media_type: String,
    pub data: Vec<u8>,
    pub digest: String,
}

impl Blob {
    pub fn new(media_type: &str, data: Vec<u8>) -> Blob {
        Blob {
            media_type: media_type.to_owned(),
            digest: sha256_digest(&data),
            data,
        }
    }

    pub fn descriptor(&self) -> Value {
        json!({
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": self.data.len(),
        })
    }
}

/// How to make one layer: `size` random bytes in one tar entry, optionally gzip'd.
#[derive(Debug, Clone, Copy)]
pub struct LayerSpec {
    pub size: usize,
    pub gzip: bool,
}

impl LayerSpec {
    pub fn tar(size: usize) -> LayerSpec {
        LayerSpec { size, gzip: false }
    }

    pub fn gzip(size: usize) -> LayerSpec {
        LayerSpec { size, gzip: true }
    }
}

/// A layer blob and the digest of its uncompressed tar (its `diff_id`).
#[derive(Debug, Clone)]
pub struct Layer {
    pub blob: Blob,
    pub diff_id: String,
}

/// Builds a layer whose tar holds `file-<n>.bin`; `docker` picks Docker media types.
pub fn make_layer(index: usize, spec: LayerSpec, docker: bool) -> Layer {
    let tar = tar_with_file(&format!("file-{index}.bin"), &random_bytes(spec.size));
    let diff_id = sha256_digest(&tar);
    let (media_type, data) = match (spec.gzip, docker) {
        (true, false) => (OCI_LAYER_GZIP, gzip_stored(&tar)),
        (false, false) => (OCI_LAYER_TAR, tar),
        (true, true) => (DOCKER_LAYER_GZIP, gzip_stored(&tar)),
        (false, true) => panic!("Docker schema2 layers here are always gzip'd"),
    };
    Layer {
        blob: Blob::new(media_type, data),
        diff_id,
    }
}

/// One image: manifest (exact bytes), config and layers.
#[derive(Debug, Clone)]
pub struct Image {
    pub manifest: Blob,
    pub config: Blob,
    pub layers: Vec<Layer>,
    pub architecture: String,
    pub os: String,
}

impl Image {
    /// Config and layer blobs (not the manifest).
    pub fn blobs(&self) -> Vec<&Blob> {
        std::iter::once(&self.config)
            .chain(self.layers.iter().map(|l| &l.blob))
            .collect()
    }

    pub fn layer_digests(&self) -> Vec<String> {
        self.layers.iter().map(|l| l.blob.digest.clone()).collect()
    }
}

fn image_config(architecture: &str, os: &str, layers: &[Layer]) -> Vec<u8> {
    let diff_ids: Vec<&str> = layers.iter().map(|l| l.diff_id.as_str()).collect();
    let history: Vec<Value> = layers
        .iter()
        .enumerate()
        .map(|(i, _)| {
            json!({
                "created": "2024-01-01T00:00:00Z",
                "created_by": format!("ipfs-registry test layer {i}"),
            })
        })
        .collect();
    serde_json::to_vec_pretty(&json!({
        "created": "2024-01-01T00:00:00Z",
        "architecture": architecture,
        "os": os,
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["/bin/sh"],
            "Labels": { "org.example.test": "skopeo-roundtrip" },
        },
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
        "history": history,
    }))
    .unwrap()
}

/// Builds an image of fresh random layers. `docker` makes a Docker schema2 image
/// (manifest, config and layer media types), otherwise an OCI image.
pub fn make_image(architecture: &str, os: &str, specs: &[LayerSpec], docker: bool) -> Image {
    let layers: Vec<Layer> = specs
        .iter()
        .enumerate()
        .map(|(i, spec)| make_layer(i, *spec, docker))
        .collect();
    make_image_from_layers(architecture, os, layers, docker)
}

/// Builds an image around existing layers (e.g. a layer shared between platforms).
pub fn make_image_from_layers(
    architecture: &str,
    os: &str,
    layers: Vec<Layer>,
    docker: bool,
) -> Image {
    let config = Blob::new(
        if docker { DOCKER_CONFIG } else { OCI_CONFIG },
        image_config(architecture, os, &layers),
    );
    let layer_descriptors: Vec<Value> = layers.iter().map(|l| l.blob.descriptor()).collect();
    let manifest = if docker {
        json!({
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": config.descriptor(),
            "layers": layer_descriptors,
        })
    } else {
        json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config.descriptor(),
            "layers": layer_descriptors,
            "annotations": { "org.opencontainers.image.title": "skopeo round trip" },
        })
    };
    let media_type = if docker {
        DOCKER_MANIFEST
    } else {
        OCI_MANIFEST
    };
    Image {
        manifest: Blob::new(media_type, serde_json::to_vec_pretty(&manifest).unwrap()),
        config,
        layers,
        architecture: architecture.to_owned(),
        os: os.to_owned(),
    }
}

/// An OCI image index over `images`, with their platforms.
pub fn make_index(images: &[Image]) -> Blob {
    let manifests: Vec<Value> = images
        .iter()
        .map(|image| {
            let mut descriptor = image.manifest.descriptor();
            descriptor["platform"] = json!({
                "architecture": image.architecture,
                "os": image.os,
            });
            descriptor
        })
        .collect();
    let index = json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": manifests,
    });
    Blob::new(OCI_INDEX, serde_json::to_vec_pretty(&index).unwrap())
}

/// Writes an OCI image layout at `dir`: `oci-layout`, `index.json` naming `root` (a manifest
/// or an index) as `tag`, and every blob under `blobs/sha256/`.
pub fn write_oci_layout<'a>(
    dir: &Path,
    tag: &str,
    root: &'a Blob,
    blobs: impl IntoIterator<Item = &'a Blob>,
) {
    let blob_dir = dir.join("blobs").join("sha256");
    std::fs::create_dir_all(&blob_dir).unwrap();
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    for blob in std::iter::once(root).chain(blobs) {
        std::fs::write(blob_dir.join(digest_hex(&blob.digest)), &blob.data).unwrap();
    }
    let mut descriptor = root.descriptor();
    descriptor["annotations"] = json!({ REF_NAME: tag });
    let index = json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [descriptor],
    });
    std::fs::write(
        dir.join("index.json"),
        serde_json::to_vec_pretty(&index).unwrap(),
    )
    .unwrap();
}

/// An OCI image layout on disk, as a client (e.g. skopeo) wrote it.
pub struct OciLayout {
    pub dir: PathBuf,
    pub index: Value,
}

impl OciLayout {
    pub fn open(dir: &Path) -> OciLayout {
        let layout: Value = serde_json::from_slice(
            &std::fs::read(dir.join("oci-layout")).expect("oci-layout file"),
        )
        .expect("oci-layout is JSON");
        assert_eq!(layout["imageLayoutVersion"], "1.0.0", "{layout}");
        let index = serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap())
            .expect("index.json is JSON");
        OciLayout {
            dir: dir.to_owned(),
            index,
        }
    }

    /// The descriptor `index.json` names `tag`.
    pub fn tagged(&self, tag: &str) -> Value {
        self.index["manifests"]
            .as_array()
            .expect("index.json has manifests")
            .iter()
            .find(|d| d["annotations"][REF_NAME] == tag)
            .unwrap_or_else(|| panic!("index.json names no {tag}: {}", self.index))
            .clone()
    }

    pub fn blob(&self, digest: &str) -> Vec<u8> {
        let path = self.dir.join("blobs/sha256").join(digest_hex(digest));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// Every blob file, as `digest → bytes`.
    pub fn all_blobs(&self) -> BTreeMap<String, Vec<u8>> {
        list_dir(&self.dir.join("blobs/sha256"))
            .into_iter()
            .map(|(name, data)| (format!("sha256:{name}"), data))
            .collect()
    }
}

fn list_dir(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let entry = entry.unwrap();
            (
                entry.file_name().into_string().unwrap(),
                std::fs::read(entry.path()).unwrap(),
            )
        })
        .collect()
}

/// The `version` file of skopeo's `dir:` transport.
pub const DIR_TRANSPORT_VERSION: &str = "Directory Transport Version: 1.1\n";

/// Writes skopeo's `dir:` layout: `manifest.json` (exact bytes), `version`, and each blob in
/// a file named by its hex digest.
pub fn write_dir_layout(dir: &Path, image: &Image) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("version"), DIR_TRANSPORT_VERSION).unwrap();
    std::fs::write(dir.join("manifest.json"), &image.manifest.data).unwrap();
    for blob in image.blobs() {
        std::fs::write(dir.join(digest_hex(&blob.digest)), &blob.data).unwrap();
    }
}

/// Everything in a `dir:` layout, as `file name → bytes`.
pub fn read_dir_layout(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    list_dir(dir)
}
