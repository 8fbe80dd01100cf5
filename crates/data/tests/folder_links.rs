//! ImageFolder traversal with symbolic links: loops end, no directory is searched twice,
//! links into the dataset (another class, the root, a directory above it, back into the
//! class) are not followed and are reported, links out of the dataset (a shared image pool)
//! are followed, and `follow_links = false` follows none (a class directory that is a link
//! is then an error, not a skipped class).

#![cfg(unix)]

use std::collections::BTreeMap;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::time::Duration;

use fair_data::{FolderOptions, ImageFolder, ImageSource, load_image_folder};

fn png(path: &Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    image::GrayImage::from_pixel(3, 2, image::Luma([7]))
        .save(path)
        .unwrap();
}

/// Indexes the folder on another thread, failing if it does not finish within 20 s.
fn index(root: &Path, options: FolderOptions) -> Result<ImageFolder, fair_data::DataError> {
    let (tx, rx) = std::sync::mpsc::channel();
    let root = root.to_owned();
    std::thread::spawn(move || {
        let _ = tx.send(ImageFolder::open_with(&root, None, &options));
    });
    rx.recv_timeout(Duration::from_secs(20))
        .expect("indexing did not finish within 20 s")
}

/// Indexes the folder ([`index`]), which must succeed.
fn open(root: &Path, options: FolderOptions) -> ImageFolder {
    index(root, options).unwrap()
}

/// Indexes the folder ([`index`]), which must fail; returns the error's message.
fn open_err(root: &Path, options: FolderOptions) -> String {
    match index(root, options) {
        Err(e) => e.to_string(),
        Ok(f) => panic!("indexed classes {:?}, expected an error", f.classes()),
    }
}

/// Links to directories not followed.
const NO_LINKS: FolderOptions = FolderOptions {
    follow_links: false,
    max_pixels: fair_data::DEFAULT_MAX_PIXELS,
};

/// Image count per class name.
fn counts(f: &ImageFolder) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for &l in f.labels() {
        *m.entry(f.classes()[l as usize].clone()).or_default() += 1;
    }
    m
}

/// Relative paths of the images of class `class`.
fn paths(f: &ImageFolder, root: &Path, class: &str) -> Vec<String> {
    (0..f.len())
        .filter(|&i| f.classes()[f.labels()[i] as usize] == class)
        .map(|i| {
            f.path(i)
                .unwrap()
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect()
}

/// `base/data`: `cat` (a.png, b.png, sub/c.png) and `dog` (x.png, y.png), with every kind
/// of link; `base/pool` (p.png, q.png) outside the dataset, linking back into it.
fn tree(base: &Path) -> std::path::PathBuf {
    let root = base.join("data");
    for f in [
        "cat/a.png",
        "cat/b.png",
        "cat/sub/c.png",
        "dog/x.png",
        "dog/y.png",
    ] {
        png(&root.join(f));
    }
    png(&base.join("pool/p.png"));
    png(&base.join("pool/q.png"));
    let cat = root.join("cat");
    symlink("..", cat.join("loop")).unwrap(); // the root
    symlink("../dog", cat.join("dogs")).unwrap(); // another class
    symlink(".", cat.join("self")).unwrap(); // its own class: a loop
    symlink("../../..", cat.join("sub/up")).unwrap(); // above the root
    symlink("..", cat.join("sub/back")).unwrap(); // back into its class
    symlink("../dog/x.png", cat.join("stolen.png")).unwrap(); // another class's image
    symlink("a.png", cat.join("again.png")).unwrap(); // its own image: kept
    symlink(base.join("pool"), cat.join("pool")).unwrap(); // out of the dataset: followed
    symlink(base.join("pool"), cat.join("pool2")).unwrap(); // the same pool again
    symlink(root.join("dog"), base.join("pool/back")).unwrap(); // from the pool into dog
    symlink("../cat", root.join("dog/cats")).unwrap(); // dog → cat
    root
}

#[test]
fn links_into_the_dataset_are_skipped_with_notes_and_loops_end() {
    let base = tempfile::tempdir().unwrap();
    let root = tree(base.path());
    let f = open(&root, FolderOptions::default());
    assert_eq!(
        counts(&f),
        BTreeMap::from([("cat".to_string(), 6), ("dog".to_string(), 2)]),
        "{:#?}",
        f.notes()
    );
    assert_eq!(
        paths(&f, &root, "cat"),
        [
            "cat/a.png",
            "cat/again.png",
            "cat/b.png",
            "cat/pool/p.png",
            "cat/pool/q.png",
            "cat/sub/c.png"
        ]
    );
    assert_eq!(paths(&f, &root, "dog"), ["dog/x.png", "dog/y.png"]);
    let notes = f.notes().join("\n");
    for (link, why) in [
        ("cat/loop'", "the dataset root"),
        ("cat/dogs'", "the directory of class 'dog'"),
        ("cat/self'", "back into its own class directory"),
        ("cat/sub/up'", "a directory above the dataset root"),
        ("cat/sub/back'", "back into its own class directory"),
        ("cat/stolen.png'", "inside class 'dog'"),
        ("pool/back'", "the directory of class 'dog'"),
        ("dog/cats'", "the directory of class 'cat'"),
    ] {
        let line = f
            .notes()
            .iter()
            .find(|n| n.contains(link))
            .unwrap_or_else(|| panic!("no note on {link}:\n{notes}"));
        assert!(line.contains(why), "{line}");
    }
    // The pool is reached twice from cat: indexed once, the second path reported.
    assert!(
        f.notes()
            .iter()
            .any(|n| n.contains("pool") && n.contains("searched already")),
        "{notes}"
    );
    // The in-memory loader indexes the same way.
    let d = load_image_folder(&root, 1, 2, 2, &FolderOptions::default()).unwrap();
    assert_eq!(d.len(), 8);
}

#[test]
fn follow_links_false_follows_no_directory_link() {
    let base = tempfile::tempdir().unwrap();
    let root = tree(base.path());
    // Links to directories inside a class are skipped, with a note.
    let f = open(&root, NO_LINKS);
    assert_eq!(f.classes(), ["cat", "dog"]);
    assert_eq!(
        paths(&f, &root, "cat"),
        ["cat/a.png", "cat/again.png", "cat/b.png", "cat/sub/c.png"]
    );
    assert!(
        f.notes()
            .iter()
            .any(|n| n.contains("cat/pool'") && n.contains("follow_links = false")),
        "{:#?}",
        f.notes()
    );
    // A class directory that is a link (here to outside the dataset) is a class when links
    // are followed, and an error naming it when they are not: never a skipped class.
    png(&base.path().join("birds/z.png"));
    symlink(base.path().join("birds"), root.join("bird")).unwrap();
    let e = open_err(&root, NO_LINKS);
    assert!(
        e.contains("data/bird'")
            && e.contains("is a symbolic link")
            && e.contains("follow_links = false")
            && e.contains("replace the link by a directory"),
        "{e}"
    );
    let on = open(&root, FolderOptions::default());
    assert_eq!(on.classes(), ["bird", "cat", "dog"]);
    assert_eq!(counts(&on)["bird"], 1);
}

#[test]
fn a_linked_class_directory_is_never_skipped_so_no_label_shifts() {
    // train/{a, b -> ../ext, c}: skipping b would label c's images 1 instead of 2.
    let base = tempfile::tempdir().unwrap();
    let root = base.path().join("train");
    png(&root.join("a/1.png"));
    png(&base.path().join("ext/2.png"));
    png(&root.join("c/3.png"));
    symlink("../ext", root.join("b")).unwrap();
    let on = open(&root, FolderOptions::default());
    assert_eq!(on.classes(), ["a", "b", "c"]);
    let c = (0..on.len())
        .find(|&i| on.path(i).unwrap().ends_with("c/3.png"))
        .unwrap();
    assert_eq!(on.labels()[c], 2);
    let e = open_err(&root, NO_LINKS);
    assert!(
        e.contains("train/b'") && e.contains("shift the labels"),
        "{e}"
    );
    // The in-memory loader and a test split indexed against the training classes too.
    let e = load_image_folder(&root, 1, 2, 2, &NO_LINKS)
        .unwrap_err()
        .to_string();
    assert!(e.contains("train/b'"), "{e}");
    let classes: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
    let e = ImageFolder::open_with(&root, Some(&classes), &NO_LINKS)
        .unwrap_err()
        .to_string();
    assert!(e.contains("train/b'"), "{e}");
}

#[test]
fn class_directories_that_are_one_another_are_errors() {
    let base = tempfile::tempdir().unwrap();
    let root = base.path().join("data");
    png(&root.join("cat/a.png"));
    png(&root.join("dog/b.png"));
    // A class that is a link to another class: its images would have two labels.
    symlink("dog", root.join("hound")).unwrap();
    let e = ImageFolder::open(&root).unwrap_err().to_string();
    assert!(e.contains("hound") && e.contains("labelled twice"), "{e}");
    std::fs::remove_file(root.join("hound")).unwrap();
    // A class that is the root itself.
    symlink(".", root.join("all")).unwrap();
    let e = ImageFolder::open(&root).unwrap_err().to_string();
    assert!(e.contains("all") && e.contains("the dataset root"), "{e}");
    std::fs::remove_file(root.join("all")).unwrap();
    // Two classes that are links to the same directory outside.
    png(&base.path().join("pool/p.png"));
    symlink(base.path().join("pool"), root.join("p1")).unwrap();
    symlink(base.path().join("pool"), root.join("p2")).unwrap();
    let e = ImageFolder::open(&root).unwrap_err().to_string();
    assert!(e.contains("the same directory"), "{e}");
}

#[test]
fn directories_deeper_than_the_limit_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let mut deep = dir.path().join("k");
    png(&deep.join("top.png"));
    for i in 0..33 {
        deep.push(format!("d{i}"));
    }
    png(&deep.join("bottom.png"));
    let f = open(dir.path(), FolderOptions::default());
    assert_eq!(f.len(), 1);
    assert!(
        f.notes().iter().any(|n| n.contains("more than 32 levels")),
        "{:#?}",
        f.notes()
    );
}

#[test]
fn a_plain_tree_has_no_notes() {
    let dir = tempfile::tempdir().unwrap();
    png(&dir.path().join("a/1.png"));
    png(&dir.path().join("b/deeper/2.png"));
    let f = open(dir.path(), FolderOptions::default());
    assert_eq!(f.len(), 2);
    assert!(f.notes().is_empty(), "{:#?}", f.notes());
}
