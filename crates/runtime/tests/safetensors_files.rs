//! Reading hostile, corrupt and odd safetensors files: what is refused, how fast, and with
//! which words; `check_finite`; and that good files still round-trip.
//!
//! The corrupt files are built here byte by byte (8-byte little-endian header length, JSON
//! header, data), so every expected number below comes from the construction, not from the
//! code under test.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use fair_runtime::{RuntimeError, check_finite, read_safetensors, write_safetensors};
use tch::{Device, Kind, Tensor};

/// Runs `f` on another thread and fails the test if it takes more than 10 s (so a read that
/// blocks on a FIFO or reads `/dev/zero` forever fails instead of hanging the suite).
fn within_10s<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(10))
        .unwrap_or_else(|_| panic!("{what} did not return within 10 s"))
}

/// Names of the safetensors error enum's variants: none may leak into a message.
const VARIANTS: [&str; 14] = [
    "InvalidHeader",
    "InvalidHeaderStart",
    "InvalidHeaderDeserialization",
    "HeaderTooLarge",
    "HeaderTooSmall",
    "InvalidHeaderLength",
    "TensorNotFound",
    "TensorInvalidInfo",
    "InvalidOffset",
    "IoError",
    "JsonError",
    "InvalidTensorView",
    "MetadataIncompleteBuffer",
    "ValidationOverflow",
];

/// Reads `path` (within 10 s), expects a `BadTensorFile` error naming the file, and returns
/// the message.
fn refusal(path: &Path) -> String {
    let p = path.to_owned();
    let result = within_10s(&format!("reading '{}'", path.display()), move || {
        read_safetensors(&p, Device::Cpu)
            .map(|t| t.len())
            .map_err(|e| {
                let bad = matches!(e, RuntimeError::BadTensorFile { .. });
                (bad, e.to_string())
            })
    });
    let (bad, text) = match result {
        Ok(n) => panic!("'{}' was read ({n} tensors)", path.display()),
        Err(e) => e,
    };
    assert!(bad, "not a BadTensorFile error: {text}");
    let prefix = format!("cannot read safetensors file '{}': ", path.display());
    assert!(text.starts_with(&prefix), "{text}");
    for v in VARIANTS {
        assert!(
            !text.contains(v),
            "the message shows the error code {v}: {text}"
        );
    }
    text[prefix.len()..].to_owned()
}

/// Writes `bytes` to `dir/name`.
fn raw(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// A safetensors file: the header's length (8 bytes, little-endian), the header, the data.
fn layout(header: &str, data: &[u8]) -> Vec<u8> {
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(data);
    bytes
}

fn file(dir: &Path, name: &str, header: &str, data: &[u8]) -> PathBuf {
    raw(dir, name, &layout(header, data))
}

/// `{"name":{"dtype":..,"shape":..,"data_offsets":[begin,end]}, ...}`
fn header(tensors: &[(&str, &str, &[u64], [u64; 2])]) -> String {
    let entries: Vec<String> = tensors
        .iter()
        .map(|(name, dtype, shape, [b, e])| {
            let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
            format!(
                r#""{name}":{{"dtype":"{dtype}","shape":[{}],"data_offsets":[{b},{e}]}}"#,
                dims.join(",")
            )
        })
        .collect();
    format!("{{{}}}", entries.join(","))
}

#[test]
fn dev_zero_is_refused_as_a_character_device_without_reading_it() {
    let text = refusal(Path::new("/dev/zero"));
    assert_eq!(text, "is a character device, expected a safetensors file");
}

#[test]
fn a_symlink_to_dev_zero_is_refused_like_dev_zero() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("w.safetensors");
    std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
    let text = refusal(&link);
    assert_eq!(text, "is a character device, expected a safetensors file");
}

#[test]
fn a_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("weights.safetensors");
    std::fs::create_dir(&sub).unwrap();
    let text = refusal(&sub);
    assert_eq!(text, "is a directory, expected a safetensors file");
}

#[test]
fn a_fifo_is_refused_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("pipe.safetensors");
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo runs");
    assert!(status.success(), "mkfifo failed");
    let text = refusal(&fifo);
    assert_eq!(text, "is a FIFO (named pipe), expected a safetensors file");
}

#[test]
fn a_missing_file_is_an_io_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent.safetensors");
    let e = read_safetensors(&path, Device::Cpu).unwrap_err();
    assert!(matches!(e, RuntimeError::Io { .. }), "{e}");
    assert!(e.to_string().contains(&path.display().to_string()), "{e}");
}

#[test]
fn a_file_shorter_than_the_length_prefix_is_truncated() {
    let dir = tempfile::tempdir().unwrap();
    for len in [0usize, 1, 7] {
        let path = raw(dir.path(), &format!("short{len}"), &vec![b'{'; len]);
        let text = refusal(&path);
        assert_eq!(
            text,
            format!(
                "truncated: the file has only {len} byte(s), fewer than the 8-byte header length"
            )
        );
    }
}

#[test]
fn a_truncated_file_reports_declared_and_present_sizes() {
    let dir = tempfile::tempdir().unwrap();
    // Hand-built: 'a' is F32 [2, 3] (24 bytes), 'b' is I64 [2] (16 bytes): 40 declared.
    let h = header(&[("a", "F32", &[2, 3], [0, 24]), ("b", "I64", &[2], [24, 40])]);
    for present in [0usize, 1, 24, 39] {
        let path = file(dir.path(), "cut.safetensors", &h, &vec![0u8; present]);
        assert_eq!(
            refusal(&path),
            format!(
                "truncated: the header declares 40 bytes of tensor data but the file has only \
                 {present}"
            )
        );
    }
    // A file written by fair-pruner and cut short: the declared size is the tensors' size.
    let tensors = vec![
        (
            "w".to_owned(),
            Tensor::ones([3, 4], (Kind::Float, Device::Cpu)),
        ),
        (
            "n".to_owned(),
            Tensor::arange(5, (Kind::Int64, Device::Cpu)),
        ),
    ];
    let declared = 3 * 4 * 4 + 5 * 8;
    let good = dir.path().join("good.safetensors");
    write_safetensors(&good, &tensors).unwrap();
    let bytes = std::fs::read(&good).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    assert_eq!(
        bytes.len(),
        8 + header_len + declared,
        "the file as written"
    );
    let cut = raw(dir.path(), "cut2.safetensors", &bytes[..bytes.len() - 10]);
    assert_eq!(
        refusal(&cut),
        format!(
            "truncated: the header declares {declared} bytes of tensor data but the file has \
             only {}",
            declared - 10
        )
    );
}

#[test]
fn a_header_length_beyond_the_file_size_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = 1000u64.to_le_bytes().to_vec();
    bytes.extend_from_slice(b"{\"a\":{}}            ");
    let size = bytes.len();
    let path = raw(dir.path(), "long.safetensors", &bytes);
    assert_eq!(
        refusal(&path),
        format!(
            "the header length (1000 bytes) exceeds the file size ({size} bytes, {} after the \
             8-byte header length)",
            size - 8
        )
    );
    // Random bytes: a garbage length of up to 2^64 - 1, refused without allocating it.
    let mut garbage = vec![0xA5u8; 4096];
    garbage[7] = 0xFF;
    let path = raw(dir.path(), "garbage.bin", &garbage);
    let declared = u64::from_le_bytes(garbage[..8].try_into().unwrap());
    assert!(refusal(&path).starts_with(&format!(
        "the header length ({declared} bytes) exceeds the file size (4096 bytes"
    )));
}

#[test]
fn a_header_length_beyond_the_safetensors_limit_is_refused_without_reading_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge.safetensors");
    let declared = 150_000_000u64;
    {
        let f = std::fs::File::create(&path).unwrap();
        std::io::Write::write_all(&mut &f, &declared.to_le_bytes()).unwrap();
        f.set_len(declared + 1000).unwrap(); // sparse: costs no disk
    }
    assert_eq!(
        refusal(&path),
        format!(
            "the header length ({declared} bytes) exceeds safetensors' limit of 100000000 bytes"
        )
    );
}

#[test]
fn tensor_data_beyond_the_available_memory_is_refused_before_reading_it() {
    // Twice the memory Linux says is available, in one U8 tensor of a sparse file.
    let Some(available) = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map(|kib| kib * 1024)
    else {
        eprintln!("skipped: the available memory is unknown");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge.safetensors");
    let n = 2 * available;
    let h = header(&[("big", "U8", &[n], [0, n])]);
    {
        let f = std::fs::File::create(&path).unwrap();
        std::io::Write::write_all(&mut &f, &layout(&h, &[])).unwrap();
        f.set_len(8 + h.len() as u64 + n).unwrap(); // sparse: costs no disk
    }
    let start = std::time::Instant::now();
    let text = refusal(&path);
    assert!(start.elapsed().as_secs_f64() < 2.0, "{:?}", start.elapsed());
    assert!(
        text.starts_with("its tensor data (")
            && text.contains("of memory available; nothing was read"),
        "{text}"
    );
}

#[test]
fn a_header_that_is_not_json_is_reported_with_where() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (r#"{"w": nope}"#, r#"{"w": "#.len()),
        (r#"{"w":{"dtype":"F32",}}"#, r#"{"w":{"dtype":"F32","#.len()),
        (r#"{"w":{"dtype" "F32"}}"#, r#"{"w":{"dtype" "#.len()),
        (r#"{"w":[1,2]} trailing"#, r#"{"w":[1,2]} "#.len()),
    ];
    for (h, at) in cases {
        let path = file(dir.path(), "json.safetensors", h, &[]);
        let text = refusal(&path);
        assert!(
            text.starts_with("the header is not valid JSON: "),
            "{h}: {text}"
        );
        assert!(
            text.contains(&format!("at byte {at} of the header")),
            "{h}: {text}"
        );
    }
    let path = file(dir.path(), "start.safetensors", "[1, 2, 3]", &[]);
    assert_eq!(
        refusal(&path),
        "the header is not valid JSON: it must be a JSON object starting with '{', but it \
         starts with '['"
    );
    let path = file(dir.path(), "empty.safetensors", "", &[]);
    assert_eq!(refusal(&path), "the header is not valid JSON: it is empty");
    let mut bytes = layout("{\"w\":1}", &[]);
    bytes[10] = 0xFF; // inside the header, which starts at byte 8
    let path = raw(dir.path(), "utf8.safetensors", &bytes);
    assert_eq!(
        refusal(&path),
        "the header is not valid UTF-8 (bad byte at offset 2 of the header)"
    );
}

#[test]
fn offsets_beyond_the_data_section_name_the_tensor() {
    let dir = tempfile::tempdir().unwrap();
    // 'a' fits, 'b' points far past the 16 bytes of data (not merely a cut-off file).
    let h = header(&[("a", "F32", &[2], [0, 8]), ("b", "F32", &[2], [64, 72])]);
    let path = file(dir.path(), "range.safetensors", &h, &[0u8; 16]);
    assert_eq!(
        refusal(&path),
        "tensor 'b' declares offsets [64, 72) beyond the data section of 16 bytes"
    );
}

#[test]
fn a_dtype_and_shape_that_disagree_with_the_offsets_name_the_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let (rows, cols, f32_size, span) = (2u64, 3u64, 4u64, 20u64);
    let h = header(&[("x", "F32", &[rows, cols], [0, span])]);
    let path = file(
        dir.path(),
        "size.safetensors",
        &h,
        &vec![0u8; span as usize],
    );
    assert_eq!(
        refusal(&path),
        format!(
            "tensor 'x' has shape [{rows}, {cols}] of dtype F32 = {} bytes but its offsets \
             span {span} bytes",
            rows * cols * f32_size
        )
    );
}

#[test]
fn layout_and_entry_problems_name_the_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let data = [0u8; 64];
    let f32x2: &[u64] = &[2];
    let cases: Vec<(String, usize, String)> = vec![
        (
            header(&[("a", "F32", f32x2, [0, 8]), ("b", "F32", f32x2, [12, 20])]),
            20,
            "4 unused byte(s) lie between tensor 'a' (offsets [0, 8)) and tensor 'b' (offsets \
             [12, 20)); tensors must be packed without gaps"
                .into(),
        ),
        (
            header(&[("a", "F32", f32x2, [0, 8]), ("b", "F32", f32x2, [4, 12])]),
            12,
            "tensor 'b' (offsets [4, 12)) overlaps tensor 'a' (offsets [0, 8))".into(),
        ),
        (
            header(&[("a", "F32", f32x2, [4, 12])]),
            12,
            "tensor 'a' begins at byte 4 of the data section, but the first tensor must begin \
             at byte 0"
                .into(),
        ),
        (
            header(&[("a", "F32", f32x2, [0, 8])]),
            11,
            "the file has 3 unexpected byte(s) after the last tensor: the header declares 8 \
             bytes of tensor data, the file holds 11"
                .into(),
        ),
        (
            header(&[("a", "F32", f32x2, [8, 0])]),
            8,
            "tensor 'a' declares offsets [8, 0) that end before they begin".into(),
        ),
        (
            header(&[("a", "F8", f32x2, [0, 2])]),
            2,
            "tensor 'a' has unknown dtype \"F8\" (safetensors knows BOOL, U8, I8, I16, U16, \
             F16, BF16, I32, U32, F32, F64, I64, U64)"
                .into(),
        ),
        (
            header(&[("a", "U16", f32x2, [0, 4])]),
            4,
            "tensor 'a' has dtype U16, which fair-pruner cannot load (it loads BOOL, U8, I8, \
             I16, I32, I64, F16, BF16, F32, F64)"
                .into(),
        ),
        (
            header(&[("a", "F32", &[1 << 40, 1 << 40], [0, 8])]),
            8,
            format!(
                "tensor 'a' has shape [{0}, {0}] of dtype F32, whose size in bytes overflows",
                1u64 << 40
            ),
        ),
        (
            r#"{"a":{"dtype":"F32","data_offsets":[0,4]}}"#.into(),
            4,
            "tensor 'a' has no \"shape\"".into(),
        ),
        (
            r#"{"a":{"dtype":"F32","shape":[1],"shape":[1],"data_offsets":[0,4]}}"#.into(),
            4,
            "tensor 'a' lists \"shape\" more than once".into(),
        ),
        (
            r#"{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}"#.into(),
            4,
            "tensor 'a' has a shape that is not a list of non-negative integers".into(),
        ),
        (
            r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4,8]}}"#.into(),
            4,
            "tensor 'a' has \"data_offsets\" that are not a pair [begin, end] of non-negative \
             integers"
                .into(),
        ),
        (
            r#"{"a":[1,2]}"#.into(),
            0,
            "tensor 'a' must be described by an object with \"dtype\", \"shape\" and \
             \"data_offsets\", but it is an array"
                .into(),
        ),
        (
            r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#.into(),
            8,
            "tensor 'a' appears more than once in the header".into(),
        ),
        (
            r#"{"__metadata__":{"format":1}}"#.into(),
            0,
            "the header's \"__metadata__\" must map names to strings, but \"format\" is a number"
                .into(),
        ),
    ];
    for (i, (h, data_len, expected)) in cases.iter().enumerate() {
        let path = file(dir.path(), &format!("case{i}"), h, &data[..*data_len]);
        assert_eq!(&refusal(&path), expected, "header {h}");
    }
}

#[test]
fn a_hand_built_file_with_padding_metadata_and_escapes_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    // JSON as other writers produce it: spaces, metadata, unknown fields, escaped names,
    // entries out of offset order, and space padding after the object.
    let h = "{ \"__metadata__\" : {\"format\":\"pt\", \"note\":\"\\u00e9\"},\n\
             \"b\\u002ex\" : {\"shape\":[3], \"dtype\":\"I64\", \"data_offsets\":[8,32], \"extra\":[{}]},\n\
             \"a\" : {\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\n\
             \"e\" : {\"dtype\":\"U8\",\"shape\":[0,5],\"data_offsets\":[32,32]} }       ";
    let mut data = Vec::new();
    for v in [1.5f32, -2.25] {
        data.extend_from_slice(&v.to_le_bytes());
    }
    for v in [7i64, -8, 9] {
        data.extend_from_slice(&v.to_le_bytes());
    }
    let path = file(dir.path(), "ok.safetensors", h, &data);
    let t = read_safetensors(&path, Device::Cpu).unwrap();
    let names: Vec<&str> = t.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["a", "b.x", "e"]);
    assert_eq!(Vec::<f32>::try_from(&t[0].1).unwrap(), [1.5, -2.25]);
    assert_eq!(Vec::<i64>::try_from(&t[1].1).unwrap(), [7, -8, 9]);
    assert_eq!(t[2].1.size(), [0, 5]);
    assert_eq!(t[2].1.kind(), Kind::Uint8);
}

/// Whatever one-byte edit is made to a good header, `read_safetensors` accepts the file
/// exactly when safetensors itself does: the up-front checks refuse nothing that
/// safetensors reads. (A unit test in fair-safetensors checks the other direction, that they
/// catch everything safetensors refuses.)
#[test]
fn the_up_front_checks_agree_with_safetensors_on_every_one_byte_edit() {
    let dir = tempfile::tempdir().unwrap();
    let h = r#"{"__metadata__":{"format":"pt"},"alpha":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},"beta":{"dtype":"I64","shape":[2],"data_offsets":[24,40]},"gamma":{"dtype":"U8","shape":[0],"data_offsets":[40,40]}}  "#;
    let data = [3u8; 40];
    let good = layout(h, &data);
    let path = dir.path().join("edit.safetensors");
    let mut files: Vec<Vec<u8>> = Vec::new();
    let replacements = b" 019\",:{}[]x\\.-e\x01\xff";
    for i in 8..8 + h.len() {
        for &r in replacements {
            let mut b = good.clone();
            b[i] = r;
            files.push(b);
        }
        // Deleting or inserting a byte, with the length prefix kept or adjusted.
        let mut del = good.clone();
        del.remove(i);
        files.push(del.clone());
        del[..8].copy_from_slice(&(h.len() as u64 - 1).to_le_bytes());
        files.push(del);
        let mut ins = good.clone();
        ins.insert(i, b'0');
        files.push(ins.clone());
        ins[..8].copy_from_slice(&(h.len() as u64 + 1).to_le_bytes());
        files.push(ins);
    }
    for cut in 0..good.len() {
        files.push(good[..cut].to_vec());
    }
    let (mut accepted, mut refused) = (0, 0);
    for bytes in &files {
        std::fs::write(&path, bytes).unwrap();
        let ours = read_safetensors(&path, Device::Cpu);
        let theirs = safetensors::SafeTensors::deserialize(bytes);
        assert_eq!(
            ours.is_ok(),
            theirs.is_ok(),
            "{:?}\nours: {:?}\nsafetensors: {:?}",
            String::from_utf8_lossy(bytes),
            ours.as_ref().err().map(|e| e.to_string()),
            theirs.as_ref().err()
        );
        if ours.is_ok() {
            accepted += 1;
        } else {
            refused += 1;
        }
    }
    // Both outcomes occur, so the comparison means something.
    assert!(accepted > 100 && refused > 100, "{accepted} / {refused}");
}

#[test]
fn a_round_trip_keeps_names_kinds_shapes_and_values() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rt.safetensors");
    tch::manual_seed(3);
    let cpu = Device::Cpu;
    let tensors = vec![
        (
            "f32".to_owned(),
            Tensor::randn([4, 3, 2], (Kind::Float, cpu)),
        ),
        ("f64".to_owned(), Tensor::randn([5], (Kind::Double, cpu))),
        ("f16".to_owned(), Tensor::randn([2, 2], (Kind::Half, cpu))),
        ("bf16".to_owned(), Tensor::randn([3], (Kind::BFloat16, cpu))),
        (
            "i64".to_owned(),
            Tensor::arange(6, (Kind::Int64, cpu)).view([2, 3]),
        ),
        ("i32".to_owned(), Tensor::arange(4, (Kind::Int, cpu))),
        ("u8".to_owned(), Tensor::arange(7, (Kind::Uint8, cpu))),
        (
            "bool".to_owned(),
            Tensor::arange(4, (Kind::Int64, cpu)).gt(1),
        ),
        ("scalar".to_owned(), Tensor::from(2.5f32)),
        (
            "empty".to_owned(),
            Tensor::zeros([0, 3], (Kind::Float, cpu)),
        ),
        // Not contiguous: written as its logical values.
        (
            "t".to_owned(),
            Tensor::randn([3, 2], (Kind::Float, cpu)).tr(),
        ),
    ];
    write_safetensors(&path, &tensors).unwrap();
    let back = read_safetensors(&path, cpu).unwrap();
    let mut expected: Vec<&(String, Tensor)> = tensors.iter().collect();
    expected.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(back.len(), expected.len());
    for ((name, t), (want_name, want)) in back.iter().zip(expected) {
        assert_eq!(name, want_name);
        assert_eq!(t.kind(), want.kind(), "{name}");
        assert_eq!(t.size(), want.size(), "{name}");
        assert!(t.equal(want), "{name}");
    }
    // No temporary file is left next to it.
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(left.len(), 1);
}

#[test]
fn a_model_without_tensors_writes_a_valid_empty_file() {
    // safetensors 0.3 serialises an empty map as `{},"__metadata__":…}`, which PyTorch's
    // reader refuses ("trailing characters"); the file must be one JSON object.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("empty.safetensors");
    write_safetensors(&path, &[]).unwrap();
    let header = br#"{"__metadata__":{"format":"pt"}}"#;
    let mut want = (header.len() as u64).to_le_bytes().to_vec();
    want.extend_from_slice(header);
    assert_eq!(std::fs::read(&path).unwrap(), want);
    assert!(read_safetensors(&path, Device::Cpu).unwrap().is_empty());
}

#[test]
fn writing_refuses_to_replace_a_directory_or_a_fifo_or_an_unsupported_kind() {
    let dir = tempfile::tempdir().unwrap();
    let tensors = [(
        "w".to_owned(),
        Tensor::ones([2], (Kind::Float, Device::Cpu)),
    )];
    let sub = dir.path().join("sub");
    std::fs::create_dir(&sub).unwrap();
    let fifo = dir.path().join("pipe");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    for (path, what) in [(&sub, "is a directory"), (&fifo, "is a FIFO (named pipe)")] {
        let p = path.clone();
        let t: Vec<(String, Tensor)> = tensors.iter().map(|(n, t)| (n.clone(), t.copy())).collect();
        let e = within_10s("writing", move || {
            write_safetensors(&p, &t).map_err(|e| {
                (
                    matches!(e, RuntimeError::BadTensorWrite { .. }),
                    e.to_string(),
                )
            })
        })
        .unwrap_err();
        assert!(e.0, "{}", e.1);
        assert_eq!(
            e.1,
            format!(
                "cannot write safetensors file '{}': {what}; refusing to replace it with a \
                 safetensors file",
                path.display()
            )
        );
    }
    assert!(sub.is_dir());
    let complex = vec![(
        "c".to_owned(),
        Tensor::ones([2], (Kind::ComplexFloat, Device::Cpu)),
    )];
    let target = dir.path().join("c.safetensors");
    let e = write_safetensors(&target, &complex)
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("cannot write safetensors file"), "{e}");
    assert!(e.contains("tensor 'c' has kind ComplexFloat"), "{e}");
    assert!(!target.exists());
    // Nothing else was created: only 'sub' and 'pipe'.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
}

#[test]
fn check_finite_names_every_offending_tensor_with_counts() {
    let (nan, inf) = (f32::NAN, f32::INFINITY);
    let tensors = vec![
        (
            "features.0.weight".to_owned(),
            Tensor::from_slice(&[1.0, nan, nan, 2.0, nan, -inf]).view([2, 3]),
        ),
        (
            "features.0.bias".to_owned(),
            Tensor::from_slice(&[0.5f32, 1.0]),
        ),
        (
            "classifier.weight".to_owned(),
            Tensor::from_slice(&[f64::INFINITY, f64::NEG_INFINITY, 0.0]),
        ),
        (
            "half".to_owned(),
            Tensor::from_slice(&[0.0f32, nan]).to_kind(Kind::Half),
        ),
        ("num_batches".to_owned(), Tensor::from_slice(&[3i64])),
    ];
    let source = Path::new("/some/where/w.safetensors");
    let e = check_finite(&tensors, source).unwrap_err();
    let RuntimeError::NonFiniteWeights { path, problems } = &e else {
        panic!("{e}");
    };
    assert_eq!(path, source);
    assert_eq!(
        problems,
        &[
            "tensor 'features.0.weight' holds 3 NaN and 1 infinite value(s) (of 6)",
            "tensor 'classifier.weight' holds 0 NaN and 2 infinite value(s) (of 3)",
            "tensor 'half' holds 1 NaN and 0 infinite value(s) (of 2)",
        ]
    );
    let text = e.to_string();
    assert!(
        text.starts_with(
            "weights file '/some/where/w.safetensors' holds non-finite values in 3 tensor(s):"
        ),
        "{text}"
    );
    for p in problems {
        assert!(text.contains(p.as_str()), "{text}");
    }
}

#[test]
fn check_finite_accepts_finite_floats_and_ignores_integers() {
    let cpu = Device::Cpu;
    let tensors = vec![
        ("w".to_owned(), Tensor::randn([3, 3], (Kind::Float, cpu))),
        (
            "big".to_owned(),
            Tensor::from_slice(&[f32::MAX, f32::MIN, 0.0]),
        ),
        ("n".to_owned(), Tensor::from_slice(&[i64::MAX])),
        ("empty".to_owned(), Tensor::zeros([0], (Kind::Double, cpu))),
    ];
    check_finite(&tensors, Path::new("w.safetensors")).unwrap();
    check_finite(&[], Path::new("w.safetensors")).unwrap();
}

#[test]
fn check_finite_finds_values_written_to_and_read_back_from_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nan.safetensors");
    let w = Tensor::zeros([10], (Kind::Float, Device::Cpu));
    let _ = w.get(4).fill_(f64::NAN);
    let _ = w.get(7).fill_(f64::NEG_INFINITY);
    write_safetensors(&path, &[("layer.weight".to_owned(), w)]).unwrap();
    let back = read_safetensors(&path, Device::Cpu).unwrap();
    let e = check_finite(&back, &path).unwrap_err().to_string();
    assert!(e.contains(&path.display().to_string()), "{e}");
    assert!(
        e.contains("tensor 'layer.weight' holds 1 NaN and 1 infinite value(s) (of 10)"),
        "{e}"
    );
}

mod random_files {
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        /// Random headers and data: `read_safetensors` returns an error or tensors, never
        /// panics or aborts, and never allocates beyond the file.
        #[test]
        fn random_bytes_are_an_error_or_tensors(
            header in prop_oneof![
                ".{0,200}",
                Just(r#"{"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}}"#.to_owned()),
                Just(r#"{"w":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,16]}}"#.to_owned()),
                Just(r#"{"w":{"dtype":"I64","shape":[],"data_offsets":[0,8]},"__metadata__":{"a":"b"}}"#.to_owned()),
            ],
            declared in prop::option::of(any::<u64>()),
            data in prop::collection::vec(any::<u8>(), 0..64),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("x.safetensors");
            let len = declared.unwrap_or(header.len() as u64);
            let mut bytes = len.to_le_bytes().to_vec();
            bytes.extend(header.as_bytes());
            bytes.extend(&data);
            std::fs::write(&path, &bytes).unwrap();
            let _ = fair_runtime::read_safetensors(&path, tch::Device::Cpu);
        }
    }
}
