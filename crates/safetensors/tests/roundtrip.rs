//! Properties of the reader and writer on generated input: what is written reads back
//! exactly, and random bytes are an error or tensors, never a panic; a file we accept is one
//! the safetensors crate accepts too.

use std::collections::BTreeMap;

use fair_safetensors::{Dtype, SafetensorsError, SafetensorsFile, TensorRef};
use proptest::prelude::*;

/// A tensor to write: a name, a dtype, a shape, and bytes of exactly that size.
fn tensor() -> impl Strategy<Value = (String, Dtype, Vec<u64>, Vec<u8>)> {
    (
        "[a-z.é\"\\\\]{1,8}",
        prop::sample::select(Dtype::ALL.to_vec()),
        prop::collection::vec(0u64..4, 0..4),
    )
        .prop_flat_map(|(name, dtype, shape)| {
            let n = dtype.nbytes(&shape).unwrap() as usize;
            (
                Just(name),
                Just(dtype),
                Just(shape),
                prop::collection::vec(any::<u8>(), n..=n),
            )
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Whatever tensors and metadata are written, the file reads back with the same names,
    /// dtypes, shapes, bytes and metadata (plus `format = "pt"`), and the safetensors crate
    /// reads the same tensors from it.
    #[test]
    fn what_is_written_reads_back(
        tensors in prop::collection::vec(tensor(), 0..6),
        metadata in prop::collection::btree_map("[a-z_]{1,6}", ".{0,10}", 0..4),
    ) {
        let mut metadata: BTreeMap<String, String> = metadata;
        metadata.remove("format");
        let mut unique = BTreeMap::new();
        for t in tensors {
            unique.entry(t.0.clone()).or_insert(t);
        }
        let refs: Vec<TensorRef<'_>> = unique
            .values()
            .map(|(name, dtype, shape, data)| TensorRef { name, dtype: *dtype, shape, data })
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.safetensors");
        fair_safetensors::write(&path, &refs, &metadata).unwrap();

        let mut file = SafetensorsFile::open(&path).unwrap();
        let mut want = metadata.clone();
        want.insert("format".into(), "pt".into());
        prop_assert_eq!(file.header().metadata(), &want);
        prop_assert_eq!(file.tensors().len(), unique.len());
        for (name, dtype, shape, data) in unique.values() {
            let info = file.header().tensor(name).unwrap().clone();
            prop_assert_eq!(info.dtype, *dtype);
            prop_assert_eq!(&info.shape, shape);
            let read = file.read_tensor(name).unwrap();
            prop_assert_eq!(read.as_ref(), Some(data));
        }
        let bytes = std::fs::read(&path).unwrap();
        let theirs = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        for (name, _, _, data) in unique.values() {
            prop_assert_eq!(theirs.tensor(name).unwrap().data(), data.as_slice());
        }
        // The same content gives the same bytes.
        let again = fair_safetensors::to_bytes(&path, &refs, &metadata).unwrap();
        prop_assert_eq!(again, bytes);
    }

    /// Random headers and data: opening and reading every tensor returns an error or the
    /// tensors, never panics, and what is accepted the safetensors crate accepts too.
    #[test]
    fn random_bytes_are_an_error_or_tensors(
        header in prop_oneof![
            ".{0,200}",
            Just(r#"{"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}}"#.to_owned()),
            Just(r#"{"w":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,16]}}"#.to_owned()),
            Just(r#"{"w":{"dtype":"I64","shape":[],"data_offsets":[0,8]},"__metadata__":{"a":"b"}}"#.to_owned()),
            "\\{\"[a-z]{1,2}\":\\{\"dtype\":\"(U8|F32|X)\",\"shape\":\\[[0-9,]{0,4}\\],\"data_offsets\":\\[[0-9,]{0,5}\\]\\}\\} {0,3}",
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
        match SafetensorsFile::open(&path) {
            Ok(mut file) => {
                prop_assert!(safetensors::SafeTensors::deserialize(&bytes).is_ok());
                let names: Vec<String> = file.tensors().iter().map(|t| t.name.clone()).collect();
                for name in names {
                    prop_assert!(file.read_tensor(&name).unwrap().is_some());
                }
            }
            Err(e) => {
                prop_assert!(matches!(e, SafetensorsError::Malformed { .. }), "{}", e);
                prop_assert!(e.to_string().contains("x.safetensors"));
            }
        }
    }
}

#[test]
fn special_files_are_refused_by_name_unopened() {
    let e = SafetensorsFile::open("/dev/zero".as_ref()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "cannot read safetensors file '/dev/zero': is a character device, expected a \
         safetensors file"
    );
    let dir = tempfile::tempdir().unwrap();
    let e = SafetensorsFile::open(dir.path()).unwrap_err().to_string();
    assert!(
        e.ends_with("is a directory, expected a safetensors file"),
        "{e}"
    );
    // A missing file is an I/O error naming it.
    let missing = dir.path().join("absent.safetensors");
    let e = SafetensorsFile::open(&missing).unwrap_err();
    assert!(
        matches!(&e, SafetensorsError::Io { source, .. }
            if source.kind() == std::io::ErrorKind::NotFound),
        "{e}"
    );
    // Nor is a directory replaced by a write.
    let sub = dir.path().join("sub");
    std::fs::create_dir(&sub).unwrap();
    let e = fair_safetensors::write(&sub, &[], &BTreeMap::new()).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "cannot write safetensors file '{}': is a directory; refusing to replace it with \
             a safetensors file",
            sub.display()
        )
    );
    assert!(sub.is_dir());
}

#[test]
fn reading_in_chunks_gives_the_same_bytes_in_any_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.safetensors");
    let a: Vec<u8> = (0..40).collect();
    let b: Vec<u8> = (100..108).collect();
    let tensors = [
        TensorRef {
            name: "a",
            dtype: Dtype::F32,
            shape: &[10],
            data: &a,
        },
        TensorRef {
            name: "b",
            dtype: Dtype::I64,
            shape: &[1],
            data: &b,
        },
    ];
    fair_safetensors::write(&path, &tensors, &BTreeMap::new()).unwrap();
    let mut file = SafetensorsFile::open(&path).unwrap();
    let names: Vec<&str> = file.tensors().iter().map(|t| t.name.as_str()).collect();
    // I64 sorts before F32 in safetensors' layout.
    assert_eq!(names, ["b", "a"]);
    let mut chunk = [0u8; 7];
    file.read_chunk(1, 30, &mut chunk).unwrap();
    assert_eq!(chunk, a[30..37]);
    file.read_chunk(0, 1, &mut chunk).unwrap();
    assert_eq!(chunk, b[1..8]);
    file.read_chunk(1, 0, &mut chunk).unwrap();
    assert_eq!(chunk, a[..7]);
    // A file that shrinks after its header was read: the read says so.
    let full = std::fs::read(&path).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(full.len() as u64 - 5)
        .unwrap();
    let mut rest = [0u8; 10];
    let e = file.read_chunk(1, 30, &mut rest).unwrap_err().to_string();
    assert!(
        e.contains("truncated: the file shrank while being read"),
        "{e}"
    );
}
