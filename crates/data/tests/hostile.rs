//! Hostile files: special files where data files are expected (a FIFO, `/dev/zero`), IDX
//! files whose size disagrees with their header, an image header declaring a decompression
//! bomb, and the ranges error messages print. Each must end in an error naming the file,
//! within seconds.

#![cfg(unix)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use fair_data::{
    Cifar, DataError, Dataset, FolderOptions, ImageFolder, ImageSource, Transform, load_cifar,
    load_idx, load_image_folder,
};

/// Runs `f` on another thread and returns its result, failing the test if it takes longer
/// than 20 s (a read blocked on a FIFO never returns).
fn within<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(20))
        .unwrap_or_else(|_| panic!("{what} did not return within 20 s: it blocked"))
}

fn mkfifo(path: &Path) {
    let status = Command::new("mkfifo").arg(path).status().unwrap();
    assert!(status.success(), "mkfifo {}", path.display());
}

fn idx(magic: u8, dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut v = vec![0, 0, 8, magic];
    for d in dims {
        v.extend(d.to_be_bytes());
    }
    v.extend_from_slice(data);
    v
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

fn png(path: &Path, w: u32, h: u32) {
    image::GrayImage::from_pixel(w, h, image::Luma([90]))
        .save(path)
        .unwrap();
}

/// The message of an error, checked to name `file` and to say `says`.
fn says(e: DataError, file: &str, says: &str) {
    let text = e.to_string();
    assert!(text.contains(file) && text.contains(says), "{text}");
}

#[test]
fn special_files_as_idx_files_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let good_images = dir.path().join("images");
    let good_labels = dir.path().join("labels");
    std::fs::write(&good_images, idx(3, &[1, 2, 2], &[1, 2, 3, 4])).unwrap();
    std::fs::write(&good_labels, idx(1, &[1], &[0])).unwrap();
    assert!(load_idx(&good_images, &good_labels, 10).is_ok());

    let fifo = dir.path().join("train-images-idx3-ubyte");
    mkfifo(&fifo);
    let fifo_gz = dir.path().join("train-labels-idx1-ubyte.gz");
    mkfifo(&fifo_gz);
    let zero = dir.path().join("t10k-images-idx3-ubyte.gz");
    std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
    let cases: Vec<(PathBuf, PathBuf, &str, &str)> = vec![
        (
            fifo.clone(),
            good_labels.clone(),
            "train-images-idx3-ubyte",
            "a FIFO",
        ),
        (
            good_images.clone(),
            fifo_gz.clone(),
            "train-labels-idx1-ubyte.gz",
            "a FIFO",
        ),
        (
            zero.clone(),
            good_labels.clone(),
            "t10k-images-idx3-ubyte.gz",
            "a character device",
        ),
        (
            "/dev/zero".into(),
            good_labels.clone(),
            "/dev/zero",
            "a character device",
        ),
        (
            good_images.clone(),
            "/dev/zero".into(),
            "/dev/zero",
            "a character device",
        ),
        (
            dir.path().to_owned(),
            good_labels.clone(),
            "",
            "a directory",
        ),
    ];
    for (images, labels, file, kind) in cases {
        let e = within("load_idx", move || load_idx(&images, &labels, 10)).unwrap_err();
        says(e, file, kind);
    }
}

#[test]
fn special_files_as_cifar_batches_and_class_names_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let mut record = vec![3u8];
    record.extend(std::iter::repeat_n(1u8, 3072));
    std::fs::write(dir.path().join("test_batch.bin"), &record).unwrap();
    assert_eq!(load_cifar(dir.path(), Cifar::Ten, false).unwrap().len(), 1);

    // The class-names file as a FIFO: reading it would block.
    mkfifo(&dir.path().join("batches.meta.txt"));
    let d = dir.path().to_owned();
    let e = within("load_cifar", move || load_cifar(&d, Cifar::Ten, false)).unwrap_err();
    says(e, "batches.meta.txt", "a FIFO");
    std::fs::remove_file(dir.path().join("batches.meta.txt")).unwrap();

    // A batch as a FIFO, and as /dev/zero (which would be read until memory runs out).
    mkfifo(&dir.path().join("data_batch_1.bin"));
    let d = dir.path().to_owned();
    let e = within("load_cifar", move || load_cifar(&d, Cifar::Ten, true)).unwrap_err();
    says(e, "data_batch_1.bin", "a FIFO");
    std::os::unix::fs::symlink("/dev/zero", dir.path().join("test.bin")).unwrap();
    let d = dir.path().to_owned();
    // (`.err()`: an accepted dataset is not printed, 4 GB of pixels.)
    let e = within("load_cifar", move || {
        load_cifar(&d, Cifar::Hundred, false).err()
    })
    .expect("a split over the budget was accepted");
    says(e, "test.bin", "a character device");
}

#[test]
fn a_fifo_or_device_named_as_an_image_is_refused_when_indexing() {
    let dir = tempfile::tempdir().unwrap();
    let cat = dir.path().join("cat");
    std::fs::create_dir_all(&cat).unwrap();
    png(&cat.join("a.png"), 4, 3);
    mkfifo(&cat.join("foo.png"));
    let root = dir.path().to_owned();
    let e = within("ImageFolder::open", move || ImageFolder::open(&root)).unwrap_err();
    says(e, "foo.png", "a FIFO");
    let root = dir.path().to_owned();
    let e = within("load_image_folder", move || {
        load_image_folder(&root, 1, 2, 2, &FolderOptions::default())
    })
    .unwrap_err();
    says(e, "foo.png", "a FIFO");
    std::fs::remove_file(cat.join("foo.png")).unwrap();

    // A link named as an image that leads to a device.
    std::os::unix::fs::symlink("/dev/zero", cat.join("zero.jpg")).unwrap();
    let root = dir.path().to_owned();
    let e = within("ImageFolder::open", move || ImageFolder::open(&root)).unwrap_err();
    says(e, "zero.jpg", "a character device");
    std::fs::remove_file(cat.join("zero.jpg")).unwrap();

    // A FIFO that is not named as an image is never opened, so it is harmless.
    mkfifo(&cat.join("notes.txt"));
    let folder = ImageFolder::open(dir.path()).unwrap();
    assert_eq!(folder.len(), 1);

    // An image swapped for a FIFO after indexing: the batch refuses it instead of blocking.
    std::fs::remove_file(cat.join("a.png")).unwrap();
    mkfifo(&cat.join("a.png"));
    let e = within("ImageFolder::batch", move || {
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(0);
        folder
            .batch(&Transform::default(), &[0], [1, 2, 2], false, &mut rng)
            .map(|_| ())
    })
    .unwrap_err();
    says(e, "a.png", "a FIFO");
}

#[test]
fn a_saved_dataset_that_is_a_special_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("cache.safetensors");
    mkfifo(&p);
    let q = p.clone();
    let e = within("Dataset::load", move || Dataset::load(&q)).unwrap_err();
    says(e, "cache.safetensors", "a FIFO");
    // Nor is it replaced by a save.
    let d = Dataset::new("d", [1, 1, 1], vec![0], vec![0], vec!["a".into()]).unwrap();
    let e = d.save(&p).unwrap_err();
    says(e, "cache.safetensors", "FIFO");
}

#[test]
fn idx_files_must_hold_exactly_what_their_header_declares() {
    let dir = tempfile::tempdir().unwrap();
    let (im, lb) = (dir.path().join("img"), dir.path().join("lab"));
    std::fs::write(&lb, idx(1, &[2], &[0, 1])).unwrap();
    // Longer than declared, plain and gzip.
    std::fs::write(&im, idx(3, &[2, 2, 2], &[9; 9])).unwrap();
    says(
        load_idx(&im, &lb, 2).unwrap_err(),
        "img",
        "holds more than the 8 bytes its header declares (2 images of 2×2)",
    );
    let img_gz = dir.path().join("img.gz");
    std::fs::write(&img_gz, gz(&idx(3, &[2, 2, 2], &[9; 100]))).unwrap();
    says(
        load_idx(&img_gz, &lb, 2).unwrap_err(),
        "img.gz",
        "decompresses to more than the 8 bytes its header declares",
    );
    // Shorter than declared: truncated, naming the image it ends in.
    std::fs::write(&img_gz, gz(&idx(3, &[2, 2, 2], &[9; 6]))).unwrap();
    let e = load_idx(&img_gz, &lb, 2).unwrap_err().to_string();
    assert!(e.contains("record 1") && e.contains("truncated"), "{e}");
    // Exactly right, gzip.
    std::fs::write(&img_gz, gz(&idx(3, &[2, 2, 2], &[9; 8]))).unwrap();
    assert_eq!(load_idx(&img_gz, &lb, 2).unwrap().len(), 2);
    // Two gzip members are read as one stream (as zcat reads them): the second one counts.
    let two = [gz(&idx(3, &[2, 2, 2], &[9; 8])), gz(&[1, 2, 3])].concat();
    std::fs::write(&img_gz, two).unwrap();
    says(
        load_idx(&img_gz, &lb, 2).unwrap_err(),
        "img.gz",
        "decompresses to more than",
    );
    // A header declaring more than can be held is refused before anything is read.
    std::fs::write(&img_gz, gz(&idx(3, &[u32::MAX, u32::MAX, u32::MAX], &[]))).unwrap();
    says(
        load_idx(&img_gz, &lb, 2).unwrap_err(),
        "img.gz",
        "4294967295 images of 4294967295×4294967295, which take",
    );
    // The label count is compared from the header, before the labels are read.
    std::fs::write(&im, idx(3, &[2, 2, 2], &[9; 8])).unwrap();
    std::fs::write(&lb, idx(1, &[3], &[0; 5])).unwrap();
    says(
        load_idx(&im, &lb, 2).unwrap_err(),
        "lab",
        "3 labels for 2 images",
    );
}

/// 4 GiB: [`fair_data::MAX_IN_MEMORY_BYTES`], written out so the test checks its value.
const BUDGET: u64 = 4 << 30;

#[test]
fn idx_headers_over_the_in_memory_budget_are_refused_before_reading_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let (im, lb) = (dir.path().join("img.gz"), dir.path().join("lab.gz"));
    // Headers only (a few bytes of gzip); each load must end long before gigabytes could be
    // read or allocated.
    let load = |n: u32, h: u32, w: u32| {
        std::fs::write(&im, gz(&idx(3, &[n, h, w], &[]))).unwrap();
        std::fs::write(&lb, gz(&idx(1, &[n], &[]))).unwrap();
        let (im, lb) = (im.clone(), lb.clone());
        let start = std::time::Instant::now();
        let e = within("load_idx", move || load_idx(&im, &lb, 10)).unwrap_err();
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
        e.to_string()
    };
    // 1×1 images: 600 MB of pixels, 4.8 GB of labels as i64.
    let e = load(600_000_000, 1, 1);
    assert!(
        e.contains("img.gz")
            && e.contains("600000000 images of 1×1")
            && e.contains("which take 5400000000 bytes in memory")
            && e.contains(&format!("{BUDGET}-byte (4 GiB) budget")),
        "{e}"
    );
    // The pixels of 28×28 images fit; with their labels they do not.
    let n = 5_450_000;
    assert!(u64::from(n) * 784 <= BUDGET && u64::from(n) * (784 + 8) > BUDGET);
    let e = load(n, 28, 28);
    assert!(
        e.contains("img.gz") && e.contains(&format!("which take {} bytes", u64::from(n) * 792)),
        "{e}"
    );
    // Exactly the budget (9 bytes per 1×1 image) passes the check: the file is then only
    // truncated. One image more does not.
    let fit = (BUDGET / 9) as u32;
    let e = load(fit, 1, 1);
    assert!(e.contains("truncated") && !e.contains("budget"), "{e}");
    let e = load(fit + 1, 1, 1);
    assert!(e.contains("img.gz") && e.contains("budget"), "{e}");
}

#[test]
fn cifar_batches_over_the_in_memory_budget_are_refused_from_their_sizes() {
    let dir = tempfile::tempdir().unwrap();
    // 1,396,000 CIFAR-100 records: 4.29 GB on disk (under 4 GiB), 4.30 GB once loaded
    // (3,072 pixel bytes and an 8-byte label each). Sparse: no disk is used.
    let records = 1_396_000u64;
    assert!(records * 3074 <= BUDGET && records * 3080 > BUDGET);
    let f = std::fs::File::create(dir.path().join("test.bin")).unwrap();
    f.set_len(records * 3074).unwrap();
    let d = dir.path().to_owned();
    let start = std::time::Instant::now();
    // (`.err()`: an accepted dataset is not printed, 4 GB of pixels.)
    let e = within("load_cifar", move || {
        load_cifar(&d, Cifar::Hundred, false).err()
    })
    .expect("a split over the budget was accepted");
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    says(
        e,
        "test.bin",
        &format!("which take {} bytes in memory", records * 3080),
    );
    // Over several batches: the batch that passes the budget is named.
    for i in 1..=5u64 {
        let f = std::fs::File::create(dir.path().join(format!("data_batch_{i}.bin"))).unwrap();
        f.set_len(300_000 * 3073).unwrap();
    }
    let d = dir.path().to_owned();
    let e = within("load_cifar", move || load_cifar(&d, Cifar::Ten, true).err())
        .expect("a split over the budget was accepted");
    says(e, "data_batch_5.bin", "the split holds 1500000 records");
}

#[test]
fn a_dataset_built_in_memory_is_held_to_the_same_budget() {
    // Labels alone over the budget: 477,218,589 one-pixel images fit exactly (9 bytes
    // each), one more does not. `vec![0; n]` reserves zeroed pages without touching them.
    let n = (BUDGET / 9) as usize + 1;
    // (An accepted dataset is not printed: 477 million labels.)
    let Err(e) = Dataset::new("big", [1, 1, 1], vec![0; n], vec![0; n], vec!["a".into()]) else {
        panic!("a dataset over the budget was accepted");
    };
    let e = e.to_string();
    assert!(
        e.contains("dataset 'big'")
            && e.contains(&format!("which take {} bytes", n * 9))
            && e.contains(&format!("{BUDGET}-byte")),
        "{e}"
    );
}

#[test]
fn ranges_in_messages_read_as_users_read_them() {
    let dir = tempfile::tempdir().unwrap();
    let (im, lb) = (dir.path().join("img"), dir.path().join("lab"));
    std::fs::write(&im, idx(3, &[2, 1, 1], &[0, 0])).unwrap();
    std::fs::write(&lb, idx(1, &[2], &[3, 10])).unwrap();
    let e = load_idx(&im, &lb, 10).unwrap_err().to_string();
    assert!(
        e.contains("record 1") && e.contains("label 10 is outside 0..=9 (10 classes)"),
        "{e}"
    );
    let mut record = vec![10u8];
    record.extend(std::iter::repeat_n(0u8, 3072));
    std::fs::write(dir.path().join("test_batch.bin"), &record).unwrap();
    let e = load_cifar(dir.path(), Cifar::Ten, false)
        .unwrap_err()
        .to_string();
    assert!(e.contains("label 10 is outside 0..=9 (10 classes)"), "{e}");
    let e = Dataset::new(
        "d",
        [1, 1, 1],
        vec![0, 0],
        vec![0, 2],
        vec!["a".into(), "b".into()],
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("label 2 of image 1 is outside 0..=1 (2 classes)"),
        "{e}"
    );
    let e = Dataset::new("d", [1, 1, 1], vec![0], vec![0], vec![])
        .unwrap_err()
        .to_string();
    assert!(e.contains("outside none (0 classes)"), "{e}");
    // Image indices too, in memory and in a folder.
    let d = Dataset::new(
        "d",
        [1, 1, 1],
        vec![0, 0],
        vec![0, 1],
        vec!["a".into(), "b".into()],
    )
    .unwrap();
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(0);
    let e = d
        .batch(&Transform::default(), &[0, 2], [1, 1, 1], false, &mut rng)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("image 2 is outside 'd': 0..=1 (2 images)"),
        "{e}"
    );
    let root = dir.path().join("tree");
    std::fs::create_dir_all(root.join("k")).unwrap();
    png(&root.join("k/a.png"), 2, 2);
    let f = ImageFolder::open(&root).unwrap();
    let e = f.path(1).unwrap_err().to_string();
    assert!(
        e.contains("image 1 is outside") && e.contains("0..=0 (1 images)"),
        "{e}"
    );
}

/// A PNG whose header (IHDR) declares `w × h` 8-bit RGB pixels, with an empty compressed
/// image stream: what a decompression bomb looks like before its pixels.
fn png_header_only(w: u32, h: u32) -> Vec<u8> {
    fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        out.extend((data.len() as u32).to_be_bytes());
        let mut crc = flate2::Crc::new();
        crc.update(kind);
        crc.update(data);
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        out.extend(crc.sum().to_be_bytes());
    }
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend(w.to_be_bytes());
    ihdr.extend(h.to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]); // 8 bits, RGB, deflate, no filter set, no interlace
    chunk(&mut out, b"IHDR", &ihdr);
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    z.write_all(&[]).unwrap();
    chunk(&mut out, b"IDAT", &z.finish().unwrap());
    chunk(&mut out, b"IEND", &[]);
    out
}

#[test]
fn an_image_header_declaring_too_many_pixels_is_refused_before_decoding() {
    let dir = tempfile::tempdir().unwrap();
    let cat = dir.path().join("cat");
    std::fs::create_dir_all(&cat).unwrap();
    png(&cat.join("a.png"), 10, 10);
    std::fs::write(cat.join("bomb.png"), png_header_only(100_000, 100_000)).unwrap();
    let f = ImageFolder::open(dir.path()).unwrap();
    assert_eq!(f.len(), 2, "indexing opens no image");
    let bomb = (0..2)
        .find(|&i| f.path(i).unwrap().ends_with("bomb.png"))
        .unwrap();
    let start = std::time::Instant::now();
    let e = f.decode(bomb, 3).unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(2));
    says(e, "bomb.png", "declares 100000×100000 = 10000000000 pixels");
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(0);
    let e = f
        .batch(&Transform::default(), &[bomb], [3, 8, 8], false, &mut rng)
        .unwrap_err();
    says(e, "bomb.png", "more than the limit of 178956970");
    let e = load_image_folder(dir.path(), 3, 4, 4, &FolderOptions::default()).unwrap_err();
    says(e, "bomb.png", "100000×100000");

    // The limit is a setting: 10×10 = 100 pixels pass at 100 and fail at 99.
    std::fs::remove_file(cat.join("bomb.png")).unwrap();
    let f = ImageFolder::open(dir.path()).unwrap();
    assert!(f.clone().max_pixels(100).decode(0, 1).is_ok());
    says(
        f.max_pixels(99).decode(0, 1).unwrap_err(),
        "a.png",
        "10×10 = 100 pixels, more than the limit of 99",
    );
    let tight = FolderOptions {
        max_pixels: 99,
        ..Default::default()
    };
    let f = ImageFolder::open_with(dir.path(), None, &tight).unwrap();
    says(f.decode(0, 3).unwrap_err(), "a.png", "limit of 99");
    says(
        load_image_folder(dir.path(), 1, 4, 4, &tight).unwrap_err(),
        "a.png",
        "limit of 99",
    );
    // A file far larger than such an image can be is refused from its size, unread.
    let big = std::fs::File::create(cat.join("huge.jpg")).unwrap();
    big.set_len(70 << 20).unwrap(); // sparse: no disk is used
    let f = ImageFolder::open_with(dir.path(), None, &tight).unwrap();
    let huge = (0..f.len())
        .find(|&i| f.path(i).unwrap().ends_with("huge.jpg"))
        .unwrap();
    says(
        f.decode(huge, 3).unwrap_err(),
        "huge.jpg",
        "73400320 bytes, more than the 67109656-byte limit",
    );
    std::fs::remove_file(cat.join("huge.jpg")).unwrap();
    // The output size of load_image_folder is held to the same limit.
    let e = load_image_folder(dir.path(), 1, 10, 10, &tight).unwrap_err();
    assert!(e.to_string().contains("10×10"), "{e}");
}

#[test]
fn every_dimension_refusal_names_the_limit_and_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let cat = dir.path().join("cat");
    std::fs::create_dir_all(&cat).unwrap();
    // The largest PNG header (2^31 − 1 on each side): the pixel limit, not a memory error
    // from the decoder sizing a row.
    let side = (1u32 << 31) - 1;
    std::fs::write(cat.join("bomb.png"), png_header_only(side, side)).unwrap();
    let f = ImageFolder::open(dir.path()).unwrap();
    for limit in [fair_data::DEFAULT_MAX_PIXELS, 64] {
        let e = f
            .clone()
            .max_pixels(limit)
            .decode(0, 3)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("bomb.png")
                && e.contains("declares 2147483647×2147483647 = 4611686014132420609 pixels")
                && e.contains(&format!("more than the limit of {limit} "))
                && e.contains("max_pixels")
                && e.contains("--max-pixels")
                && !e.contains("Memory limit"),
            "{e}"
        );
    }
    // With no practical limit, the pixels cannot be allocated: said so, naming the setting.
    let e = f
        .clone()
        .max_pixels(u64::MAX)
        .decode(0, 3)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("pixels must fit in memory")
            && e.contains(&format!("the limit of {} pixels", u64::MAX))
            && e.contains("--max-pixels"),
        "{e}"
    );
    let e = load_image_folder(dir.path(), 3, 4, 4, &FolderOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("2147483647×2147483647") && e.contains("--max-pixels"),
        "{e}"
    );
    // One a side wider than the limit, one pixel high: refused the same way.
    std::fs::write(cat.join("bomb.png"), png_header_only(1000, 1)).unwrap();
    let e = f
        .clone()
        .max_pixels(999)
        .decode(0, 1)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("1000×1 = 1000 pixels, more than the limit of 999"),
        "{e}"
    );
    assert!(e.contains("--max-pixels"), "{e}");
    // A file too large for the limit names it too.
    let big = std::fs::File::create(cat.join("bomb.png")).unwrap();
    big.set_len(70 << 20).unwrap(); // sparse
    let e = f
        .clone()
        .max_pixels(1)
        .decode(0, 1)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("at most 1 pixels") && e.contains("--max-pixels"),
        "{e}"
    );
}

#[test]
fn a_wide_png_decodes_though_its_row_is_larger_than_the_metadata_budget() {
    // One row of 2,500,000 RGBA pixels of 16 bits: 20 MB, more than the 16 MiB the decoder
    // may allocate for metadata; the row is allowed on top of it.
    let dir = tempfile::tempdir().unwrap();
    let cat = dir.path().join("cat");
    std::fs::create_dir_all(&cat).unwrap();
    let w = 2_500_000;
    image::ImageBuffer::<image::Rgba<u16>, _>::from_pixel(w, 1, image::Rgba([0x8080; 4]))
        .save(cat.join("wide.png"))
        .unwrap();
    let f = ImageFolder::open(dir.path()).unwrap();
    let (px, iw, ih) = f.decode(0, 1).unwrap();
    assert_eq!((iw, ih), (w as usize, 1));
    assert!(px.iter().all(|&p| p == 0x80), "grey level {}", px[0]);
}
