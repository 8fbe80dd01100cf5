//! SVHN's MAT-files: files written by SciPy (`svhn_reference.py`) load to the bytes numpy
//! computes from the same arrays; malformed and hostile files (hand-built here) are refused
//! with messages naming the file and what was expected, without inflating past what their
//! headers declare.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use fair_data::load_svhn;

/// Writes `case` with the reference script into `dir`; returns the `.mat` path.
fn scipy_case(py: &Path, dir: &Path, case: &str) -> PathBuf {
    let status = Command::new(py)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/svhn_reference.py"))
        .arg(case)
        .arg(dir)
        .status()
        .unwrap();
    assert!(status.success(), "svhn_reference.py {case} failed");
    dir.join(format!("{case}.mat"))
}

fn err(path: &Path) -> String {
    load_svhn(path)
        .expect_err("the file must be refused")
        .to_string()
}

#[test]
#[ignore = "needs the reference Python (cargo xtask test runs it)"]
fn scipy_files_load_to_the_bytes_numpy_computes() {
    let Some(py) = fair_testkit::reference_python("the SciPy SVHN cross-check") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // Compressed and not; uint8 and double labels; y before X among other variables; one
    // image (SciPy keeps the trailing dimension of 1).
    for (case, n) in [
        ("compressed-uint8", 23),
        ("plain-double", 12),
        ("compressed-double-reordered", 17),
        ("plain-one-image", 1),
    ] {
        let path = scipy_case(&py, dir.path(), case);
        let pixels = std::fs::read(dir.path().join(format!("{case}.pixels"))).unwrap();
        let labels: Vec<i64> = std::fs::read(dir.path().join(format!("{case}.labels")))
            .unwrap()
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
            .collect();
        assert_eq!(labels.len(), n, "{case}");
        let d = load_svhn(&path).unwrap_or_else(|e| panic!("{case}: {e}"));
        assert_eq!(d.shape, [3, 32, 32], "{case}");
        assert_eq!(d.len(), n, "{case}");
        assert_eq!(d.labels, labels, "{case}: labels");
        assert!(
            d.pixels == pixels,
            "{case}: pixels differ from numpy's transpose"
        );
        let classes: Vec<String> = (0..10).map(|c| c.to_string()).collect();
        assert_eq!(d.classes, classes, "{case}");
        assert_eq!(d.name, format!("{case}.mat"));
        if n >= 10 {
            // Every label 1..=10 is in the file: 10 became 0, and no label is 10.
            assert!(d.labels.contains(&0) && !d.labels.contains(&10), "{case}");
            assert!((1..=9).all(|l| d.labels.contains(&l)), "{case}");
        }
    }
}

#[test]
#[ignore = "needs the reference Python (cargo xtask test runs it)"]
fn labels_outside_1_to_10_are_refused_by_index() {
    let Some(py) = fair_testkit::reference_python("the SciPy SVHN cross-check") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    for (case, shown) in [
        ("bad-label-11", "label 11 "),
        ("bad-label-0", "label 0 "),
        ("bad-label-half", "label 2.5 "),
    ] {
        let path = scipy_case(&py, dir.path(), case);
        let e = err(&path);
        assert!(
            e.contains(&format!("{case}.mat', record 6"))
                && e.contains(shown)
                && e.contains("(index 6)")
                && e.contains("outside 1..=10"),
            "{e}"
        );
    }
}

#[test]
#[ignore = "needs the reference Python (cargo xtask test runs it)"]
fn missing_or_misshapen_variables_are_named() {
    let Some(py) = fair_testkit::reference_python("the SciPy SVHN cross-check") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "missing-y",
            &["missing-y.mat", "no variable named 'y'", "found X, labels"][..],
        ),
        ("missing-X", &["no variable named 'X'", "found y"]),
        (
            "x-wrong-shape",
            &["X (the images: uint8 of shape (32, 32, 3, N)) has shape (28, 28, 1, 4)"],
        ),
        (
            "x-double",
            &["X (the images", "is double of shape (32, 32, 3, 2)"],
        ),
        ("y-count", &["y declares 3 labels, for 4 images in X"]),
    ];
    for (case, wanted) in cases {
        let e = err(&scipy_case(&py, dir.path(), case));
        for w in wanted {
            assert!(e.contains(w), "{case}: {e:?} lacks {w:?}");
        }
    }
}

#[test]
#[ignore = "needs the reference Python (cargo xtask test runs it)"]
fn truncated_files_are_refused() {
    let Some(py) = fair_testkit::reference_python("the SciPy SVHN cross-check") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    for case in [
        "compressed-uint8",
        "plain-double",
        "compressed-double-reordered",
    ] {
        let whole = std::fs::read(scipy_case(&py, dir.path(), case)).unwrap();
        let cut = dir.path().join("cut.mat");
        let n = whole.len();
        for len in [0, 100, 128, 131, 136, 150, 300, n / 2, n - 8, n - 1] {
            std::fs::write(&cut, &whole[..len]).unwrap();
            let e = err(&cut);
            assert!(
                e.contains("cut.mat") && e.contains("truncated"),
                "{case} cut to {len} of {n} bytes: {e}"
            );
        }
    }
}

// Hand-built files (no Python needed): MATLAB v7.3, non-MAT files and zlib bombs.

/// A MAT v5 header (little-endian).
fn header() -> Vec<u8> {
    let mut h = b"MATLAB 5.0 MAT-file, written by the fair-data tests".to_vec();
    h.resize(124, b' ');
    h.extend([0, 1]);
    h.extend(b"IM");
    h
}

/// The little-endian bytes of a matrix element named `name` of class `class`, its data
/// element declaring `data_len` bytes of type `ty` (the data itself is not included).
fn matrix_head(class: u32, dims: &[i32], name: &str, ty: u32, data_len: u32) -> Vec<u8> {
    let pad = |v: &mut Vec<u8>| v.resize(v.len().div_ceil(8) * 8, 0);
    let mut body = Vec::new();
    for w in [6u32, 8, class, 0, 5, 4 * dims.len() as u32] {
        body.extend(w.to_le_bytes());
    }
    for &d in dims {
        body.extend(d.to_le_bytes());
    }
    pad(&mut body);
    body.extend(1u32.to_le_bytes());
    body.extend((name.len() as u32).to_le_bytes());
    body.extend(name.as_bytes());
    pad(&mut body);
    body.extend(ty.to_le_bytes());
    body.extend(data_len.to_le_bytes());
    // The matrix's declared length covers the data (padded to 8).
    let total = body.len() as u64 + u64::from(data_len).div_ceil(8) * 8;
    let mut out = Vec::new();
    out.extend(14u32.to_le_bytes());
    out.extend((total.min(u64::from(u32::MAX)) as u32).to_le_bytes());
    out.extend(body);
    out
}

/// A compressed element whose zlib stream holds `head` then `zeros` zero bytes (built in
/// chunks: the test never holds the inflated stream).
fn compressed(head: &[u8], zeros: usize) -> Vec<u8> {
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    z.write_all(head).unwrap();
    let chunk = vec![0u8; 1 << 20];
    for _ in 0..zeros / chunk.len() {
        z.write_all(&chunk).unwrap();
    }
    z.write_all(&chunk[..zeros % chunk.len()]).unwrap();
    let stream = z.finish().unwrap();
    let mut out = Vec::new();
    out.extend(15u32.to_le_bytes());
    out.extend((stream.len() as u32).to_le_bytes());
    out.extend(stream);
    out
}

use fair_testkit::peak_rss;

#[test]
fn hand_built_files_load() {
    // The hand-built writer makes loadable files (so the refusals below are for what they
    // test): one image whose pixel at column-major index k is k % 251, label 10.
    let pixels: Vec<u8> = (0..3072).map(|k| (k % 251) as u8).collect();
    let mut x = matrix_head(9, &[32, 32, 3, 1], "X", 2, 3072);
    x.extend(&pixels);
    let mut y = matrix_head(6, &[1, 1], "y", 9, 8);
    y.extend(10f64.to_le_bytes());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("one.mat");
    std::fs::write(&path, [header(), compressed(&x, 0), y].concat()).unwrap();
    let d = load_svhn(&path).unwrap();
    assert_eq!(d.labels, [0]);
    // Row 3, column 5, channel 2: column-major 3 + 32·5 + 1024·2 = 2211 → 2211 % 251.
    assert_eq!(d.pixels[1024 * 2 + 32 * 3 + 5], (2211 % 251) as u8);
}

#[test]
fn matlab_v73_files_are_refused_with_how_to_convert_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("train_32x32.mat");
    // MATLAB's v7.3 header: text, version 0x0200, "IM"; the HDF5 superblock at 512.
    let mut f = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 \
                  HDF5 schema 1.00 ."
        .to_vec();
    f.resize(124, b' ');
    f.extend([0, 2]);
    f.extend(b"IM");
    f.resize(512, 0);
    f.extend(b"\x89HDF\r\n\x1a\n");
    f.resize(2048, 0);
    std::fs::write(&path, &f).unwrap();
    let e = err(&path);
    for w in [
        "train_32x32.mat",
        "MATLAB v7.3",
        "HDF5",
        "not supported",
        "'-v7'",
        "h5py",
        "scipy.io.savemat",
        "do_compression=True",
    ] {
        assert!(e.contains(w), "{e:?} lacks {w:?}");
    }
    // The HDF5 signature alone (another header text) is recognised too.
    f[..10].copy_from_slice(b"HDF5 file ");
    f[124..126].copy_from_slice(&[0, 1]);
    std::fs::write(&path, &f).unwrap();
    assert!(err(&path).contains("MATLAB v7.3"), "{}", err(&path));
}

#[test]
fn files_that_are_not_mat_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.mat");
    std::fs::write(&path, vec![b'a'; 300]).unwrap();
    let e = err(&path);
    assert!(e.contains("not a MATLAB v5 MAT-file"), "{e}");
    // MATLAB v4 (a header of four int32 whose bytes include zeros).
    let mut v4 = vec![0u8; 300];
    v4[4] = 32;
    std::fs::write(&path, &v4).unwrap();
    assert!(err(&path).contains("MATLAB v4"), "{}", err(&path));
    // A directory is not opened.
    let e = err(dir.path());
    assert!(e.contains("expected an SVHN MAT-file"), "{e}");
}

#[test]
fn an_array_declared_beyond_the_budget_is_refused_before_inflating_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bomb.mat");
    // 2 million images of 3×32×32: 6.2 GB once loaded, over the 4 GiB budget.
    let x = matrix_head(9, &[32, 32, 3, 2_000_000], "X", 2, u32::MAX - 7);
    std::fs::write(&path, [header(), compressed(&x, 1 << 20)].concat()).unwrap();
    let e = err(&path);
    assert!(
        e.contains("bomb.mat")
            && e.contains("X declares 2000000 images of 3×32×32")
            && e.contains("MAX_IN_MEMORY_BYTES"),
        "{e}"
    );
    // Within the budget (3 GB), but more than its compressed bytes can inflate to: refused
    // before the buffer is allocated.
    let x = matrix_head(9, &[32, 32, 3, 1_000_000], "X", 2, 3_072_000_000);
    std::fs::write(&path, [header(), compressed(&x, 1 << 16)].concat()).unwrap();
    let e = err(&path);
    assert!(
        e.contains("X declares 3072000000 bytes of data, more than its")
            && e.contains("can inflate to"),
        "{e}"
    );
    // Uncompressed: the data must fit in the matrix element, which must fit in the file.
    std::fs::write(&path, [header(), x.clone()].concat()).unwrap();
    let e = err(&path);
    assert!(e.contains("truncated: the element declares"), "{e}");
}

#[test]
fn a_stream_inflating_past_its_matrix_is_refused_after_one_byte() {
    const ZEROS: usize = 256 << 20;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bomb.mat");
    // One image declared (3,072 bytes), 256 MB of zeros after it in the same stream.
    let mut x = matrix_head(9, &[32, 32, 3, 1], "X", 2, 3072);
    x.extend(vec![1u8; 3072]);
    let bomb = compressed(&x, ZEROS);
    assert!(bomb.len() < 1 << 20, "{} bytes compressed", bomb.len());
    let mut y = matrix_head(6, &[1, 1], "y", 9, 8);
    y.extend(3f64.to_le_bytes());
    std::fs::write(&path, [header(), bomb, y].concat()).unwrap();
    let before = peak_rss();
    let start = std::time::Instant::now();
    let e = err(&path);
    let took = start.elapsed();
    assert!(
        e.contains("bomb.mat")
            && e.contains("inflates to more than the")
            && e.contains("bytes of the matrix it declares"),
        "{e}"
    );
    // Inflating 256 MB takes far longer than the 3 KB declared.
    assert!(took.as_secs_f64() < 2.0, "took {took:?}");
    if let (Some(before), Some(after)) = (before, peak_rss()) {
        assert!(
            after - before < 32 << 20,
            "peak memory rose by {} MB",
            (after - before) >> 20
        );
    }
    // A variable that is not X or y is skipped without inflating it.
    let mut other = matrix_head(9, &[32, 32, 3, 1], "other", 2, 3072);
    other.extend(vec![1u8; 3072]);
    let mut x = matrix_head(9, &[32, 32, 3, 1], "X", 2, 3072);
    x.extend(vec![2u8; 3072]);
    let mut y = matrix_head(6, &[1, 1], "y", 9, 8);
    y.extend(3f64.to_le_bytes());
    let file = [header(), compressed(&other, ZEROS), compressed(&x, 0), y].concat();
    std::fs::write(&path, file).unwrap();
    let start = std::time::Instant::now();
    let d = load_svhn(&path).unwrap();
    assert!(start.elapsed().as_secs_f64() < 2.0, "{:?}", start.elapsed());
    assert_eq!((d.labels.as_slice(), d.pixels[0]), (&[3][..], 2));
}
