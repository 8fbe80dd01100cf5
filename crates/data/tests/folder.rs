//! The streamed ImageFolder: the index, torchvision's transforms (cross-checked against
//! torchvision 0.26 with the reference Python), seeded training batches, prefetch, decode
//! errors and calibration reading only the sampled files.

use std::path::{Path, PathBuf};
use std::process::Command;

use fair_data::{
    Augment, DataError, ImageFolder, ImageSource, Loader, Source, Transform, calibration_sample,
};
use rand::{Rng, SeedableRng};
use tch::Tensor;

const MEAN: [f32; 3] = [0.485, 0.456, 0.406];
const STD: [f32; 3] = [0.229, 0.224, 0.225];

fn imagenet() -> Transform {
    Transform {
        mean: MEAN.to_vec(),
        std: STD.to_vec(),
        ..Default::default()
    }
}

/// A smooth colour pattern with noise, `w × h`, seeded.
fn picture(w: u32, h: u32, seed: u64) -> image::RgbImage {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let (a, b, c) = (
        rng.gen_range(0.02..0.2),
        rng.gen_range(0.02..0.2),
        rng.gen_range(0.0..6.0),
    );
    image::RgbImage::from_fn(w, h, |x, y| {
        let (x, y) = (x as f64, y as f64);
        let mut v = |p: f64| 127.0 + 100.0 * (a * x + b * y + p).sin() + rng.gen_range(-20.0..20.0);
        image::Rgb([
            v(c).clamp(0.0, 255.0) as u8,
            v(c + 2.0).clamp(0.0, 255.0) as u8,
            v(c + 4.0).clamp(0.0, 255.0) as u8,
        ])
    })
}

/// The tree used throughout: classes `cat` (PNG, one of them grey, one RGBA, one in a
/// sub-directory) and `dog` (JPEG, upper-case extensions), images of different sizes, and
/// files that are not images. Returns the root and the expected `(relative path, label)`.
fn tree(dir: &Path) -> Vec<(String, i64)> {
    let cat = dir.join("cat");
    let dog = dir.join("dog");
    std::fs::create_dir_all(cat.join("more")).unwrap();
    std::fs::create_dir_all(&dog).unwrap();
    std::fs::create_dir_all(dir.join("empty")).unwrap();
    picture(300, 200, 1).save(cat.join("b.png")).unwrap();
    image::DynamicImage::ImageRgb8(picture(173, 260, 2))
        .into_luma8()
        .save(cat.join("a.png"))
        .unwrap();
    image::DynamicImage::ImageRgb8(picture(500, 120, 3))
        .into_rgba8()
        .save(cat.join("c.PNG"))
        .unwrap();
    picture(100, 80, 4).save(cat.join("more/d.png")).unwrap();
    std::fs::write(cat.join("notes.txt"), "not an image").unwrap();
    let jpeg = |img: image::RgbImage, path: PathBuf| {
        let mut f = std::fs::File::create(path).unwrap();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut f, 90)
            .encode_image(&img)
            .unwrap();
    };
    jpeg(picture(256, 256, 5), dog.join("x.JPG"));
    jpeg(picture(331, 417, 6), dog.join("y.jpeg"));
    jpeg(picture(640, 360, 7), dog.join("z.jpg"));
    [
        ("cat/a.png", 0),
        ("cat/b.png", 0),
        ("cat/c.PNG", 0),
        ("cat/more/d.png", 0),
        ("dog/x.JPG", 1),
        ("dog/y.jpeg", 1),
        ("dog/z.jpg", 1),
    ]
    .map(|(p, l)| (p.to_string(), l))
    .to_vec()
}

fn values(x: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(&x.flatten(0, -1)).unwrap()
}

fn eval_batch(f: &ImageFolder, t: &Transform, idx: &[usize], input: [usize; 3]) -> Tensor {
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    f.batch(t, idx, input, false, &mut rng).unwrap().0
}

#[test]
fn the_index_holds_classes_labels_and_sorted_paths_only() {
    let dir = tempfile::tempdir().unwrap();
    let expected = tree(dir.path());
    let f = ImageFolder::open(dir.path()).unwrap();
    assert_eq!(f.classes(), ["cat", "dog", "empty"]);
    assert_eq!(f.len(), 7);
    let got: Vec<(String, i64)> = (0..f.len())
        .map(|i| {
            let rel = f
                .path(i)
                .unwrap()
                .strip_prefix(dir.path())
                .unwrap()
                .to_owned();
            (rel.to_string_lossy().into_owned(), f.labels()[i])
        })
        .collect();
    assert_eq!(got, expected);
    // Nothing is decoded when indexing: a broken file is found only when read.
    std::fs::write(
        dir.path().join("dog/broken.jpg"),
        b"\xff\xd8\xff\xe0 not really",
    )
    .unwrap();
    let f = ImageFolder::open(dir.path()).unwrap();
    assert_eq!(f.len(), 8);
    let e = ImageFolder::open(&dir.path().join("cat/more")).unwrap_err();
    assert!(matches!(e, DataError::Invalid(_)), "{e}");
}

#[test]
fn evaluation_batches_are_resized_centre_cropped_and_normalised() {
    let dir = tempfile::tempdir().unwrap();
    tree(dir.path());
    let f = ImageFolder::open(dir.path()).unwrap();
    let x = eval_batch(&f, &imagenet(), &[0, 1, 2, 3, 4, 5, 6], [3, 224, 224]);
    assert_eq!(x.size(), [7, 3, 224, 224]);
    // A constant image stays constant: (v/255 − mean)/std everywhere.
    let flat = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(flat.path().join("k")).unwrap();
    image::RgbImage::from_pixel(333, 250, image::Rgb([10, 128, 250]))
        .save(flat.path().join("k/a.png"))
        .unwrap();
    let g = ImageFolder::open(flat.path()).unwrap();
    let x = eval_batch(&g, &imagenet(), &[0], [3, 224, 224]);
    for (c, v) in [10.0f32, 128.0, 250.0].into_iter().enumerate() {
        let want = (v / 255.0 - MEAN[c]) / STD[c];
        let plane = values(&x.get(0).get(c as i64));
        assert!(plane.iter().all(|&p| p == want), "channel {c}");
    }
    // Grey models get grey images; a crop that is not the model input is refused.
    let x = eval_batch(&f, &Transform::default(), &[0, 4], [1, 64, 48]);
    assert_eq!(x.size(), [2, 1, 64, 48]);
    let bad = Transform {
        crop: Some([200, 200]),
        ..imagenet()
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let e = f
        .batch(&bad, &[0], [3, 224, 224], false, &mut rng)
        .unwrap_err();
    assert!(e.to_string().contains("transform.crop = [200, 200]"), "{e}");
    let e = f
        .batch(&imagenet(), &[99], [3, 224, 224], false, &mut rng)
        .unwrap_err();
    assert!(e.to_string().contains("image 99"), "{e}");
}

#[test]
fn training_batches_are_reproducible_from_the_seed_and_the_thread_count_does_not_matter() {
    let dir = tempfile::tempdir().unwrap();
    tree(dir.path());
    let t = Transform {
        augment: Some(Augment {
            crop_padding: 0,
            flip: true,
        }),
        ..imagenet()
    };
    let idx = [6, 0, 3, 5, 1];
    let run = |f: &ImageFolder, seed: u64| {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let (x, y) = f.batch(&t, &idx, [3, 96, 96], true, &mut rng).unwrap();
        (values(&x), Vec::<i64>::try_from(&y).unwrap())
    };
    let f = ImageFolder::open(dir.path()).unwrap();
    let a = run(&f, 7);
    assert_eq!(a.1, vec![1, 0, 0, 1, 0]);
    assert_eq!(a, run(&f, 7), "same seed, same batch");
    assert_eq!(a, run(&f.clone().workers(1).unwrap(), 7), "1 thread");
    assert_eq!(a, run(&f.clone().workers(3).unwrap(), 7), "3 threads");
    assert_ne!(a.0, run(&f, 8).0, "another seed, other crops");
    // Augmentation is for training only; without it training batches are evaluation ones.
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let (xe, _) = f.batch(&t, &idx, [3, 96, 96], false, &mut rng).unwrap();
    let (xp, _) = f
        .batch(&imagenet(), &idx, [3, 96, 96], true, &mut rng)
        .unwrap();
    assert!(xe.equal(&xp));
    assert_ne!(values(&xe), a.0);
}

#[test]
fn prefetch_yields_the_batches_of_direct_calls_and_stops_at_an_error() {
    let dir = tempfile::tempdir().unwrap();
    tree(dir.path());
    let f = ImageFolder::open(dir.path()).unwrap();
    let t = Transform {
        augment: Some(Augment {
            crop_padding: 0,
            flip: true,
        }),
        ..imagenet()
    };
    let order = [3, 6, 1, 0, 5, 2, 4];
    for train in [true, false] {
        let loader = Loader {
            source: &f,
            transform: &t,
            input: [3, 64, 64],
            train,
        };
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let direct: Vec<(Vec<f32>, Vec<i64>)> = order
            .chunks(3)
            .map(|c| {
                let (x, y) = loader.batch(c, &mut rng).unwrap();
                (values(&x), Vec::<i64>::try_from(&y).unwrap())
            })
            .collect();
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let streamed: Vec<(Vec<f32>, Vec<i64>)> = std::thread::scope(|s| {
            loader
                .prefetch(s, &order, 3, 2, &mut rng)
                .map(|b| {
                    let (x, y) = b.unwrap();
                    (values(&x), Vec::<i64>::try_from(&y).unwrap())
                })
                .collect()
        });
        assert_eq!(streamed.len(), 3);
        assert_eq!(streamed, direct, "train = {train}");
    }
    // An undecodable file: the error names it, and the stream ends there.
    let broken = dir.path().join("dog/broken.jpg");
    std::fs::write(&broken, b"\xff\xd8\xff\xe0 this is no JPEG").unwrap();
    let f = ImageFolder::open(dir.path()).unwrap();
    let at = (0..f.len())
        .find(|&i| f.path(i).unwrap() == broken)
        .unwrap();
    let order: Vec<usize> = (0..f.len()).collect();
    let loader = Loader {
        source: &f,
        transform: &t,
        input: [3, 32, 32],
        train: false,
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let results: Vec<_> =
        std::thread::scope(|s| loader.prefetch(s, &order, 2, 1, &mut rng).collect());
    assert_eq!(results.len(), at / 2 + 1, "ends with the failing batch");
    let e = results.last().unwrap().as_ref().unwrap_err();
    assert!(matches!(e, DataError::Malformed { .. }), "{e}");
    let text = e.to_string();
    assert!(
        text.contains("broken.jpg") && text.contains("cannot decode"),
        "{text}"
    );
}

#[test]
fn calibration_reads_only_the_sampled_files() {
    let dir = tempfile::tempdir().unwrap();
    for class in ["a", "b", "c"] {
        std::fs::create_dir_all(dir.path().join(class)).unwrap();
        for i in 0..10 {
            picture(40 + i, 30, i as u64)
                .save(dir.path().join(class).join(format!("{i:02}.png")))
                .unwrap();
        }
    }
    let f = ImageFolder::open(dir.path()).unwrap();
    let draw = calibration_sample(&f, 3, 100, 5);
    assert_eq!(draw.indices.len(), 9);
    // Every other file becomes garbage: the draw still decodes.
    for i in (0..f.len()).filter(|i| !draw.indices.contains(i)) {
        std::fs::write(f.path(i).unwrap(), b"garbage").unwrap();
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let (x, y) = f
        .batch(&imagenet(), &draw.indices, [3, 24, 24], false, &mut rng)
        .unwrap();
    assert_eq!(x.size(), [9, 3, 24, 24]);
    assert_eq!(
        Vec::<i64>::try_from(&y).unwrap(),
        vec![0, 0, 0, 1, 1, 1, 2, 2, 2]
    );
    let other = (0..f.len()).find(|i| !draw.indices.contains(i)).unwrap();
    assert!(
        f.batch(&imagenet(), &[other], [3, 24, 24], false, &mut rng)
            .is_err()
    );
}

#[test]
fn folder_splits_draw_what_in_memory_splits_draw() {
    let dir = tempfile::tempdir().unwrap();
    tree(dir.path());
    let f = ImageFolder::open(dir.path()).unwrap();
    let labels = f.labels().to_vec();
    let d = fair_data::Dataset::new(
        "same labels",
        [1, 1, 1],
        vec![0; labels.len()],
        labels,
        f.classes().to_vec(),
    )
    .unwrap();
    let (ft, fe) = Source::from(f.clone()).split_stratified(3, |n| n / 2);
    let (dt, de) = Source::from(d).split_stratified(3, |n| n / 2);
    assert_eq!(ft.labels(), dt.labels());
    assert_eq!(fe.labels(), de.labels());
    let part = f.split_stratified(3, |n| n / 2).0;
    let want: Vec<PathBuf> = [0, 4].map(|i| f.path(i).unwrap()).to_vec();
    let got: Vec<PathBuf> = (0..part.len()).map(|i| part.path(i).unwrap()).collect();
    // cat has 4 images (2 kept), dog 3 (1 kept): the kept ones are among the originals.
    assert_eq!(got.len(), 3);
    assert!(got.iter().all(|p| p.exists()), "{got:?} {want:?}");
    assert_eq!(ft.with_name("x").name(), "x");
}

/// PIL's `convert("L")` of one RGB pixel.
fn pil_l([r, g, b]: [u8; 3]) -> u8 {
    ((u32::from(r) * 19595 + u32::from(g) * 38470 + u32::from(b) * 7471 + 0x8000) >> 16) as u8
}

#[test]
fn colour_images_become_grey_as_pils_convert_l_makes_them() {
    // The formula itself: PIL's documented examples of rounding (not truncating) and of its
    // ITU-R 601-2 weights (not Rec. 709's).
    assert_eq!(pil_l([255, 255, 255]), 255);
    assert_eq!(pil_l([0, 255, 0]), 150);
    assert_eq!(pil_l([0, 0, 255]), 29);
    assert_eq!(pil_l([1, 1, 0]), 1);
    let dir = tempfile::tempdir().unwrap();
    let k = dir.path().join("k");
    std::fs::create_dir_all(&k).unwrap();
    let rgb = picture(37, 23, 9);
    rgb.save(k.join("a.png")).unwrap();
    image::DynamicImage::ImageRgb8(rgb.clone())
        .into_rgba8()
        .save(k.join("b.png"))
        .unwrap();
    let grey = image::GrayImage::from_fn(37, 23, |x, y| image::Luma([(x * 7 + y * 3) as u8]));
    grey.save(k.join("c.png")).unwrap();
    let f = ImageFolder::open(dir.path()).unwrap();
    let want: Vec<u8> = rgb.pixels().map(|p| pil_l(p.0)).collect();
    for i in [0, 1] {
        let (px, w, h) = f.decode(i, 1).unwrap();
        assert_eq!((w, h), (37, 23));
        assert_eq!(px, want, "image {i}: PIL's grey levels");
    }
    // Grey sources keep their levels; colour ones decode to RGB unchanged.
    assert_eq!(f.decode(2, 1).unwrap().0, grey.into_raw());
    assert_eq!(f.decode(0, 3).unwrap().0, rgb.into_raw());
    // Through a batch: a constant colour image is the constant PIL grey, normalised.
    image::RgbImage::from_pixel(50, 40, image::Rgb([200, 30, 90]))
        .save(k.join("a.png"))
        .unwrap();
    let x = eval_batch(&f, &Transform::default(), &[0], [1, 16, 16]);
    let want = f32::from(pil_l([200, 30, 90])) / 255.0;
    assert!(values(&x).iter().all(|&v| v == want), "{want}");
}

#[test]
fn a_test_split_indexed_against_the_training_classes_keeps_their_labels() {
    let dir = tempfile::tempdir().unwrap();
    let put = |split: &str, class: &str, n: u32| {
        let d = dir.path().join(split).join(class);
        std::fs::create_dir_all(&d).unwrap();
        for i in 0..n {
            picture(20 + i, 16, u64::from(i))
                .save(d.join(format!("{i}.png")))
                .unwrap();
        }
    };
    for class in ["ant", "bee", "cat", "dog"] {
        put("train", class, 2);
    }
    // test/ lacks "ant" and "cat": opened alone, "bee" would be 0 and "dog" 1.
    put("test", "bee", 2);
    put("test", "dog", 1);
    let train = ImageFolder::open(&dir.path().join("train")).unwrap();
    let alone = ImageFolder::open(&dir.path().join("test")).unwrap();
    assert_eq!(alone.labels(), [0, 0, 1]);
    let test = ImageFolder::open_with_classes(&dir.path().join("test"), train.classes()).unwrap();
    assert_eq!(test.classes(), train.classes());
    assert_eq!(test.labels(), [1, 1, 3]);
    let names: Vec<String> = (0..test.len())
        .map(|i| {
            let p = test.path(i).unwrap();
            p.strip_prefix(dir.path().join("test"))
                .unwrap()
                .display()
                .to_string()
        })
        .collect();
    assert_eq!(names, ["bee/0.png", "bee/1.png", "dog/0.png"]);
    // The labels follow the given list, whatever its order.
    let reversed: Vec<String> = train.classes().iter().rev().cloned().collect();
    let r = ImageFolder::open_with_classes(&dir.path().join("test"), &reversed).unwrap();
    assert_eq!(r.labels(), [0, 2, 2]);
    let (_, y) = {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0);
        test.batch(&imagenet(), &[2], [3, 8, 8], false, &mut rng)
            .unwrap()
    };
    assert_eq!(Vec::<i64>::try_from(&y).unwrap(), [3]);
    // A class the training split lacks: an error naming its directory.
    put("test", "eel", 1);
    let e = ImageFolder::open_with_classes(&dir.path().join("test"), train.classes()).unwrap_err();
    let eel = dir.path().join("test").join("eel");
    assert!(
        matches!(e, DataError::Invalid(_)) && e.to_string().contains(&*eel.display().to_string()),
        "{e}"
    );
    let twice = ["bee".to_string(), "bee".to_string()];
    assert!(ImageFolder::open_with_classes(&dir.path().join("train"), &twice).is_err());
}

#[test]
fn out_of_range_indices_are_errors_naming_the_index_and_the_folder() {
    let dir = tempfile::tempdir().unwrap();
    tree(dir.path());
    let f = ImageFolder::open(dir.path()).unwrap();
    let name = dir.path().display().to_string();
    let check = |e: DataError, i: usize| {
        let text = e.to_string();
        assert!(
            matches!(e, DataError::Invalid(_))
                && text.contains(&format!("image {i}"))
                && text.contains(&name),
            "{text}"
        );
    };
    check(f.path(7).unwrap_err(), 7);
    check(f.decode(usize::MAX, 3).unwrap_err(), usize::MAX);
    check(f.subset("part", &[1, 9, 2]).err().unwrap(), 9);
    let part = f.subset("part", &[6, 0]).unwrap();
    assert_eq!(part.labels(), [1, 0]);
    assert_eq!(part.path(0).unwrap(), f.path(6).unwrap());
    assert!(part.path(2).is_err());
}

/// Batches as large as several decoding chunks, on pools of different sizes, equal the
/// images built one by one.
#[test]
fn batches_larger_than_a_decoding_chunk_hold_every_image_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("k");
    std::fs::create_dir_all(&d).unwrap();
    for i in 0..23u32 {
        picture(30 + i, 20 + i % 5, u64::from(i))
            .save(d.join(format!("{i:02}.png")))
            .unwrap();
    }
    let f = ImageFolder::open(dir.path()).unwrap();
    let order: Vec<usize> = (0..23).rev().collect();
    let one_by_one: Vec<f32> = order
        .iter()
        .flat_map(|&i| values(&eval_batch(&f, &imagenet(), &[i], [3, 12, 12])))
        .collect();
    for threads in [1, 2, 5] {
        let g = f.clone().workers(threads).unwrap();
        let x = eval_batch(&g, &imagenet(), &order, [3, 12, 12]);
        assert_eq!(x.size(), [23, 3, 12, 12]);
        assert_eq!(values(&x), one_by_one, "{threads} threads");
    }
}

#[test]
fn resize_and_crop_parse_with_defaults_and_are_refused_for_in_memory_data() {
    let t: Transform =
        serde_json::from_str(r#"{"mean": [0.5], "resize": 288, "crop": [256, 256]}"#).unwrap();
    assert_eq!((t.resize, t.crop), (Some(288), Some([256, 256])));
    let t: Transform = serde_json::from_str(r#"{"mean": [0.5]}"#).unwrap();
    assert_eq!((t.resize, t.crop), (None, None));
    assert!(serde_json::from_str::<Transform>(r#"{"resise": 3}"#).is_err());
    let d = fair_data::Dataset::new("m", [1, 2, 2], vec![0; 4], vec![0], vec!["a".into()]).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let t = Transform {
        resize: Some(3),
        ..Default::default()
    };
    let e = d.batch(&t, &[0], [1, 2, 2], false, &mut rng).unwrap_err();
    assert!(e.to_string().contains("ImageFolder"), "{e}");
    assert!(
        Transform {
            resize: Some(0),
            ..Default::default()
        }
        .check(1)
        .is_err()
    );
}

/// The largest and the mean difference per image, in 8-bit pixel levels (values × std × 255,
/// `std` per channel).
fn levels(ours: &[f32], theirs: &[f32], std: &[f32], hw: usize) -> Vec<(f32, f32)> {
    let per = std.len() * hw;
    ours.chunks(per)
        .zip(theirs.chunks(per))
        .map(|(a, b)| {
            let d: Vec<f32> = a
                .iter()
                .zip(b)
                .enumerate()
                .map(|(i, (x, y))| (x - y).abs() * std[i / hw] * 255.0)
                .collect();
            (
                d.iter().copied().fold(0.0, f32::max),
                d.iter().sum::<f32>() / d.len() as f32,
            )
        })
        .collect()
}

#[test]
#[ignore = "needs the reference Python (cargo xtask test runs it)"]
fn evaluation_batches_equal_torchvisions_resize_and_centre_crop() {
    let Some(py) = fair_testkit::reference_python("the torchvision ImageFolder cross-check") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("tree");
    tree(&root);
    // torchvision refuses a class without images; ours lists it (tested above).
    std::fs::remove_dir(root.join("empty")).unwrap();
    let join = |v: &[f32]| v.iter().map(f32::to_string).collect::<Vec<_>>().join(",");
    // (resize, crop H, crop W): the default for 224², a resize smaller than the crop
    // (torchvision pads with zeros), and a non-square input with its default resize.
    let configs = [(256, 224, 224), (200, 224, 224), (183, 160, 192)];
    assert_eq!(fair_data::default_resize(160, 192), 183);
    let f = ImageFolder::open(&root).unwrap();
    let samples: Vec<(String, i64)> = (0..f.len())
        .map(|i| {
            let rel = f.path(i).unwrap().strip_prefix(&root).unwrap().to_owned();
            (rel.display().to_string(), f.labels()[i])
        })
        .collect();
    let idx: Vec<usize> = (0..f.len()).collect();
    // RGB for a 3-channel model; grey (PIL's convert("L") of the colour images) for a
    // 1-channel one.
    let grey = ([0.449f32], [0.226f32]);
    for (mode, mean, std) in [
        ("RGB", &MEAN[..], &STD[..]),
        ("L", &grey.0[..], &grey.1[..]),
    ] {
        let c = mean.len();
        let out = dir.path().join(format!("ref-{mode}"));
        let mut args: Vec<String> = vec![
            "--mode".into(),
            mode.into(),
            root.display().to_string(),
            out.display().to_string(),
            join(mean),
            join(std),
        ];
        for (r, h, w) in configs {
            args.extend([r.to_string(), h.to_string(), w.to_string()]);
        }
        let status = Command::new(&py)
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/folder_reference.py"))
            .args(&args)
            .status()
            .unwrap();
        assert!(status.success());
        let meta: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.with_extension("json")).unwrap())
                .unwrap();
        assert_eq!(
            meta["classes"],
            serde_json::json!(f.classes()),
            "classes as torchvision lists them"
        );
        assert_eq!(
            meta["samples"],
            serde_json::json!(samples),
            "same files, same order"
        );
        for (k, (resize, h, w)) in configs.into_iter().enumerate() {
            let t = Transform {
                resize: Some(resize),
                mean: mean.to_vec(),
                std: std.to_vec(),
                ..Default::default()
            };
            let ours = values(&eval_batch(&f, &t, &idx, [c, h, w]));
            let bytes = std::fs::read(out.with_extension(format!("{k}.bin"))).unwrap();
            let theirs: Vec<f32> = bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect();
            assert_eq!(ours.len(), theirs.len());
            let diff = levels(&ours, &theirs, std, h * w);
            eprintln!(
                "{mode}, resize {resize}, crop {h}×{w}: (max, mean) difference per image in \
                 8-bit levels {diff:?}"
            );
            for (i, (path, _)) in samples.iter().enumerate() {
                // PNG decodes identically, the grey conversion and the resampling are PIL's:
                // bit-exact up to f32 rounding of the normalisation. JPEG decoders differ
                // (zune-jpeg vs libjpeg-turbo IDCT and chroma upsampling): measured at most 3
                // levels, about 0.02 on average.
                let (max, mean) = if path.to_lowercase().ends_with(".png") {
                    (1e-3, 1e-4)
                } else {
                    (4.0, 0.1)
                };
                assert!(
                    diff[i].0 <= max && diff[i].1 <= mean,
                    "{path} ({mode}, resize {resize}, crop {h}×{w}): {:?} levels (max, mean)",
                    diff[i]
                );
            }
        }
    }
}
