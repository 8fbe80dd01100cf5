//! A PNG metadata bomb: an 8×8 image whose ICC profile (the `iCCP` chunk, zlib-compressed)
//! inflates to 300 MB. The pixel limit (`max_pixels`) does not bound metadata, which the
//! decoder reads before the pixels; the file's metadata has a small budget of its own. Alone
//! in its test binary, so the process's peak memory (Linux `VmHWM`) shows what decoding
//! allocated.

use std::io::Write;
use std::path::Path;

use fair_data::{FolderOptions, ImageFolder, load_image_folder};

/// What the ICC profile of the bomb inflates to.
const INFLATED: usize = 300 << 20;

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend((data.len() as u32).to_be_bytes());
    let mut crc = flate2::Crc::new();
    crc.update(kind);
    crc.update(data);
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    out.extend(crc.sum().to_be_bytes());
}

/// A zlib stream of `zeros` zero bytes, compressed in chunks (the test never holds the
/// inflated bytes).
fn zlib_zeros(zeros: usize) -> Vec<u8> {
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    let block = vec![0u8; 1 << 20];
    let mut left = zeros;
    while left > 0 {
        let n = left.min(block.len());
        z.write_all(&block[..n]).unwrap();
        left -= n;
    }
    z.finish().unwrap()
}

/// An 8×8 8-bit grey PNG (mid grey) with the ancillary chunk `kind` holding `data`.
fn png_with(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend(8u32.to_be_bytes());
    ihdr.extend(8u32.to_be_bytes());
    ihdr.extend([8, 0, 0, 0, 0]); // 8 bits, grey, deflate, filter set 0, no interlace
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(&mut out, kind, data);
    let rows: Vec<u8> = (0..8)
        .flat_map(|_| [0u8].into_iter().chain([128; 8]))
        .collect();
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    z.write_all(&rows).unwrap();
    chunk(&mut out, b"IDAT", &z.finish().unwrap());
    chunk(&mut out, b"IEND", &[]);
    out
}

/// An 8×8 PNG with an ICC profile of `icc` zero bytes, compressed.
fn png_with_icc(icc: usize) -> Vec<u8> {
    let mut iccp = b"bomb\0\0".to_vec(); // profile name, NUL, compression method 0
    iccp.extend(zlib_zeros(icc));
    png_with(b"iCCP", &iccp)
}

use fair_testkit::peak_rss;

fn write_tree(root: &Path, bomb: &[u8]) {
    std::fs::create_dir_all(root.join("cat")).unwrap();
    std::fs::write(root.join("cat/bomb.png"), bomb).unwrap();
}

#[test]
fn an_icc_profile_bomb_is_not_inflated_and_metadata_has_a_budget_of_its_own() {
    let bomb = png_with_icc(INFLATED);
    assert!(bomb.len() < 1 << 20, "{} bytes compressed", bomb.len());
    let dir = tempfile::tempdir().unwrap();
    write_tree(dir.path(), &bomb);
    let f = ImageFolder::open(dir.path()).unwrap();
    // The tightest pixel limit that still admits the image (what the issue tried: it left
    // ~530 MB per image).
    let tight = FolderOptions {
        max_pixels: 64,
        ..Default::default()
    };

    let before = peak_rss();
    let start = std::time::Instant::now();
    // The decoder gives up on the profile at its budget and drops it (the PNG decoder
    // treats an unreadable profile as absent): the pixels decode.
    let (px, w, h) = f.decode(0, 1).unwrap();
    assert_eq!((w, h), (8, 8));
    assert_eq!(px, vec![128u8; 64]);
    let (px, _, _) = f.clone().max_pixels(64).decode(0, 3).unwrap();
    assert_eq!(px, vec![128u8; 192]);
    let d = load_image_folder(dir.path(), 1, 8, 8, &tight).unwrap();
    assert_eq!(d.pixels, vec![128u8; 64]);
    let took = start.elapsed();
    assert!(took.as_secs_f64() < 10.0, "took {took:?}");
    if let (Some(before), Some(after)) = (before, peak_rss()) {
        // Inflating the profile whole would have raised the peak by 300 MB or more; the
        // metadata budget is 16 MiB.
        assert!(
            after - before < 64 << 20,
            "peak memory rose by {} MB",
            (after - before) >> 20
        );
    }

    // Metadata the decoder must hold whole beyond the budget (a 17 MiB text chunk) is an
    // error naming the limit, at any pixel limit.
    let mut text = b"Comment\0".to_vec();
    text.resize(17 << 20, b'x');
    std::fs::write(dir.path().join("cat/bomb.png"), png_with(b"tEXt", &text)).unwrap();
    for limit in [64, fair_data::DEFAULT_MAX_PIXELS] {
        let e = f
            .clone()
            .max_pixels(limit)
            .decode(0, 1)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("bomb.png")
                && e.contains("metadata")
                && e.contains("at most 16777216 bytes (MAX_IMAGE_METADATA_BYTES)"),
            "{e}"
        );
    }
    assert_eq!(fair_data::MAX_IMAGE_METADATA_BYTES, 16 << 20);

    // Real-sized metadata (a 3 KB profile, a short comment) does not stop an image.
    for png in [png_with_icc(3000), png_with(b"tEXt", b"Comment\0hello")] {
        std::fs::write(dir.path().join("cat/bomb.png"), png).unwrap();
        assert_eq!(f.decode(0, 1).unwrap().0, vec![128u8; 64]);
        assert_eq!(
            load_image_folder(dir.path(), 1, 8, 8, &tight)
                .unwrap()
                .len(),
            1
        );
    }
}
