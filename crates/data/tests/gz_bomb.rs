//! A gzip bomb as an IDX file: a small `.gz` whose stream decompresses to far more than its
//! header declares. Alone in its test binary, so the process's peak memory (Linux
//! `VmHWM`) shows what loading it allocated.

use std::io::Write;

use fair_data::load_idx;

/// The bytes a stream of `zeros` zero bytes after `header` compresses to, built in chunks
/// (the test itself never holds the decompressed stream).
fn gz_with_zeros(header: &[u8], zeros: usize) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(header).unwrap();
    let chunk = vec![0u8; 1 << 20];
    for _ in 0..zeros / chunk.len() {
        enc.write_all(&chunk).unwrap();
    }
    enc.finish().unwrap()
}

fn idx_header(magic: u8, dims: &[u32]) -> Vec<u8> {
    let mut v = vec![0, 0, 8, magic];
    for d in dims {
        v.extend(d.to_be_bytes());
    }
    v
}

use fair_testkit::peak_rss;

#[test]
fn a_gz_idx_longer_than_its_header_is_refused_without_decompressing_it() {
    const STREAM: usize = 256 << 20;
    let dir = tempfile::tempdir().unwrap();
    // The header says one 2×2 image (4 bytes); the stream holds 256 MB of zeros.
    let images = dir.path().join("train-images-idx3-ubyte.gz");
    let bomb = gz_with_zeros(&idx_header(3, &[1, 2, 2]), STREAM);
    assert!(bomb.len() < 1 << 20, "{} bytes compressed", bomb.len());
    std::fs::write(&images, &bomb).unwrap();
    let labels = dir.path().join("train-labels-idx1-ubyte.gz");
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(&[idx_header(1, &[1]), vec![0]].concat())
        .unwrap();
    std::fs::write(&labels, enc.finish().unwrap()).unwrap();

    let before = peak_rss();
    let start = std::time::Instant::now();
    let e = load_idx(&images, &labels, 10).unwrap_err().to_string();
    let took = start.elapsed();
    assert!(
        e.contains("train-images-idx3-ubyte.gz")
            && e.contains("decompresses to more than the 4 bytes its header declares"),
        "{e}"
    );
    // Decompressing the whole stream (256 MB) takes far longer than reading 5 bytes of it.
    assert!(took.as_secs_f64() < 2.0, "took {took:?}");
    if let (Some(before), Some(after)) = (before, peak_rss()) {
        // Reading the stream whole would have raised the peak by 256 MB or more.
        assert!(
            after - before < 32 << 20,
            "peak memory rose by {} MB",
            (after - before) >> 20
        );
    }

    // The same for a label file: one label declared, 256 MB delivered.
    std::fs::write(&labels, gz_with_zeros(&idx_header(1, &[1]), STREAM)).unwrap();
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(&[idx_header(3, &[1, 2, 2]), vec![7; 4]].concat())
        .unwrap();
    std::fs::write(&images, enc.finish().unwrap()).unwrap();
    let e = load_idx(&images, &labels, 10).unwrap_err().to_string();
    assert!(
        e.contains("train-labels-idx1-ubyte.gz")
            && e.contains("decompresses to more than the 1 bytes its header declares"),
        "{e}"
    );
    if let (Some(before), Some(after)) = (before, peak_rss()) {
        assert!(
            after - before < 32 << 20,
            "peak memory rose by {} MB",
            (after - before) >> 20
        );
    }
}
